"""A multi-phase schedule exported as one export per phase, in order.

`<out>/phase0/`, `<out>/phase1/`, ... are ordinary exports (manifest.json, card, trainer files) of
each phase's mixture at its share of the token budget; `<out>/schedule.json`, written last and
atomically, names the phases in training order with their boundaries (as shares of training
and in tokens) and each phase manifest's sha256. A killed export resumes: a phase whose export
is complete for the same mixture and budget is kept. `verify_schedule` checks every phase and
the digests.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mixforge.config import MixforgeConfig
from mixforge.urls import is_url
from mixforge.errors import MixforgeError
from mixforge.workspace import atomic_write_json, read_json
from mixforge.write_errors import writing_to

SCHEDULE_FILE = "schedule.json"
_PHASE = re.compile(r"phase\d+")
_LEFTOVER = re.compile(r"\.phase\d+\.(lock|(partial|old|deleting)-\d+)")  # what a killed phase export leaves (export_folder.py)


def phase_budgets(tokens: int, schedule: list[dict]) -> list[int]:
    """Tokens per phase from the phases' start/end shares; the last phase takes the rounding."""
    cuts = [round(tokens * phase["end_fraction"]) for phase in schedule]
    return [end - start for start, end in zip([0] + cuts[:-1], cuts[:-1] + [tokens])]


def export_mixture(cfg: MixforgeConfig, weights: dict[str, float], provenance: dict, out: Path, fmt: str | None = None,
                   tokens: int | None = None, **options) -> tuple[str, dict]:
    """A mixture as `mixers.mixture_file.read_mixture` reads it, exported: a schedule (its
    provenance names one) as one export per phase, else one export. `fmt` and `tokens` default to
    the config's export settings; `options` are run_export's. Returns ("schedule", the schedule
    record) or ("mixture", the manifest). `mixforge export` and the scheduled flow both call this,
    so a phased proposal exports the same way from either."""
    from mixforge.pipelines.export.write import run_export

    fmt, tokens = fmt or cfg.export.format, tokens or cfg.export.tokens
    if provenance.get("schedule"):  # one export per phase, in training order
        return "schedule", run_schedule_export(cfg, provenance["schedule"], out, fmt, tokens, provenance=provenance, **options)
    return "mixture", run_export(cfg, weights, out, fmt, tokens=tokens, provenance=provenance, **options)


def exported(out: Path) -> bool:
    """Whether `out` holds a finished export, of one mixture (manifest.json) or of a schedule."""
    return (Path(out) / "manifest.json").exists() or (Path(out) / SCHEDULE_FILE).exists()


def run_schedule_export(cfg: MixforgeConfig, schedule: list[dict], out: Path, fmt: str, tokens: int | None,
                        provenance: dict | None = None, **options) -> dict:
    """One export per phase under `out`, then schedule.json; returns the schedule record."""
    from mixforge.pipelines.export.write import run_export

    if is_url(str(out)):
        raise MixforgeError(f"--out {out}: a schedule export (one folder per phase) is written to a local or shared "
                            "folder; export each phase's mixture to a URL on its own, or copy the folder")
    if not tokens:
        raise MixforgeError("a schedule export needs a token budget (--tokens or export.tokens): each phase gets its "
                            "share of it, and without one every phase would draw the whole corpus")
    out = Path(out)
    if (out / SCHEDULE_FILE).exists() and not options.get("overwrite"):
        raise MixforgeError(f"{out} exists: pass --overwrite to replace it")
    budgets = phase_budgets(tokens, schedule)
    redo = [p for p, (phase, budget) in enumerate(zip(schedule, budgets)) if not _done(out / f"phase{p}", phase, budget)]
    _check_replaceable(out, redo, options.get("force_replace", False))
    phases = []
    for p, (phase, budget) in enumerate(zip(schedule, budgets)):
        folder = out / f"phase{p}"
        if p in redo:
            run_export(cfg, phase["weights"], folder, fmt, tokens=budget, provenance=provenance,
                       **(options | {"overwrite": folder.exists()}))
        manifest = read_json(folder / "manifest.json")
        phases.append({"phase": p, "folder": folder.name, "start_fraction": phase["start_fraction"],
                       "end_fraction": phase["end_fraction"], "tokens": manifest["tokens"], "mixture_id": manifest["mixture_id"],
                       "manifest_sha256": hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()})
    starts = [sum(ph["tokens"] for ph in phases[:i]) for i in range(len(phases))]
    for phase, start in zip(phases, starts):
        phase["start_token"], phase["end_token"] = start, start + phase["tokens"]
    record = {"phases": phases, "tokens": sum(ph["tokens"] for ph in phases), "format": fmt,
              "order": "train on the phase folders in this order, each to its end_token"}
    with writing_to(out / SCHEDULE_FILE):
        atomic_write_json(out / SCHEDULE_FILE, record)
    return record


def _check_replaceable(out: Path, redo: list[int], force_replace: bool) -> None:
    """Write into `out` only when it is empty, a schedule export of mixforge's (its schedule.json
    names phase folders) or one a kill interrupted before its schedule.json (phase folders only);
    and check every phase folder to be replaced (`redo`) before any is (export_folder.check_replaceable)."""
    from mixforge.pipelines.export.folder import check_replaceable

    if not out.exists():
        return
    if not out.is_dir():
        raise MixforgeError(f"{out} is a file, not a schedule export: choose another --out")
    if (out / SCHEDULE_FILE).exists():
        record = read_json(out / SCHEDULE_FILE)
        phases = record.get("phases") if isinstance(record, dict) else None
        if not (isinstance(phases, list) and phases and all(
                isinstance(p, dict) and _PHASE.fullmatch(str(p.get("folder"))) and isinstance(p.get("manifest_sha256"), str)
                for p in phases)):
            raise MixforgeError(f"{out} is not a schedule export of mixforge, which --overwrite replaces only: its "
                                f"{SCHEDULE_FILE} names no phase folders; choose another --out or remove it yourself")
    else:
        others = sorted(p.name for p in out.iterdir() if not (_PHASE.fullmatch(p.name) or _LEFTOVER.fullmatch(p.name)))
        if others:
            raise MixforgeError(f"{out} is not a schedule export of mixforge (no {SCHEDULE_FILE}; it holds "
                                f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}): choose another --out")
    for p in redo:
        if (out / f"phase{p}").exists():
            check_replaceable(out / f"phase{p}", force_replace)


def _done(folder: Path, phase: dict, budget: int) -> bool:
    """The phase's export is complete for the same mixture and budget (a killed export's rerun keeps it)."""
    manifest = read_json(folder / "manifest.json")
    weights = manifest.get("weights") if isinstance(manifest, dict) else None
    if not (isinstance(weights, dict) and all(isinstance(w, (int, float)) for w in weights.values())):
        return False  # no manifest, or another tool's
    return manifest.get("token_budget") == budget and _same_weights(weights, phase["weights"])


def _same_weights(done: dict[str, float], wanted: dict[str, float]) -> bool:
    total = sum(wanted.values())
    return all(abs(done.get(c, 0.0) - w / total) < 1e-6 for c, w in wanted.items() if w > 0)


def verify_schedule(folder: Path) -> list[str]:
    """Problems with a schedule export: each phase as an export, and its manifest's digest."""
    from mixforge.pipelines.export.verify import verify_export

    record = _schedule_record(Path(folder))
    if isinstance(record, str):
        return [record]
    problems, start, fraction = [], 0, 0
    for i, phase in enumerate(record["phases"]):
        sub = Path(folder) / phase["folder"]
        if not (sub / "manifest.json").is_file():
            problems.append(f"{phase['folder']}: no manifest.json")
            continue
        if hashlib.sha256((sub / "manifest.json").read_bytes()).hexdigest() != phase["manifest_sha256"]:
            problems.append(f"{phase['folder']}/manifest.json: sha256 differs from {SCHEDULE_FILE}")
        found = verify_export(sub)
        problems += [f"{phase['folder']}: {p}" for p in found]
        manifest = None if found else read_json(sub / "manifest.json")  # valid: verify_export checked it
        tokens = manifest and manifest["tokens"]
        # the boundaries a trainer reads: each phase from where the last ended, to its own tokens
        want = {"start_fraction": fraction, "start_token": start} | ({} if tokens is None else {"tokens": tokens, "end_token": start + tokens})
        problems += [f"{SCHEDULE_FILE}: phases/{i}/{key} is {str(phase.get(key))[:40]}; expected {value}"
                     for key, value in want.items() if phase.get(key) != value or isinstance(phase.get(key), bool)]
        if manifest and record.get("format") != manifest["format"]:
            problems.append(f"{SCHEDULE_FILE}: format is {str(record.get('format'))[:40]}; {phase['folder']} is {manifest['format']}")
        start, fraction = start + (tokens or 0), phase.get("end_fraction")
    if fraction != 1 or not problems and record.get("tokens") != start:
        problems.append(f"{SCHEDULE_FILE}: " + (f"the last phase ends at fraction {str(fraction)[:40]}, not 1" if fraction != 1
                                                 else f"tokens is {str(record.get('tokens'))[:40]}; the phases hold {start}"))
    return problems


def _schedule_record(folder: Path) -> dict | str:
    """schedule.json, its phases each naming a folder of this export and a sha256, or the problem
    (naming the file and field) that stops verify from going on; MixforgeError when it is not JSON.
    A phase folder is a plain name: `..`, a path or a link out of the folder is never read."""
    import json

    path = folder / SCHEDULE_FILE
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: bad JSON, a 5,000-digit number
        raise MixforgeError(f"{path} cannot be read as JSON: {str(e)[:200]}") from None
    phases = record.get("phases") if isinstance(record, dict) else None
    if not isinstance(phases, list) or not phases:
        return f"{SCHEDULE_FILE}: field phases is {str(phases)[:80]!r}, not a list of phases"
    root = folder.resolve()
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            return f"{SCHEDULE_FILE}: phases/{i} is {str(phase)[:80]!r}, not a mapping"
        name, digest = phase.get("folder"), phase.get("manifest_sha256")
        if (not isinstance(name, str) or name in ("", ".", "..") or "\x00" in name or Path(name).name != name
                or not (folder / name).resolve().is_relative_to(root)):
            return f"{SCHEDULE_FILE}: phases/{i}/folder {str(name)[:80]!r} is not a folder of this export; refused"
        if not isinstance(digest, str):
            return f"{SCHEDULE_FILE}: phases/{i}/manifest_sha256 is {str(digest)[:80]!r}, not a sha256"
    return record
