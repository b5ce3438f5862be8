"""Reading a mixture a user names: a YAML/JSON mapping component -> weight, or a search's
proposal.json (or its folder, or the workspace's search/ folder for the latest search), whose
search figures come along as provenance."""

from __future__ import annotations

import math
from pathlib import Path

from mixforge.config import read_utf8
from mixforge.config.yaml_text import parse_yaml
from mixforge.errors import MixforgeError
from mixforge.mixture import weight_value
from mixforge.workspace import read_json


def latest_search(search_dir: Path) -> Path:
    """The folder of the latest search under a workspace's search/ (named by its latest.json)."""
    pointer = read_json(search_dir / "latest.json")
    if not pointer:
        raise MixforgeError(f"no search in {search_dir.parent}: run `mixforge search CONFIG` first")
    if not isinstance(pointer, dict) or not isinstance(pointer.get("folder"), str) or Path(pointer["folder"]).name != pointer["folder"]:
        raise MixforgeError(f"{search_dir / 'latest.json'}: folder is missing or not a folder name of {search_dir}")
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


def read_mixture(path: str | Path, components: list[str] | None = None) -> tuple[dict[str, float], dict]:
    """(weights, provenance). Every weight must be a finite number >= 0, some > 0; with
    `components`, every name must be one of them (the sampler checks again where they are used)."""
    path = Path(path)
    if path.is_dir() and (path / "latest.json").exists():  # a workspace's search/ folder: its latest search
        path = latest_search(path)
    if path.is_dir():
        path = path / "proposal.json"
    if not path.exists():
        raise MixforgeError(f"mixture {path} not found")
    try:
        text = read_utf8(path)
        # JSON (proposal.json, `search fit --json`) as JSON: YAML 1.1 reads 1e-05 (no dot) as a string
        data = _parse_json(text, path) if path.suffix == ".json" else parse_yaml(text, path)[0]  # no aliases, no key twice
    except OSError as e:
        raise MixforgeError(f"{path}: cannot read the mixture: {e}") from None
    provenance = {}
    if isinstance(data, dict) and "weights" in data and "strategy" in data:  # a search proposal
        provenance = {"search": {k: data.get(k) for k in ("strategy", "objective", "predicted", "fit", "runs_used")},
                      "verified": current_verify(path.parent, data)}
        if data.get("schedule") is not None:
            provenance["schedule"] = _checked_schedule(path, data["schedule"], components)
        data = data["weights"]
    elif isinstance(data, dict) and "proposal" in data and "fit" in data:  # `mixforge search fit --json` output
        provenance = {"search": {"strategy": "search fit", "objective": data.get("target"), "predicted": data.get("predicted"),
                                 "fit": data.get("fit"), "runs_used": []}, "verified": None}
        if data.get("schedule") is not None:
            provenance["schedule"] = _checked_schedule(path, data["schedule"], components)
        data = data["proposal"]
    if data is None or data == {}:
        raise MixforgeError(f"{path}: no weights: expected a mapping of component name -> weight (or a search's proposal.json)")
    if not isinstance(data, dict):
        raise MixforgeError(f"{path}: expected a mapping of component name -> weight (or a search's proposal.json), "
                            f"got {data!r}")
    return _checked_weights(path, data, components), provenance


def _parse_json(text: str, path: Path):
    """A JSON mixture: a key given twice is an error (json keeps the last without a word)."""
    import json

    def pairs(items: list) -> dict:
        seen = {}
        for key, value in items:
            if key in seen:
                raise MixforgeError(f"{path}: key {key!r} is given twice")
            seen[key] = value
        return seen

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise MixforgeError(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise MixforgeError(f"{path}: not valid JSON: nested too deep") from None


def read_schedule(path: str | Path, components: list[str] | None = None) -> tuple[list[dict[str, float]], dict]:
    """(one mixture per phase, provenance): a proposal's or `search fit`'s schedule phase by
    phase (in order; where each ends is in provenance["schedule"]), or the one mixture of any other mixture file."""
    weights, provenance = read_mixture(path, components)
    schedule = provenance.get("schedule")
    if not schedule:
        return [weights], provenance
    return [phase["weights"] for phase in schedule], provenance  # checked by read_mixture


def _checked_weights(path: Path, data: dict, components: list[str] | None) -> dict[str, float]:
    weights: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(key, bool) or key is None:  # yes/no/on/off/null: YAML reads them as booleans or null
            raise MixforgeError(f"{path}: key {key!r} is not a component name (YAML reads yes/no/on/off/true/false/null "
                                "as booleans or null): quote it")
        name = str(key)  # `0:` is an integer to YAML; the component's name is the string
        if name in weights:
            raise MixforgeError(f"{path}: component {name!r} is given twice")
        if not isinstance(value, (int, float)):  # a quoted "0.5" is a string to YAML: say so rather than convert
            raise MixforgeError(f"{path}: weight of component {name!r} is {value!r}, not a number")
        try:
            weights[name] = weight_value(name, value)
        except MixforgeError as e:
            raise MixforgeError(f"{path}: {e}") from None
    unknown = [n for n in weights if components is not None and n not in components]
    if unknown:
        raise MixforgeError(f"{path}: unknown component(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(components))}")
    if sum(weights.values()) <= 0:
        raise MixforgeError(f"{path}: the weights sum to 0: at least one component needs a positive weight")
    top = max(weights.values())
    if math.isinf(sum(weights.values())):  # 1e308 + 1e308 overflows: the proportions are what a mixture says
        weights = {name: w / top for name, w in weights.items()}
    return weights


def _checked_schedule(path: Path, schedule, components: list[str] | None) -> list[dict]:
    """A proposal's or `search fit`'s schedule: phases in training order, each a mapping of
    start_fraction, end_fraction and weights; the first starts at 0, each where the last ended,
    the last ends at 1 (export cuts its token budget at these fractions)."""
    if not isinstance(schedule, list) or not schedule:
        raise MixforgeError(f"{path}: schedule is {str(schedule)[:60]!r}; expected a list of phases "
                            "(start_fraction, end_fraction, weights)")
    phases, end = [], 0.0
    for p, phase in enumerate(schedule):
        where = f"{path}: schedule phase {p}"
        if not isinstance(phase, dict):
            raise MixforgeError(f"{where} is {str(phase)[:60]!r}; expected a mapping of start_fraction, end_fraction and weights")
        for key in ("start_fraction", "end_fraction", "weights"):
            if key not in phase:
                raise MixforgeError(f"{where}: {key} is missing")
        start, stop = phase["start_fraction"], phase["end_fraction"]
        for key, v in (("start_fraction", start), ("end_fraction", stop)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise MixforgeError(f"{where}: {key} is {str(v)[:60]!r}; expected a number from 0 to 1")
        if abs(start - end) > 1e-6:
            raise MixforgeError(f"{where} starts at {start:g}, where " + (f"phase {p - 1} ended ({end:g})" if p else "training starts (0)"))
        if stop <= start:
            raise MixforgeError(f"{where} ends at {stop:g}, not after its start ({start:g})")
        if not isinstance(phase["weights"], dict) or not phase["weights"]:
            raise MixforgeError(f"{where}: weights is {str(phase['weights'])[:60]!r}; expected a mapping of component name -> weight")
        phases.append({**phase, "weights": _checked_weights(Path(f"{path} (schedule phase {p})"), phase["weights"], components)})
        end = stop
    if abs(end - 1) > 1e-6:
        raise MixforgeError(f"{path}: the schedule's last phase ends at {end:g}, not at the end of training (1)")
    phases[0]["start_fraction"], phases[-1]["end_fraction"] = 0.0, 1.0
    for a, b in zip(phases, phases[1:]):  # equal within rounding: made equal, as the export's budgets read them
        b["start_fraction"] = a["end_fraction"]
    return phases
