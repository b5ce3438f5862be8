"""Reading a mixture a user names: a YAML/JSON mapping component -> weight, or a search's
proposal.json (or its folder, or the workspace's search/ folder for the latest search), whose
search figures come along as provenance."""

from __future__ import annotations

from pathlib import Path

from mixforge.errors import MixforgeError
from mixforge.workspace import read_json


def latest_search(search_dir: Path) -> Path:
    """The folder of the latest search under a workspace's search/ (named by its latest.json)."""
    pointer = read_json(search_dir / "latest.json")
    if not pointer:
        raise MixforgeError(f"no search in {search_dir.parent}: run `mixforge search CONFIG` first")
    return search_dir / pointer["folder"]


def proposal_digest(proposal: dict) -> str:
    """What a verify.json is bound to: the proposal's whole content."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(proposal, sort_keys=True, default=str).encode()).hexdigest()


def current_verify(folder: Path, proposal: dict) -> dict | None:
    """The folder's verify.json if it measured this very proposal; None when there is none or it is
    for another (an earlier search into the same folder): such figures are never shown as measured."""
    verified = read_json(folder / "verify.json")
    return verified if verified and verified.get("proposal_sha256") == proposal_digest(proposal) else None


def read_mixture(path: str | Path) -> tuple[dict[str, float], dict]:
    """(weights, provenance). Weights are checked against the components where they are used."""
    import yaml

    path = Path(path)
    if path.is_dir() and (path / "latest.json").exists():  # a workspace's search/ folder: its latest search
        path = latest_search(path)
    if path.is_dir():
        path = path / "proposal.json"
    if not path.exists():
        raise MixforgeError(f"mixture {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise MixforgeError(f"{path}: cannot read the mixture: {e}") from None
    provenance = {}
    if isinstance(data, dict) and "weights" in data and "strategy" in data:  # a search proposal
        provenance = {"search": {k: data.get(k) for k in ("strategy", "objective", "predicted", "fit", "runs_used")},
                      "verified": current_verify(path.parent, data)}
        data = data["weights"]
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise MixforgeError(f"{path}: expected a mapping of component name -> weight (or a search's proposal.json), "
                            f"got {data!r}")
    return data, provenance
