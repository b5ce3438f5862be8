"""Export a mixture as a sharded dataset a trainer reads directly, with manifest.json (JSON
Schema `mixforge/schemas/manifest-v1.json`), trainer config fragments and a dataset card.

Sampling: each component contributes weight x budget tokens of whole documents. Its documents are
taken in a seeded shuffled order, pass after pass; a component smaller than its share repeats, up
to `max_epochs`, and its epochs are recorded. Materialised mode mixes every selected document in
one seeded shuffle and cuts shards of about `shard_tokens`; reference mode writes each
component's selection in its own shards, every document once (no copy of the mix: the trainer's
sampler applies the weights and repeats a component to the epochs the manifest records).
Everything is written to a temporary folder beside `out`, under a lock, and put in place at the end
(export_folder.py), so an interrupted export never looks complete and a killed --overwrite never
loses the old export; `verify_export` checks every path, re-hashes every file and re-counts every
shard.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

import mixforge
from mixforge import __version__
from mixforge.config import MixforgeConfig, section_hash
from mixforge.digests import file_digest
from mixforge.errors import InputError, MixforgeError, first_few
from mixforge.pipelines.export_card import write_card
from mixforge.pipelines.export_folder import check_replaceable, export_lock, partial_dir, put_in_place, recover
from mixforge.pipelines.export_plan import build_stats, first_occurrences, load_table, plan, shard_cuts, source_stats
from mixforge.pipelines.export_texts import ShardTexts
from mixforge.pipelines.export_snippets import trainer_snippets
from mixforge.progress import progress_bar
from mixforge.stage_files import require_intact
from mixforge.pipelines.export_formats import (FORMATS, TEXT_FORMATS, TOKEN_FORMATS, count_shard, write_mds_index,
                                               write_shard)
from mixforge.pipelines.tokenize import token_dtype
from mixforge.workspace import Workspace, atomic_write_json, atomic_write_text

SCHEMA = Path(mixforge.__file__).resolve().parent / "schemas" / "manifest-v1.json"  # shipped in the package


def run_export(cfg: MixforgeConfig, weights: dict[str, float], out: Path, fmt: str, tokens: int | None = None,
               mode: str = "materialised", shard_tokens: int = 50_000_000, overwrite: bool = False,
               max_epochs: float = 15, provenance: dict | None = None, force_replace: bool = False) -> dict:
    """Write the export; returns its manifest. One export per folder at a time (a lock file); it
    is written beside `out` and put in place whole (see export_folder for every kill point)."""
    if fmt not in FORMATS:
        raise MixforgeError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if mode not in ("materialised", "reference"):
        raise MixforgeError(f"unknown mode {mode!r}: materialised or reference")
    out = Path(out)
    with export_lock(out):
        recover(out)  # before the exists check: a killed --overwrite put back its old export
        if out.exists() and not overwrite:
            raise MixforgeError(f"{out} exists: pass --overwrite to replace it")
        if out.exists():
            check_replaceable(out, force_replace)  # only mixforge's own export, and none of the user's files in it
        tmp = partial_dir(out)
        tmp.mkdir()
        try:
            manifest = _write_export(cfg, weights, tmp, fmt, tokens, mode, shard_tokens, max_epochs, provenance)
            _check_before_publishing(tmp)
            put_in_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def _write_export(cfg: MixforgeConfig, weights: dict[str, float], tmp: Path, fmt: str, tokens: int | None, mode: str,
                  shard_tokens: int, max_epochs: float, provenance: dict | None) -> dict:
    """Every file of the export, written into `tmp` one shard at a time; returns the manifest.
    Scratch files (re-tokenized documents, spilled texts) live in `tmp/_work` until the shards are done."""
    ws = Workspace(cfg.workspace_dir)
    _check_inputs(cfg, ws)
    work = tmp / "_work"
    table = load_table(ws, work / "tokens")
    chosen, stats = plan(table, weights, tokens, cfg.seed, max_epochs)
    tokenizer = table.tokenizer
    dtype = token_dtype(tokenizer["vocab_size"], fmt)
    lengths = table.lengths
    rng = np.random.default_rng([cfg.seed, 7])
    if mode == "materialised":
        groups = [(None, rng.permutation(np.concatenate([chosen[c] for c in sorted(chosen)])))]
    else:
        groups = [(c, first_occurrences(chosen[c])) for c in sorted(chosen) if len(chosen[c])]
    order = np.concatenate([o for _, o in groups]) if groups else np.empty(0, np.int64)
    cuts, parts, offset = [], [], 0
    for comp, rows in groups:
        for a, b in shard_cuts(lengths[rows], shard_tokens):
            cuts.append((offset + a, offset + b))
            parts.append(comp)
        offset += len(rows)
    texts = ShardTexts(ws, table, order, cuts, work / "spill") if fmt not in TOKEN_FORMATS else None
    shards = []
    with progress_bar() as bar:
        task = bar.add_task(f"export {fmt}", total=len(order), rate="")
        t0, done = time.perf_counter(), 0
        for j, ((a, b), comp) in enumerate(zip(cuts, parts)):
            rel = f"{comp}/shard-{j:05d}" if comp else f"shard-{j:05d}"
            batch = table.documents(order[a:b], texts.texts(j) if texts else None)
            files = write_shard(fmt, tmp / rel, batch, tokenizer["eos_id"], dtype, tokenizer["name"])
            size = int(lengths[order[a:b]].sum())
            shards.append({"path": rel, "component": comp, "documents": b - a, "tokens": size,
                           "files": [_file_entry(f, tmp) for f in files]})
            done += size
            bar.update(task, advance=b - a, rate=f"{done / (time.perf_counter() - t0):,.0f} tokens/s")
    licences = {(s.label or Path(s.path).name.split(".")[0]): s.license for s in cfg.sources}
    sources = source_stats(table, chosen, licences)
    builds = build_stats(ws, table, chosen)
    del table, texts  # the memory maps of scratch files, before the folder goes
    shutil.rmtree(work, ignore_errors=True)
    index_files = _write_indexes(tmp, fmt, shards, dtype)
    weights_used = {c: s["weight"] for c, s in stats["components"].items()}
    manifest = {
        "schema_version": 1, "mixture_id": "m" + section_hash(sorted(weights_used.items()))[:12],
        "format": fmt, "mode": mode, "weights": weights_used, "token_budget": stats["budget"],
        "tokens": sum(s["tokens"] for s in shards), "mixture_tokens": sum(c["tokens"] for c in stats["components"].values()),
        "token_dtype": dtype.name if fmt in (*TOKEN_FORMATS, "mds") else None,
        "components": stats["components"], "sources": sources, "builds": builds, "shards": shards, "index_files": index_files, "tokenizer": tokenizer, "seed": cfg.seed,
        "config_hash": section_hash(cfg.model_dump(mode="json")), "mixforge_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "provenance": {"stages": {s: (ws.stage_record(s) or {}).get("fingerprint") for s in
                                  ("ingest", "filter", "dedup", "prune", "components", "tokens")}, **(provenance or {})},
    }
    manifest["trainer"] = trainer_fragments(manifest)
    validate_manifest(manifest)
    atomic_write_json(tmp / "manifest.json", manifest)
    _write_trainer_files(tmp, manifest)
    write_card(tmp, manifest, ws, cfg)
    return manifest


def _check_inputs(cfg: MixforgeConfig, ws: Workspace) -> None:
    """Export only tokens built for this config, from files as their stages wrote them: the token
    shards, the document index and the pruned texts are checked against their stages' digests."""
    from mixforge.pipelines.build import stage_states

    state = stage_states(cfg)["tokens"]
    if state != "done":
        raise MixforgeError(f"the tokens stage in {ws.root} is {state} for this config (as `mixforge status` says): "
                            "run `mixforge build` with this config first, then export")
    require_intact(ws, ["prune", "components", "tokens"], "digest")


def _check_before_publishing(tmp: Path) -> None:
    """The export's own verify, before it replaces anything: what is put in place checks out."""
    problems = verify_export(tmp)
    if problems:
        raise MixforgeError(f"the export failed its own verify, so nothing was put in place: {first_few(problems)}")


def _inside(folder: Path, rel: str) -> Path | None:
    """`folder/rel` resolved (symlinks followed), or None when that lands outside the folder."""
    try:
        path = (folder / rel).resolve()
    except (OSError, ValueError):  # a NUL byte, a symlink loop
        return None
    return path if path.is_relative_to(folder) and path != folder else None


def _check_file(folder: Path, entry: dict, problems: list[str]) -> Path | None:
    """The file of a manifest entry if it is inside the folder and exists (a changed one is reported)."""
    path = _inside(folder, entry["path"])
    if path is None:
        problems.append(f"{entry['path']}: points outside the export folder; refused")
    elif not path.is_file():
        problems.append(f"{entry['path']}: missing")
    else:
        if path.stat().st_size != entry["bytes"]:
            problems.append(f"{entry['path']}: {path.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated or changed)")
        elif file_digest(path, "sha256") != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest's (the file changed)")
        return path
    return None


def _write_indexes(root: Path, fmt: str, shards: list[dict], dtype: np.dtype) -> list[dict]:
    """Per-folder index files a format needs besides its shards (MDS: index.json), as manifest entries."""
    if fmt != "mds":
        return []
    folders: dict[str, list[dict]] = {}
    for s in shards:
        f = s["files"][0]
        folders.setdefault(str(Path(s["path"]).parent), []).append(
            {"basename": Path(f["path"]).name, "samples": s["documents"], "bytes": f["bytes"], "sha256": f["sha256"]})
    return [_file_entry(write_mds_index(root / folder, entries, dtype), root) for folder, entries in folders.items()]


def _file_entry(path: Path, root: Path) -> dict:
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": file_digest(path, "sha256")}


def trainer_fragments(m: dict) -> dict:
    """How each trainer consumes this export: token shares for samplers of token blocks (Megatron,
    nanotron, OLMo-core, litgpt, torchtitan), per-document probabilities for samplers of documents
    (`interleave_datasets`, MosaicML Streams). Reference mode has one part per component,
    materialised mode one part, "mixed"."""
    per_part: dict[str, list[str]] = {}
    part_tokens: dict[str, int] = {}
    for s in m["shards"]:
        per_part.setdefault(s["component"] or "mixed", []).append(s["path"])
        part_tokens[s["component"] or "mixed"] = part_tokens.get(s["component"] or "mixed", 0) + s["tokens"]
    comps = m["components"]
    shares = {p: comps[p]["share"] if p in comps else 1.0 for p in per_part}
    doc_probs = {p: comps[p]["document_probability"] if p in comps else 1.0 for p in per_part}
    out: dict = {}
    if m["format"] == "megatron":  # each prefix weighs its part's share times its part of that part's tokens
        pairs = [f"{shares[part] * sh['tokens'] / part_tokens[part]:.6f} {sh['path']}"
                 for sh, part in ((sh, sh["component"] or "mixed") for sh in m["shards"])]
        out["megatron_data_path"] = "--data-path " + " ".join(pairs)
    if m["format"] == "datatrove":
        out["nanotron_dataset_weights"] = shares
    if m["format"] == "numpy":
        out["olmo_core_source_mixture"] = {"sources": [{"name": p, "target_ratio": shares[p], "paths": [f + ".npy" for f in paths]}
                                                       for p, paths in per_part.items()], "dtype": m["token_dtype"]}
    if m["format"] in TEXT_FORMATS:
        ext = ".parquet" if m["format"] == "parquet" else ".jsonl.zst"
        out["hf_interleave_probabilities"] = doc_probs
        out["hf_data_files"] = {p: [f + ext for f in paths] for p, paths in per_part.items()}
    if m["format"] == "mds":
        out["mosaicml_streams"] = [{"local": str(Path(paths[0]).parent), "proportion": doc_probs[p]}
                                   for p, paths in per_part.items()]
    out["snippets"] = trainer_snippets(m, per_part, shares, doc_probs)
    return out


def trainer_files(m: dict) -> dict[str, str]:
    """The files of `trainer/` (relative path -> text), rendered from the manifest's fragments."""
    t = m["trainer"]
    files = {}
    if "megatron_data_path" in t:
        files["megatron_data_path.txt"] = t["megatron_data_path"] + "\n"
    for key in ("nanotron_dataset_weights", "olmo_core_source_mixture", "hf_interleave_probabilities", "mosaicml_streams"):
        if key in t:
            files[f"{key}.json"] = json.dumps(t[key], indent=2, sort_keys=True, default=str) + "\n"
    return files | t["snippets"]


def _write_trainer_files(root: Path, m: dict) -> None:
    for name, text in trainer_files(m).items():
        atomic_write_text(root / "trainer" / name, text)


def validate_manifest(manifest: dict) -> None:
    import jsonschema

    try:
        jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InputError(f"manifest field {where}: {e.message}") from None


def read_manifest(folder: Path) -> dict:
    """The parsed manifest.json of an export folder; MixforgeError when there is none to read."""
    path = Path(folder) / "manifest.json"
    if not Path(folder).is_dir():
        raise MixforgeError(f"{folder}: no such export folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MixforgeError(f"{path} not found: {folder} is not an export") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MixforgeError(f"{path} cannot be read: {e}") from None
    except json.JSONDecodeError as e:
        raise MixforgeError(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # a number of over 4,300 digits; nesting deeper than Python recurses
        raise MixforgeError(f"{path}: not valid JSON for mixforge ({str(e)[:120]})") from None


def verify_export(folder: Path) -> list[str]:
    """Problems found (empty when the export matches its manifest): the schema; every path the
    manifest names (shards, their files, index files) inside the folder; every file's size and
    sha256; each shard's documents and tokens re-counted from its files (what `count_shard`
    can count in that format); the total; the trainer fragments and `trainer/` files against the
    shards; no file the manifest does not name. MixforgeError when the folder has no readable manifest."""
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    try:
        validate_manifest(manifest)
    except InputError as e:
        return [f"manifest.json: {e}"]
    try:
        dtype = np.dtype(manifest.get("token_dtype") or "uint16")
    except TypeError:
        return [f"manifest.json: token_dtype {manifest['token_dtype']!r} is not a numpy dtype"]
    problems: list[str] = []
    for entry in manifest.get("index_files", []):
        _check_file(folder, entry, problems)
    for shard in manifest["shards"]:
        problems += _check_shard(folder, manifest["format"], dtype, shard)
    total = sum(s["tokens"] for s in manifest["shards"])
    if total != manifest["tokens"]:
        problems.append(f"shards hold {total} tokens, the manifest's total is {manifest['tokens']}")
    return problems + _check_trainer(folder, manifest) + _unnamed_files(folder, manifest)


def _unnamed_files(folder: Path, manifest: dict) -> list[str]:
    """Files the manifest does not name: a loader that globs the folder (`*.parquet`, `*.bin`)
    would train on them too (a shard left from another export, say)."""
    named = {e["path"] for s in manifest["shards"] for e in s["files"]} | {e["path"] for e in manifest.get("index_files", [])}
    named |= {"manifest.json", "README.md", "mixture.png"}
    try:  # _check_trainer reports fragments that are not the shards' own; here they only name files
        named |= {f"trainer/{name}" for name in trainer_files(manifest)}
    except (KeyError, TypeError, AttributeError):
        pass
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return [f"{rel}: a file the manifest does not name (a loader that globs the folder would read it); remove it or "
            "export again" for rel in found if rel not in named]


def _check_shard(folder: Path, fmt: str, dtype: np.dtype, shard: dict) -> list[str]:
    problems: list[str] = []
    if _inside(folder, shard["path"]) is None:
        problems.append(f"{shard['path']}: shard path points outside the export folder; refused")
    for f in shard["files"]:
        if not f["path"].startswith(shard["path"] + "."):
            problems.append(f"{f['path']}: not a file of shard {shard['path']}")
    paths = [_check_file(folder, f, problems) for f in shard["files"]]
    if problems:
        return problems
    try:
        docs, tokens = count_shard(fmt, paths, dtype)
    except Exception as e:  # a damaged file fails a reader in many ways: report it, never a traceback
        return [f"{shard['path']}: cannot be read as {fmt}: {e}"]
    if docs >= 0 and docs != shard["documents"]:
        problems.append(f"{shard['path']}: {docs} documents, the manifest says {shard['documents']}")
    if tokens >= 0 and tokens != shard["tokens"]:
        problems.append(f"{shard['path']}: {tokens} tokens, the manifest says {shard['tokens']}")
    return problems


def _check_trainer(folder: Path, manifest: dict) -> list[str]:
    """The trainer fragments name shard paths too: they must be the ones derived from the shards,
    and `trainer/` must hold them as written."""
    if "trainer" not in manifest:
        return []
    try:
        expected = trainer_fragments({k: v for k, v in manifest.items() if k != "trainer"})
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return [f"manifest.json: its trainer fragments cannot be derived from its shards and components ({e!r})"]
    if manifest["trainer"] != expected:
        return ["manifest.json: trainer fragments differ from the ones its shards give (paths or weights changed)"]
    problems = []
    for name, text in trainer_files(manifest).items():
        path = folder / "trainer" / name
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            problems.append(f"trainer/{name}: {'missing' if not path.is_file() else 'differs from the manifest'}")
    return problems
