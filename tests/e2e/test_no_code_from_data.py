"""Nothing executes from a workspace's files: a workspace sits on shared storage and is copied
between machines, so a planted pickle (a quality classifier, a proxy checkpoint) must never run.
Each planted file's `__reduce__` would create a marker file; the real code paths (an incremental
build with quality.reference, a resumed proxy run with checkpoints) run over them, and the marker
never appears."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, SLICE, workspace_with_tokens
from mixforge.errors import MixforgeError


class Planted:
    """Unpickling this calls open(marker, "w"): the marker's existence proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _records(label: str) -> list[dict]:
    return [json.loads(line) for line in (SLICE / f"{label}.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_a_planted_classifier_pickle_never_runs_on_an_incremental_build(tmp_path):
    from mixforge.config import load_config
    from mixforge.pipelines.build import build

    (tmp_path / "data").mkdir()
    for label in ("bible", "code"):
        _write(tmp_path / "data" / f"{label}-1.jsonl", _records(label)[:10])
    _write(tmp_path / "reference.jsonl", _records("python_docs")[:12])
    config = tmp_path / "mixforge.yaml"
    config.write_text(yaml.safe_dump({
        "workspace": "ws", "workers": 1, "sources": [{"path": "data"}], "cluster": {"n_components": 2},
        "quality": {"reference": ["reference.jsonl"], "negatives": 10},
    }))
    cfg = load_config(config)
    build(cfg, until="quality")
    extra = tmp_path / "ws" / "quality" / "extra"
    marker = tmp_path / "ran"
    (extra / "classifier.pkl").write_bytes(pickle.dumps(Planted(marker)))  # where mixforge kept it before
    stage_json = tmp_path / "ws" / "quality" / "_stage.json"
    record = json.loads(stage_json.read_text())
    if "files" in record:  # whoever can write the workspace can rewrite the stage's file inventory too
        from mixforge.stage_files import inventory
        from mixforge.workspace import Workspace

        record["files"] = inventory(Workspace(tmp_path / "ws"), "quality")
        stage_json.write_text(json.dumps(record))
    for label in ("bible", "code"):
        _write(tmp_path / "data" / f"{label}-2.jsonl", _records(label)[10:14])
    build(cfg, until="quality")
    assert not marker.exists(), "the planted pickle ran"
    record = json.loads((tmp_path / "ws" / "quality" / "_stage.json").read_text())
    assert len(record["layers"]) == 2 and "earlier build" in record["layers"][1]["counts"]["classifier"]
    assert not (extra / "classifier.pkl").exists()  # an older mixforge's pickle is dropped, never read


@pytest.mark.timeout(120)
def test_a_classifier_file_that_is_not_plain_arrays_is_a_clear_error(tmp_path):
    from mixforge.pipelines.quality.stage import train_classifier
    from mixforge.pipelines.quality.model import from_fitted, load_classifier, save_classifier

    rng = np.random.default_rng(0)
    pos, neg, x = rng.normal(0.5, 1, size=(20, 4)), rng.normal(-0.5, 1, size=(20, 4)), rng.normal(size=(30, 4))
    for kind in ("lightgbm", "logistic"):  # rebuilt from the saved arrays, the same probabilities as the fitted model
        fitted, _, _ = train_classifier(pos, neg, kind, seed=0)
        save_classifier(tmp_path, from_fitted(fitted, kind))
        assert np.array_equal(load_classifier(tmp_path).probability(x), fitted.predict_proba(x)[:, 1])
    marker = tmp_path / "ran"
    arrays = next(tmp_path.glob("*.npz"))
    arrays.write_bytes(pickle.dumps(Planted(marker)))  # a pickle where the arrays belong
    with pytest.raises(MixforgeError, match=re.escape(str(arrays))):
        load_classifier(tmp_path)
    buffer = io.BytesIO()  # an object array inside a real .npz is a pickle too
    np.savez(buffer, coef=np.array([Planted(marker)], dtype=object), intercept=np.zeros(1))
    arrays.write_bytes(buffer.getvalue())
    with pytest.raises(MixforgeError, match=re.escape(str(arrays))):
        load_classifier(tmp_path)
    assert not marker.exists()


@pytest.mark.timeout(300)
def test_a_planted_checkpoint_never_runs_on_a_resumed_proxy_run(tmp_path):
    from mixforge.config import load_config
    from mixforge.proxy_training.proxy import run_proxy

    cfg = load_config(workspace_with_tokens(tmp_path, tokens=4_000))
    folder = tmp_path / "ws" / "runs" / "checkpoints" / "planted"
    folder.mkdir(parents=True)
    marker = tmp_path / "ran"
    planted = folder / "step_0000001.pt"
    torch.save({"step": Planted(marker), "model": {}}, planted)
    with pytest.raises(MixforgeError, match=re.escape(str(planted))):
        run_proxy(cfg, {"bible": 0.5, "code": 0.3, "legal": 0.2}, run_id="planted", checkpoints=2)
    assert not marker.exists(), "the planted checkpoint ran"
    # a checkpoint mixforge wrote itself holds tensors and plain data only: it loads with weights_only
    row = run_proxy(cfg, {"bible": 0.5, "code": 0.3, "legal": 0.2}, run_id="fresh", checkpoints=2)
    saved = sorted((tmp_path / "ws" / "runs" / "checkpoints" / "fresh").glob("step_*.pt"))
    assert len(saved) == 2 and row["steps"] > 0
    state = torch.load(saved[-1], weights_only=True)
    assert state["step"] == row["steps"]


# pickle and what unpickles: a module of the package may use none of them
UNSAFE = [
    re.compile(r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|joblib|shelve)\b", re.M),
    re.compile(r"\bpickle\.loads?\("),
    re.compile(r"allow_pickle\s*=\s*True"),
    re.compile(r"weights_only\s*=\s*False"),
]


def test_no_module_of_the_package_unpickles():
    sources = [p for folder in ("mixforge", "pipelines", "proxy_training", "mixers", "flows")
               for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 30
    found = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}" for p in sources for rule in UNSAFE
             for m in rule.finditer(p.read_text())]
    # torch.load unpickles unless told weights_only=True: every call must say so
    for p in sources:
        for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", p.read_text()):
            if "weights_only=True" not in m.group(0):
                found.append(f"{p.relative_to(ROOT)}: {m.group(0)}")
    assert not found, found
