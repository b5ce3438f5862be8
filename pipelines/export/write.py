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

import shutil
import time
from pathlib import Path

import numpy as np

from mixforge import __version__
from mixforge.config import MixforgeConfig, section_hash
from mixforge.digests import file_digest
from mixforge.errors import MixforgeError, first_few
from mixforge.pipelines.export.card import write_card
from mixforge.pipelines.export.folder import check_replaceable, export_lock, partial_dir, put_in_place, recover
from mixforge.pipelines.export.plan import build_stats, first_occurrences, load_table, plan, shard_cuts, source_stats
from mixforge.pipelines.export.texts import ShardTexts
from mixforge.progress import progress_bar
from mixforge.stage_files import require_intact
from mixforge.pipelines.export.formats import (FORMATS, TOKEN_FORMATS, write_mds_index,
                                               write_shard)
from mixforge.pipelines.tokens import token_dtype
from mixforge.pipelines.export.manifest import trainer_files, trainer_fragments, validate_manifest
from mixforge.pipelines.export.verify import verify_export
from mixforge.urls import is_url
from mixforge.workspace import Workspace, atomic_write_json, atomic_write_text


def run_export(cfg: MixforgeConfig, weights: dict[str, float], out: Path | str, fmt: str, tokens: int | None = None,
               mode: str = "materialised", shard_tokens: int = 50_000_000, overwrite: bool = False,
               max_epochs: float = 15, provenance: dict | None = None, force_replace: bool = False) -> dict:
    """Write the export; returns its manifest. One export per folder at a time (a lock file); it
    is written beside `out` and put in place whole (see export.folder for every kill point). `out`
    may be an fsspec URL (s3://bucket/mixes/web-v3): see export.remote for how it is uploaded."""
    if fmt not in FORMATS:
        raise MixforgeError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if mode not in ("materialised", "reference"):
        raise MixforgeError(f"unknown mode {mode!r}: materialised or reference")

    def write(folder: Path, prefix: str = "") -> dict:
        manifest = _write_export(cfg, weights, folder, fmt, tokens, mode, shard_tokens, max_epochs, provenance, prefix)
        _check_before_publishing(folder)
        return manifest

    if is_url(str(out)):
        from mixforge.pipelines.export.remote import export_to_url

        return export_to_url(str(out), Workspace(cfg.workspace_dir), write, overwrite, force_replace)
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
            manifest = write(tmp)
            put_in_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def _write_export(cfg: MixforgeConfig, weights: dict[str, float], tmp: Path, fmt: str, tokens: int | None, mode: str,
                  shard_tokens: int, max_epochs: float, provenance: dict | None, prefix: str = "") -> dict:
    """Every file of the export, written into `tmp` one shard at a time; returns the manifest.
    Scratch files (re-tokenized documents, spilled texts) live in `tmp/_work` until the shards are done.
    `prefix`: a folder (`g3/`) the shards go in, as an export to a URL puts them (export.remote)."""
    ws = Workspace(cfg.workspace_dir)
    _check_inputs(cfg, ws)
    work = tmp / "_work"
    table = load_table(ws, work / "tokens")
    chosen, stats = plan(table, weights, tokens, cfg.seed, max_epochs)
    tokenizer = table.tokenizer
    dtype = token_dtype(tokenizer["vocab_size"], fmt)
    order, cuts, parts = _shard_layout(table.lengths, chosen, mode, shard_tokens, cfg.seed)
    texts = ShardTexts(ws, table, order, cuts, work / "spill") if fmt not in TOKEN_FORMATS else None
    shards = _write_shard_files(tmp, fmt, table, texts, order, cuts, parts, dtype, prefix)
    licences = {(s.label or Path(s.path).name.split(".")[0]): s.license for s in cfg.sources}
    sources = source_stats(table, chosen, licences)
    builds = build_stats(ws, table, chosen)
    del table, texts  # the memory maps of scratch files, before the folder goes
    shutil.rmtree(work, ignore_errors=True)
    index_files = _write_indexes(tmp, fmt, shards, dtype)
    manifest = _manifest(cfg, ws, fmt, mode, stats, shards, index_files, sources, builds, tokenizer, dtype, provenance)
    manifest["trainer"] = trainer_fragments(manifest)
    validate_manifest(manifest)
    atomic_write_json(tmp / "manifest.json", manifest)
    _write_trainer_files(tmp, manifest)
    write_card(tmp, manifest, ws, cfg)
    return manifest


def _shard_layout(lengths: np.ndarray, chosen: dict[str, np.ndarray], mode: str, shard_tokens: int,
                  seed: int) -> tuple[np.ndarray, list[tuple[int, int]], list[str | None]]:
    """The selected documents in write order, the shards cut from it ([a, b) into the order) and
    each shard's component. Materialised: one seeded shuffle of every selection, shards of mixed
    components; reference: each component's documents once, in shards of their own."""
    rng = np.random.default_rng([seed, 7])
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
    return order, cuts, parts


def _write_shard_files(tmp: Path, fmt: str, table, texts: ShardTexts | None, order: np.ndarray, cuts: list[tuple[int, int]],
                       parts: list[str | None], dtype: np.dtype, prefix: str = "") -> list[dict]:
    """Each shard's files under `tmp`, one shard at a time with a progress bar; the shards' manifest entries."""
    tokenizer, lengths = table.tokenizer, table.lengths
    shards = []
    with progress_bar() as bar:
        task = bar.add_task(f"export {fmt}", total=len(order), rate="")
        t0, done = time.perf_counter(), 0
        for j, ((a, b), comp) in enumerate(zip(cuts, parts)):
            rel = prefix + (f"{comp}/shard-{j:05d}" if comp else f"shard-{j:05d}")
            batch = table.documents(order[a:b], texts.texts(j) if texts else None)
            files = write_shard(fmt, tmp / rel, batch, tokenizer["eos_id"], dtype, tokenizer["name"])
            size = int(lengths[order[a:b]].sum())
            shards.append({"path": rel, "component": comp, "documents": b - a, "tokens": size,
                           "files": [_file_entry(f, tmp) for f in files]})
            done += size
            bar.update(task, advance=b - a, rate=f"{done / (time.perf_counter() - t0):,.0f} tokens/s")
    return shards


def _manifest(cfg: MixforgeConfig, ws: Workspace, fmt: str, mode: str, stats: dict, shards: list[dict],
              index_files: list[dict], sources: dict, builds: dict, tokenizer: dict, dtype: np.dtype,
              provenance: dict | None) -> dict:
    """manifest.json's content, before its trainer fragments (key order is the file's)."""
    weights_used = {c: s["weight"] for c, s in stats["components"].items()}
    return {
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


def _write_trainer_files(root: Path, m: dict) -> None:
    for name, text in trainer_files(m).items():
        atomic_write_text(root / "trainer" / name, text)


