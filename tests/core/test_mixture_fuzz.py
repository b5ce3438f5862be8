"""Mixture files as `proxy train --mixture`, `export MIXTURE` and the scheduled flow read them
(mixers/mixture_file.py, mixforge/mixture.py): weights that overflow a sum (1.0e+308), and,
generated with hypothesis, files of every awkward kind: huge, tiny, negative, NaN/inf, string,
boolean and nested weights, keys given twice, unknown components, empty files, files that are no
mapping, and `search fit --json` outputs and proposals whose schedules do not line up. The
property: a mixture every consumer can use (finite shares summing to 1 in every phase), or one
MixforgeError paragraph naming the file; never another exception."""

from __future__ import annotations

import json
import math
import os
import subprocess
import warnings

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import mixforge_cmd, over_slice_built
from mixforge.errors import MixforgeError
from mixforge.mixers.mixture_file import read_mixture, read_schedule
from mixforge.mixture import check_weights

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "300"))
KNOWN = ["bible", "code", "legal"]


def _usable(phases: list[dict[str, float]]) -> None:
    """What the proxy sampler and the export plan do with a mixture: check_weights on the known components."""
    for weights in phases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shares = check_weights(weights, KNOWN)
        assert all(math.isfinite(v) and v >= 0 for v in shares.values()) and abs(sum(shares.values()) - 1) < 1e-9, shares


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["bible: 1.0e+308\ncode: 1.0e+308\n", "bible: 1.0e+308\ncode: 1.0e+308\nlegal: 1.0e+308\n",
                                  "bible: 1.7e+308\ncode: 1\n", "bible: 5.0e-324\ncode: 5.0e-324\n"])
def test_weights_whose_sum_overflows_are_read_as_their_proportions(tmp_path, text):
    (path := tmp_path / "mix.yaml").write_text(text)
    weights, _ = read_mixture(path, KNOWN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shares = check_weights(weights, KNOWN)  # what proxy train and export do next: was a ValueError traceback (all 0)
    given = yaml.safe_load(text)
    top = max(given.values())
    assert shares == pytest.approx({c: given.get(c, 0) / top / sum(v / top for v in given.values()) for c in KNOWN})


@pytest.mark.timeout(600)
def test_export_of_weights_of_1e308_through_the_cli(slice_built, tmp_path):
    """The reported case end to end: was a ValueError traceback (every share 0 after dividing by inf)."""
    config, comps = over_slice_built(slice_built, tmp_path)
    (mix := tmp_path / "mix.yaml").write_text(f"{comps[0]}: 1.0e+308\n{comps[1]}: 1.0e+308\n")
    run = subprocess.run(mixforge_cmd() + ["export", str(mix), "-c", str(config), "--out", str(tmp_path / "out"), "--format", "jsonl"],
                         capture_output=True, text=True, timeout=500)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
    weights = json.loads((tmp_path / "out" / "manifest.json").read_text())["weights"]
    assert weights[comps[0]] == pytest.approx(0.5) and weights[comps[1]] == pytest.approx(0.5)


@pytest.mark.timeout(60)
def test_a_search_fit_json_with_a_tiny_weight_reads(tmp_path):
    """json.dumps writes 1e-05; YAML 1.1 would read it as the string '1e-05' (no dot)."""
    (path := tmp_path / "fit.json").write_text(json.dumps({"proposal": {"bible": 0.99999, "code": 1e-05}, "fit": {}}))
    assert read_mixture(path, KNOWN)[0] == {"bible": 0.99999, "code": 1e-05}
    path.write_text('{"proposal": {"bible": 1, "bible": 0}, "fit": {}}')
    with pytest.raises(MixforgeError, match="fit.json: key 'bible' is given twice"):
        read_mixture(path, KNOWN)


@pytest.mark.timeout(60)
def test_a_schedule_whose_phases_do_not_line_up_is_an_error_naming_the_phase(tmp_path):
    phases = [{"start_fraction": 0.0, "end_fraction": 0.5, "weights": {"bible": 1}},
              {"start_fraction": 0.6, "end_fraction": 1.0, "weights": {"code": 1}}]
    (path := tmp_path / "fit.json").write_text(json.dumps({"proposal": {"bible": 0.5, "code": 0.5}, "fit": {}, "schedule": phases}))
    with pytest.raises(MixforgeError, match=r"fit.json: schedule phase 1 starts at 0.6, where phase 0 ended \(0.5\)"):
        read_schedule(path, KNOWN)
    del phases[1]["end_fraction"]
    path.write_text(json.dumps({"proposal": {"bible": 1}, "fit": {}, "schedule": phases}))
    with pytest.raises(MixforgeError, match=r"fit.json: schedule phase 1: end_fraction is missing"):
        read_schedule(path, KNOWN)


# --- generated files ----------------------------------------------------------------------------

WEIGHTS = st.one_of(
    st.floats(0, 1), st.floats(0, 1), st.integers(0, 10), st.just(1.0e308), st.just(1.7976931348623157e308), st.just(5e-324),
    st.just(-1.0), st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")), st.booleans(), st.none(),
    st.text(max_size=4), st.lists(st.floats(0, 1), max_size=2), st.dictionaries(st.sampled_from(KNOWN), st.floats(0, 1), max_size=2),
    st.integers(10**18, 10**30),
)
NAMES = st.one_of(st.sampled_from(KNOWN), st.sampled_from(KNOWN), st.sampled_from(["other", "ü", "", "0", "null", "yes", "1.5"]))
MAPPINGS = st.one_of(st.dictionaries(NAMES, WEIGHTS, max_size=4),  # anything; and mostly usable ones, tiny weights too
                     st.dictionaries(st.sampled_from(KNOWN), st.one_of(st.floats(1e-9, 1), st.integers(1, 10), st.just(1e-5)), min_size=1))
FRACTION = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(-1, 2), st.none(), st.text(max_size=2))


@st.composite
def schedules(draw):
    """Phases that mostly line up (equal shares of training), sometimes not at all."""
    n = draw(st.integers(1, 4))
    phases = [{"start_fraction": p / n, "end_fraction": (p + 1) / n, "weights": draw(MAPPINGS)} for p in range(n)]
    for phase in phases:
        if draw(st.integers(0, 3)) == 0:
            key = draw(st.sampled_from(["start_fraction", "end_fraction", "weights"]))
            phase[key] = draw(st.one_of(FRACTION, st.none(), st.lists(st.integers(), max_size=1))) if draw(st.booleans()) else phase.pop(key, None)
    return draw(st.one_of(st.just(phases), st.just(phases), st.sampled_from([[], {}, "phase", 3, [None]])))


@st.composite
def mixture_files(draw):
    """(file name, bytes): plain mappings as YAML or JSON, `search fit --json` outputs and proposals
    (with schedules), empty files, lists and scalars, keys given twice, BOMs."""
    kind = draw(st.sampled_from(["yaml", "json", "fit", "proposal", "odd"]))
    mapping = draw(MAPPINGS)
    if kind == "yaml":
        text = "".join(f"{json.dumps(k)}: {json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else ('.nan' if v != v else ('.inf' if v > 0 else '-.inf'))}\n"
                       for k, v in mapping.items())
        if mapping and draw(st.booleans()):
            text += text.splitlines()[0] + "\n"  # a key given twice
        return "mix.yaml", text.encode()
    if kind == "odd":
        return draw(st.sampled_from([("mix.yaml", b""), ("mix.yaml", b"- 1\n- 2\n"), ("mix.yaml", b"0.5\n"), ("mix.json", b"null"),
                                     ("mix.yaml", b"\xef\xbb\xbfbible: 1\n"), ("mix.yaml", b"\xff\xfe\x00b"),
                                     ("mix.json", b'{"bible": 1, "bible": 2}'), ("mix.yaml", b"bible: [1, 2\n"),
                                     ("mix.yaml", b"? [a, b]\n: 1\n"), ("mix.yaml", b"bible: 1e400\n")]))
    if kind == "json":
        return "mix.json", json.dumps(mapping).encode()
    extra = {"schedule": draw(schedules())} if draw(st.booleans()) else {}
    if kind == "fit":
        data = {"proposal": mapping, "fit": draw(st.one_of(st.just({"spearman": 0.9}), st.none(), st.text(max_size=2))),
                "target": "loss", **extra}
    else:
        data = {"weights": mapping, "strategy": "regmix", "objective": "loss", **extra}
    return f"{kind}.json", json.dumps(data).encode()  # json.dumps writes NaN and Infinity, which YAML reads as text


@pytest.mark.timeout(600)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(mixture_files(), st.booleans())
def test_generated_mixture_files_are_usable_or_one_paragraph_naming_the_file(tmp_path_factory, file, with_components):
    name, content = file
    (path := tmp_path_factory.mktemp("m") / name).write_bytes(content)
    try:
        phases, provenance = read_schedule(path, KNOWN if with_components else None)
    except MixforgeError as e:
        message = str(e)
        assert str(path) in message and "\n\n" not in message.strip() and "Traceback" not in message, message
        return
    if not with_components and any(set(w) - set(KNOWN) for w in phases):
        return  # unknown names are checked where the components are known (the sampler, the export)
    _usable(phases)
    schedule = provenance.get("schedule")
    if schedule:  # what export's phase budgets read
        assert schedule[0]["start_fraction"] == 0 and schedule[-1]["end_fraction"] == 1
        assert all(a["end_fraction"] == b["start_fraction"] for a, b in zip(schedule, schedule[1:]))
