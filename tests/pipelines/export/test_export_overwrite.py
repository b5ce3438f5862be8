"""`export --overwrite` replaces only mixforge's own exports (issue 22, item 5): a folder whose
manifest.json is not mixforge's (by its JSON Schema) is refused and kept, and files an old export's
manifest does not list (a user's notes, say) are refused by name unless --force-replace. The same
for a phased export: schedule.json and its phase folders. Exports are made with the CLI from the
session's `slice_built` workspace (read only: an export writes nothing there)."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import mixforge_cmd, over_slice_built
from mixforge.errors import MixforgeError
from mixforge.pipelines.export.manifest import SCHEMA
from mixforge.pipelines.export.verify import verify_export

EXAMPLES = int(os.environ.get("MIXFORGE_FUZZ_EXAMPLES", "60"))


pytestmark = pytest.mark.xdist_group("export-overwrite")  # its tests share one module fixture: built once, on one worker


@pytest.fixture(scope="module")
def source(slice_built, tmp_path_factory):
    """(export command less --out, a complete parquet export to copy) over the slice's workspace."""
    folder = tmp_path_factory.mktemp("overwrite")
    config, comps = over_slice_built(slice_built, folder)
    mix = folder / "mix.yaml"
    mix.write_text("".join(f"{c}: {w}\n" for c, w in zip(comps, [0.6, 0.4, 0.3, 0.2])))
    cmd = mixforge_cmd() + ["export", str(mix), "-c", str(config)]
    ref = folder / "ref"
    run = subprocess.run(cmd + ["--out", str(ref), "--format", "parquet"], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    return cmd, ref


def _export(source, out, *extra):
    return subprocess.run(source[0] + ["--out", str(out), *extra], capture_output=True, text=True, timeout=240)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(run, *named):
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(run.stderr.strip().splitlines()) <= 3, run.stderr  # one paragraph
    for text in named:
        assert text in run.stderr, run.stderr


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.glob(f".{folder.name}.*"))


@pytest.mark.timeout(600)
def test_a_folder_with_another_tools_manifest_is_refused_and_kept(source, tmp_path):
    other = tmp_path / "dataset"
    (other / "sub").mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps({"name": "my-corpus", "version": "2.1", "files": ["a.csv"]}))
    (other / "a.csv").write_text("id,text\n1,hello\n")
    (other / "sub" / "b.txt").write_text("keep me")
    before = _snapshot(other)
    for extra in ([], ["--force-replace"]):  # --force-replace never makes another tool's folder an export
        _refused(_export(source, other, "--overwrite", *extra), str(other), "manifest.json", "schema")
        assert _snapshot(other) == before and _leftovers(other) == []
    (other / "manifest.json").write_text("{not json")
    _refused(_export(source, other, "--overwrite"), str(other), "manifest.json")
    assert (other / "sub" / "b.txt").read_text() == "keep me"
    # a mixforge manifest with a field another tool (or a hand edit) changed is not one either
    shutil.copytree(source[1], tmp_path / "edited")
    manifest = json.loads((tmp_path / "edited" / "manifest.json").read_text()) | {"schema_version": 2}
    (tmp_path / "edited" / "manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(tmp_path / "edited")
    _refused(_export(source, tmp_path / "edited", "--overwrite"), str(tmp_path / "edited"), "schema_version")
    assert _snapshot(tmp_path / "edited") == before


@pytest.mark.timeout(600)
def test_files_an_old_export_does_not_list_are_refused_unless_force_replace(source, tmp_path):
    out = tmp_path / "mix"
    shutil.copytree(source[1], out)
    user = ["notes.txt", "trainer/my_launch.sh", *(f"extra/part-{i}.parquet" for i in range(5))]
    for rel in user:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(f"the user's {rel}")
    before = _snapshot(out)
    run = _export(source, out, "--format", "jsonl", "--overwrite")
    _refused(run, str(out), "7 files", "notes.txt", "extra/part-0.parquet", "and 2 more", "--force-replace")
    assert _snapshot(out) == before and _leftovers(out) == []
    run = _export(source, out, "--format", "jsonl", "--overwrite", "--force-replace")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["format"] == "jsonl"
    assert not any((out / rel).exists() for rel in user) and verify_export(out) == [] and _leftovers(out) == []


@pytest.mark.timeout(600)
def test_a_mixforge_export_is_still_replaced(source, tmp_path):
    out = tmp_path / "mix"
    shutil.copytree(source[1], out)
    run = _export(source, out, "--format", "jsonl", "--overwrite")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["format"] == "jsonl"
    assert verify_export(out) == [] and _leftovers(out) == []
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose
    assert _export(source, tmp_path / "empty", "--format", "jsonl", "--overwrite").returncode == 0


@pytest.mark.timeout(600)
def test_a_phased_export_replaces_only_mixforges_schedule_and_phases(source, tmp_path):
    cmd, ref = source
    weights = json.loads((ref / "manifest.json").read_text())["weights"]
    comps = sorted(weights)
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"proposal": weights, "fit": {}, "schedule": [
        {"start_fraction": 0.0, "end_fraction": 0.5, "weights": weights},
        {"start_fraction": 0.5, "end_fraction": 1.0, "weights": dict(zip(comps, reversed([weights[c] for c in comps])))}]}))
    sched = [*cmd[:-3], str(fit), *cmd[-2:], "--format", "jsonl", "--tokens", "12000"]

    def export(out, *extra):
        return subprocess.run(sched + ["--out", str(out), *extra], capture_output=True, text=True, timeout=240)

    # another tool's schedule.json: refused, the folder kept
    other = tmp_path / "other"
    (other / "phase0").mkdir(parents=True)
    (other / "schedule.json").write_text(json.dumps({"stages": ["warmup", "main"]}))
    (other / "phase0" / "manifest.json").write_text(json.dumps({"name": "theirs"}))
    before = _snapshot(other)
    _refused(export(other, "--overwrite"), str(other), "schedule.json")
    assert _snapshot(other) == before
    # a folder of the user's that is no schedule export at all is not written into
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "todo.txt").write_text("keep me")
    _refused(export(tmp_path / "home"), str(tmp_path / "home"), "todo.txt")
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["todo.txt"]
    # mixforge's phased export with a user file in a phase: refused before any phase is replaced
    out = tmp_path / "phased"
    assert export(out).returncode == 0
    (out / "phase1" / "notes.txt").write_text("mine")
    before = _snapshot(out)
    fit.write_text(fit.read_text().replace('"end_fraction": 0.5', '"end_fraction": 0.25').replace(
        '"start_fraction": 0.5', '"start_fraction": 0.25'))
    _refused(export(out, "--overwrite"), "phase1", "notes.txt", "--force-replace")
    assert _snapshot(out) == before
    run = export(out, "--overwrite", "--force-replace")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (out / "phase1" / "notes.txt").exists()
    check = subprocess.run(mixforge_cmd() + ["verify", str(out)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def _json_values():
    scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                        max_leaves=20)


@pytest.mark.timeout(300)
@settings(derandomize=True, max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_folder_is_replaceable_exactly_when_its_manifest_is_mixforges(source, data):
    """Any manifest.json: another tool's (any JSON), or mixforge's with a field dropped or given
    any JSON value. Replaceable exactly when it validates against the schema; otherwise a
    MixforgeError naming the folder, the folder untouched."""
    from mixforge.pipelines.export.folder import check_replaceable

    real = json.loads((source[1] / "manifest.json").read_text())
    if data.draw(st.booleans(), label="another tool's"):
        manifest = data.draw(_json_values(), label="manifest")
    else:
        manifest = dict(real)
        key = data.draw(st.sampled_from(sorted(real)), label="field")
        if data.draw(st.booleans(), label="drop it"):
            del manifest[key]
        else:
            manifest[key] = data.draw(_json_values(), label="value")
    try:
        jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
        valid = True
    except jsonschema.ValidationError:
        valid = False
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "out"
        shutil.copytree(source[1], folder)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        before = _snapshot(folder)
        try:
            check_replaceable(folder, force_replace=True)
            refused = None
        except MixforgeError as e:
            refused = str(e)
        assert _snapshot(folder) == before
        assert (refused is None) == valid, refused
        assert valid or (str(folder) in refused and "manifest.json" in refused)
