"""manifest.json and schedule.json as `mixforge verify FOLDER` reads them, damaged in every way
hypothesis finds: wrong types, missing and unknown fields, huge numbers (past float, past Python's
4,300-digit int parsing), NaN, paths with `..`, absolute paths, unicode, a BOM, UTF-16, bytes that
are not UTF-8, truncated and empty files. Two real exports made once per module (a megatron export
and a two-phase schedule export, from the session's `slice_built` workspace) are copied and damaged.
The property: verify reports mismatches (exit 1) or refuses the folder (exit 2) with a message
naming the file; never a traceback; never a file opened outside the folder (an audit hook watches
every open beside it). A subset runs the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import mixforge_cmd, over_slice_built
from mixforge.errors import MixforgeError

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "120"))
CLI_EXAMPLES = max(4, EXAMPLES // 20)


pytestmark = pytest.mark.xdist_group("manifest-fuzz")  # its tests share one module fixture: built once, on one worker


@pytest.fixture(scope="module")
def exports(slice_built, tmp_path_factory):
    """{"single": a megatron export, "schedule": a two-phase jsonl export}, made with the CLI."""
    folder = tmp_path_factory.mktemp("verify-fuzz")
    config, comps = over_slice_built(slice_built, folder)
    (mix := folder / "mix.yaml").write_text("".join(f"{c}: {w}\n" for c, w in zip(comps, [0.4, 0.3, 0.2, 0.1])))
    (fit := folder / "fit.json").write_text(json.dumps({"proposal": {comps[0]: 0.5, comps[1]: 0.5}, "fit": {}, "schedule": [
        {"start_fraction": 0.0, "end_fraction": 0.5, "weights": {comps[0]: 1.0}},
        {"start_fraction": 0.5, "end_fraction": 1.0, "weights": {comps[1]: 1.0}}]}))
    out = {}
    for name, mixture, fmt in (("single", mix, "megatron"), ("schedule", fit, "jsonl")):
        out[name] = folder / name
        run = subprocess.run(mixforge_cmd() + ["export", str(mixture), "-c", str(config), "--out", str(out[name]), "--format", fmt,
                                               "--tokens", "8000", "--shard-tokens", "3000"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert _verify(out[name]) == (0, "")  # undamaged, both verify clean
    return out


OPENED: list[str] | None = None  # paths opened while verify runs (the audit hook records into it)


def _audit(event, args):
    if OPENED is not None and event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _verify(folder: Path) -> tuple[int, str]:
    """(exit code, text) as `mixforge verify` gives them, from the Python functions; the files it
    opened are checked to lie inside `folder` (or outside the test's folder altogether: libraries)."""
    global OPENED
    from mixforge.pipelines.export.verify import verify_export
    from mixforge.pipelines.export.schedule import SCHEDULE_FILE, verify_schedule

    OPENED = []
    try:
        problems = verify_schedule(folder) if (folder / SCHEDULE_FILE).is_file() else verify_export(folder)
        code, text = (1, "\n".join(problems)) if problems else (0, "")
    except MixforgeError as e:
        code, text = 2, str(e)
    finally:
        opened, OPENED = OPENED, None
    root, inside = folder.parent.resolve(), folder.resolve()
    for path in opened:
        p = Path(path) if Path(path).is_absolute() else Path.cwd() / path
        p = p.resolve()
        assert not p.is_relative_to(root) or p.is_relative_to(inside), f"verify opened {path}, outside {folder}"
    return code, text


def _paths(value, prefix=()):
    """Every (path to a value) in a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


HUGE = "1" + "0" * 5000  # past int("...")'s 4,300-digit limit: json.loads raises ValueError
BAD = st.one_of(st.none(), st.booleans(), st.sampled_from(["", "x", "../outside/secret.bin", "../../outside", "ü/名前.bin", "a:b",
                                                            "manifest.json", ".", "..", "phase0/../../outside"]),
                st.integers(-2, 2), st.just(10**30), st.just(1e308), st.just(float("nan")), st.just(float("inf")),
                st.just([]), st.just({}), st.just([[[]]]), st.just({"path": "../outside/secret.bin"}), st.just("HUGE"))


@st.composite
def damage(draw, document: dict):
    """(bytes of the damaged file): one to three edits of the JSON tree (a value replaced, a key
    dropped or added), or damage to the bytes themselves."""
    doc = json.loads(json.dumps(document))
    how = draw(st.sampled_from(["edit", "edit", "edit", "edit", "bytes"]))
    if how == "bytes":
        text = json.dumps(doc).encode()
        return draw(st.sampled_from([b"", b"null", b"[]", b"\xef\xbb\xbf" + text, json.dumps(doc).encode("utf-16"),
                                     text[: len(text) // 2], text.replace(b'"', b"\xff", 1), b"{" * 100_000]))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if op == "drop":
            parent.pop(path[-1]) if isinstance(parent, dict) else parent.pop(path[-1])
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "ü", ""]))] = draw(BAD)
        else:
            parent[path[-1]] = draw(BAD)
    return json.dumps(doc).replace('"HUGE"', HUGE).encode()


def _copy(exports, tmp_path_factory, which: str) -> tuple[Path, Path]:
    """A fresh copy of an export, with an `outside` folder beside it holding a copy of a real
    export (what `..` paths would reach)."""
    root = tmp_path_factory.mktemp("v")
    shutil.copytree(exports[which], root / "export")
    shutil.copytree(exports["single"], root / "outside")
    (root / "outside" / "secret.bin").write_bytes(b"secret")
    return root / "export", root


def _target(folder: Path, which: str, part: str) -> Path:
    if which == "single":
        return folder / "manifest.json"
    return folder / "schedule.json" if part == "schedule" else folder / "phase1" / "manifest.json"


@pytest.mark.timeout(900)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data(), st.sampled_from([("single", "manifest"), ("schedule", "schedule"), ("schedule", "manifest")]))
def test_damaged_manifests_and_schedules_are_reported_naming_the_file(exports, tmp_path_factory, data, case):
    which, part = case
    folder, _ = _copy(exports, tmp_path_factory, which)
    target = _target(folder, which, part)
    target.write_bytes(data.draw(damage(json.loads(target.read_text()))))
    code, text = _verify(folder)
    assert code in (0, 1, 2)
    if code == 2:
        assert target.name in text and "\n" not in text.strip(), text
    if code == 1 and part == "schedule":
        assert all("schedule.json" in line or line.startswith("phase") for line in text.splitlines()), text


@pytest.mark.timeout(900)
@settings(derandomize=True, max_examples=CLI_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data(), st.sampled_from([("single", "manifest"), ("schedule", "schedule")]))
def test_damaged_manifests_through_the_cli_exit_1_or_2_without_a_traceback(exports, tmp_path_factory, data, case):
    which, part = case
    folder, _ = _copy(exports, tmp_path_factory, which)
    target = _target(folder, which, part)
    target.write_bytes(data.draw(damage(json.loads(target.read_text()))))
    run = subprocess.run(mixforge_cmd() + ["verify", str(folder)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in run.stderr and run.returncode in (0, 1, 2), run.stderr[-3000:]
    if run.returncode == 2:
        assert run.stderr.startswith("error: ") and target.name in run.stderr, run.stderr


@pytest.mark.timeout(300)
def test_a_schedule_naming_a_folder_outside_the_export_is_refused_unread(exports, tmp_path_factory):
    folder, root = _copy(exports, tmp_path_factory, "schedule")
    record = json.loads((folder / "schedule.json").read_text())
    record["phases"][1]["folder"] = "../outside"  # a real export, whose manifest sha256 we even give
    import hashlib

    record["phases"][1]["manifest_sha256"] = hashlib.sha256((root / "outside" / "manifest.json").read_bytes()).hexdigest()
    (folder / "schedule.json").write_text(json.dumps(record))
    code, text = _verify(folder)  # the audit hook fails the test if verify opens ../outside
    assert code == 1 and "schedule.json" in text and "../outside" in text, text


@pytest.mark.timeout(300)
def test_a_manifest_with_a_5000_digit_number_is_refused_naming_it(exports, tmp_path_factory):
    folder, _ = _copy(exports, tmp_path_factory, "single")
    manifest = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(manifest.replace('"seed": ', f'"seed": {HUGE}, "was_seed": ', 1))
    code, text = _verify(folder)
    assert code == 2 and "manifest.json" in text, text
