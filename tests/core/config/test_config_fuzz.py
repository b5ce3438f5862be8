"""Config YAML fuzzed (issue 22, item 8): whatever a config holds (wrong scalar kinds, non-finite
and huge numbers, integer keys, keys twice, anchors, byte order marks and other encodings, deep
nesting), `load_config` returns a valid config or raises a MixforgeError of one paragraph that
names the file and the field or line; never another exception, never a huge message, and fast.
A few such files go through `mixforge status` too: an error line, exit 2, no traceback.

MIXFORGE_FUZZ_EXAMPLES scales the number of examples (CI runs the seeded default)."""

import math
import os
import re
import subprocess
import time

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import mixforge_cmd
from mixforge.config import MixforgeConfig, load_config
from mixforge.errors import MixforgeError

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

BASE = {"workspace": "ws", "seed": 0, "sources": [{"path": "data/a.jsonl", "kind": "prose"}]}
# where a value may land: top-level keys, section keys, a source's keys, and keys that exist nowhere
FIELDS = [
    ("workspace",), ("seed",), ("workers",), ("shard_mb",), ("executor",), ("sources",), ("filters",), ("proxy",),
    ("sources", 0), ("sources", 0, "path"), ("sources", 0, "kind"), ("sources", 0, "label"), ("sources", 0, "filters"),
    ("sources", 0, "filters", "length"), ("sources", 0, "filters", "length", "min_chars"),
    ("filters", "length", "max_chars"), ("filters", "language", "languages"), ("filters", "language", "min_score"),
    ("filters", "gopher_repetition", "top_n_grams"), ("filters", "warn_removed_share"), ("dedup", "num_buckets"),
    ("embed", "batch_size"), ("cluster", "n_clusters"), ("cluster", "merge_distance"), ("quality", "reference"),
    ("proxy", "lr"), ("proxy", "tokens"), ("proxy", "max_epochs"), ("proxy", "heldout_fraction"), ("proxy", "tokenizer"),
    ("search", "target"), ("search", "runs"), ("search", "min_share"), ("search", "kl_weight"), ("search", "temperature"),
    ("export", "tokens"), ("ray", "address"), ("nonsense",), ("proxy", "nonsense"),
]

scalars = st.one_of(
    st.booleans(), st.none(), st.dates(), st.datetimes(),
    st.integers(), st.integers(min_value=2**62, max_value=2**80), st.integers(max_value=-(2**62)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e-324, float("inf"), float("nan")]),
    st.text(max_size=30), st.text(alphabet="/.~\x00\\* ", max_size=12), st.sampled_from(["", "/", "..", "~nosuchuser/x", "a" * 5000]),
    st.binary(max_size=8),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.booleans()), inner, max_size=4)),
    max_leaves=12)


def _put(data: dict, where: tuple, value) -> dict:
    node = data
    for key in where[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {}) if not isinstance(node.get(key), (dict, list)) else node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return data
    if isinstance(node, dict):
        node[where[-1]] = value
    elif isinstance(node, list) and isinstance(where[-1], int) and where[-1] < len(node):
        node[where[-1]] = value
    return data


def _text_variants(text: str) -> st.SearchStrategy[tuple[bytes, bool]]:
    """(file content, whether it must be refused): the YAML as UTF-8, or re-encoded, or with a
    line twice (a `key: value` line twice must be refused), an anchor and alias, deep nesting."""
    lines = text.splitlines(keepends=True)

    def twice(i: int) -> tuple[bytes, bool]:
        return "".join(lines + lines[i:i + 1]).encode(), bool(re.match(r"\s*[^-\s#][^:]*:", lines[i]))

    return st.one_of(
        st.just((text.encode(), False)),
        st.sampled_from(["utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1"]).map(lambda enc: (text.encode(enc, "replace"), False)),
        st.integers(0, max(len(lines) - 1, 0)).map(twice),
        st.just((("base: &b {seed: 1}\n" + text + "other: *b\n").encode(), True)),
        st.integers(40, 2000).map(lambda n: ((text + "proxy: {cheap: " + "[" * n + "]" * n + "}\n").encode(), True)),
        st.binary(min_size=1, max_size=40).map(lambda junk: (text.encode() + junk, False)),
    )


KINDS = ["alias", "twice", "nested deeper", "out of range", "not UTF", "not valid YAML", "workspace", "invalid config",
         "not a usable path", "expected a mapping"]
configs = st.tuples(st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=3)).map(lambda t: t[0])


def _dump(changes) -> str:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for where, value in changes:
        data = _put(data, where, value)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@pytest.mark.timeout(900)
@FUZZ
@given(changes=configs, data=st.data())
def test_any_config_loads_or_is_one_clear_error(tmp_path, changes, data):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "hello"}\n')
    path = tmp_path / "cfg.yaml"
    content, refused = data.draw(_text_variants(_dump(changes)))
    path.write_bytes(content)
    start = time.monotonic()
    try:
        cfg = load_config(path)
    except MixforgeError as e:
        msg = str(e)
        assert str(path) in msg, msg
        assert "line " in msg or "field `" in msg or "byte offset" in msg or "expected a mapping" in msg, msg
        assert "\n\n" not in msg and len(msg) < 4000, msg[:4000]
        event(next((k for k in KINDS if k in msg), "other error"))
    else:
        assert isinstance(cfg, MixforgeConfig) and not refused, "a key twice, an alias or deep nesting was accepted"
        event("valid")
    assert time.monotonic() - start < 5


NASTY = {
    "alias_bomb": "sources: [{path: data/a.jsonl}]\nb0: &b0 [x, x, x, x, x, x, x, x, x]\n"
                  + "".join(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]\n" for i in range(1, 10)),
    "key_twice": "sources: [{path: data/a.jsonl}]\nseed: 1\nseed: 2\n",
    "date_workspace": "workspace: 2024-01-01\nsources: [{path: data/a.jsonl}]\n",
    "bad_date": "workspace: ws\nseed: 2024-13-45\nsources: [{path: data/a.jsonl}]\n",
    "huge_int": "sources: [{path: data/a.jsonl}]\nseed: " + "9" * 5000 + "\n",
    "nan_lr": "sources: [{path: data/a.jsonl}]\nproxy: {lr: .nan}\n",
    "deep": "sources: [{path: data/a.jsonl}]\nproxy: " + "[" * 5000 + "]" * 5000 + "\n",
    "integer_keys": "sources: [{path: data/a.jsonl}]\n1: 2\nproxy: {3: 4}\n",
    "root_workspace": "workspace: /\nsources: [{path: data/a.jsonl}]\n",
    "nul_path": 'sources: [{path: "data/a\\0.jsonl"}]\n',
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(NASTY) + ["utf16_with_a_bad_value"])
def test_status_on_a_bad_config_is_one_error_line(tmp_path, name):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "hello"}\n')
    path = tmp_path / "cfg.yaml"
    if name == "utf16_with_a_bad_value":
        path.write_bytes("sources: [{path: data/a.jsonl}]\nworkers: -1\n".encode("utf-16"))
    else:
        path.write_text(NASTY[name])
    run = subprocess.run(mixforge_cmd() + ["status", str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.startswith("error: ") and str(path) in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(run.stderr) < 4000


FLOAT_FIELDS = [("proxy", "lr"), ("proxy", "max_epochs"), ("search", "temperature"), ("search", "max_epochs"), ("search", "kl_weight"),
                ("cluster", "tolerance"), ("filters", "language", "min_score"), ("ray", "cpus_per_task"),
                ("filters", "gopher_quality", "max_symbol_word_ratio"), ("sources", 0, "filters", "length", "max_chars")]


@pytest.mark.timeout(300)
@FUZZ
@given(where=st.sampled_from(FLOAT_FIELDS), value=st.sampled_from([math.inf, -math.inf, math.nan]))
def test_a_non_finite_number_is_refused_naming_its_field(tmp_path, where, value):
    """.inf passed every `gt=0` bound (a proxy trained with lr .inf) and .nan passes none."""
    path = tmp_path / "cfg.yaml"
    path.write_text(_dump([(where, value)]))
    with pytest.raises(MixforgeError) as e:
        load_config(path)
    assert str(path) in str(e.value) and ".".join(map(str, where[-2:])) in str(e.value)
