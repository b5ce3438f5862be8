"""What an export writes, computed without holding texts: a table of every kept document (id,
component, source, where its tokens are), the mixture's choice of documents per component, and
the cut of the chosen order into shards. All of it is columns and index arrays (tens of bytes per
document), vectorised with polars and numpy.

Tokens come from the tokens stage's shards (`documents.parquet` says where each document's are).
A document that stage did not index, or whose text or component changed since, is tokenized
again into a scratch file the caller owns, so that every document reads the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mixforge.errors import MixforgeError
from mixforge.pipelines.outputs import documents_index, tokenizer_file, tokens_dir
from mixforge.workspace import Workspace


@dataclass
class DocumentTable:
    """Every kept document, in workspace order: `frame` has id, component, source (categorical),
    shard and row (where its text is in `workspace_frames`), file, start and length (its tokens
    are `files[file][start : start + length - 1]`; length counts the EOS)."""

    frame: pl.DataFrame
    files: list[np.ndarray]
    tokenizer: dict
    shards: int  # prune shards read

    @property
    def lengths(self) -> np.ndarray:
        return self.frame["length"].to_numpy()

    def tokens(self, n: int) -> np.ndarray:
        file, start, length = (self.frame[col][n] for col in ("file", "start", "length"))
        return self.files[file][start : start + length - 1]

    def documents(self, rows: np.ndarray, texts: list[str] | None = None) -> list[tuple]:
        """(id, component, text, tokens) of the given rows, in their order (texts "" unless given)."""
        picked = self.frame[rows].select("id", "component", "file", "start", "length")
        texts = texts if texts is not None else [""] * len(rows)
        return [(i, c, t, self.files[f][s : s + n - 1])
                for (i, c, f, s, n), t in zip(picked.iter_rows(), texts)]


def load_table(ws: Workspace, scratch: Path, reuse_tokens: bool = True) -> DocumentTable:
    """The document table of a built workspace; documents without reusable tokens are tokenized
    into `scratch/<shard>.bin` (int64, the caller deletes the folder)."""
    from mixforge.pipelines.tokens import eos_id, load_tokenizer, tokenizer_identity, workspace_frames
    from mixforge.pipelines.tokens import text_hash

    extra, tok_path = tokens_dir(ws), tokenizer_file(ws)
    if not tok_path.exists():
        raise MixforgeError(f"{tok_path} not found: run `mixforge build` first (it ends with the tokens stage)")
    tok = load_tokenizer(tok_path)
    identity = tokenizer_identity(tok_path) | {"eos_id": eos_id(tok), "name": "tokens/extra/tokenizer.json"}
    index_path = documents_index(ws)
    index = pl.read_parquet(index_path) if reuse_tokens and index_path.exists() else None
    parts = []
    for s, frame in enumerate(workspace_frames(ws)):
        parts.append(frame.select("id", "component", "source").with_columns(
            pl.Series("text_hash", [text_hash(t) for t in frame["text"].to_list()], dtype=pl.UInt64),
            pl.lit(s, pl.Int32).alias("shard"), pl.int_range(frame.height, dtype=pl.Int32).alias("row")))
    table = pl.concat(parts)
    if index is None:
        table = table.with_columns(pl.lit(None, pl.String).alias("split"), pl.lit(None, pl.Int64).alias("start"),
                                   pl.lit(None, pl.Int64).alias("length"))
    else:  # a document whose text or component changed since the tokens stage is not reused
        table = table.join(index, on=["id", "component", "text_hash"], how="left", maintain_order="left")
    keys = table.select("split", "component").unique(maintain_order=True).drop_nulls().with_row_index("file")
    files: list[np.ndarray] = [
        np.memmap(extra / split / f"{comp}.bin", dtype=json.loads((extra / split / f"{comp}.json").read_text())["dtype"], mode="r")
        for _, split, comp in keys.iter_rows()]
    table = table.join(keys.with_columns(pl.col("file").cast(pl.Int32)), on=["split", "component"], how="left",
                       maintain_order="left").with_columns(pl.col("file").fill_null(-1))
    stale = np.flatnonzero(table["file"].to_numpy() < 0)
    if len(stale):
        table = _tokenize_stale(ws, table, stale, tok, scratch, files)
    frame = table.select(pl.col("id"), pl.col("component").cast(pl.Categorical), pl.col("source").cast(pl.Categorical),
                         "shard", "row", "file", "start", "length")
    return DocumentTable(frame, files, identity, len(parts))


def _tokenize_stale(ws: Workspace, table: pl.DataFrame, stale: np.ndarray, tok, scratch: Path,
                    files: list[np.ndarray]) -> pl.DataFrame:
    """Tokenize the stale documents, one prune shard at a time, into scratch files."""
    from mixforge.pipelines.tokens import workspace_frames

    scratch.mkdir(parents=True, exist_ok=True)
    shard_of, row_of = table["shard"].to_numpy()[stale], table["row"].to_numpy()[stale]
    file_col = table["file"].to_numpy().copy()
    start, length = (table[c].fill_null(0).to_numpy().astype(np.int64) for c in ("start", "length"))
    for s, frame in enumerate(workspace_frames(ws)):
        in_shard = shard_of == s
        if not in_shard.any():
            continue
        mine = stale[in_shard]
        texts = frame["text"].gather(row_of[in_shard]).to_list()
        encoded = [np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch(texts, add_special_tokens=False)]
        sizes = np.array([len(e) for e in encoded], dtype=np.int64)
        path = scratch / f"{s}.bin"
        (np.concatenate(encoded) if encoded else np.empty(0, np.int64)).tofile(path)
        file_col[mine] = len(files)
        start[mine] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        length[mine] = sizes + 1
        files.append(np.memmap(path, dtype=np.int64, mode="r") if sizes.sum() else np.empty(0, np.int64))
    return table.with_columns(pl.Series("file", file_col), pl.Series("start", start), pl.Series("length", length))


def plan(table: DocumentTable, weights: dict[str, float], budget: int | None, seed: int,
         max_epochs: float) -> tuple[dict[str, np.ndarray], dict]:
    """Which documents each component contributes: ({component: table rows, repeats included}, stats).
    Each component's documents are taken in a seeded shuffled order, pass after pass, until its
    share of the budget is reached (the document that reaches it is kept whole)."""
    from mixforge.mixture import check_weights

    comp = table.frame["component"].cast(pl.String).to_numpy()
    names, codes = np.unique(comp, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    by_comp = {str(c): order[bounds[k] : bounds[k + 1]] for k, c in enumerate(names)}
    lengths = table.lengths
    weights = check_weights(weights, sorted(by_comp))
    sizes = {c: int(lengths[idx].sum()) for c, idx in by_comp.items()}
    if budget is None:  # all available: the largest budget that repeats no component
        budget = int(min(sizes[c] / w for c, w in weights.items() if w > 0))
    problems = [f"{c}: {sizes[c]:,} tokens, {w * budget:,.0f} needed = {w * budget / sizes[c]:.1f} epochs"
                for c, w in weights.items() if w > 0 and w * budget / sizes[c] > max_epochs]
    if problems:
        raise MixforgeError(f"a budget of {budget:,} tokens needs more than {max_epochs} epochs of: " + "; ".join(problems)
                            + ". Lower --tokens or the weight, or raise --max-epochs.")
    chosen, stats = {}, {}
    for c in sorted(by_comp):
        target, picked, got = round(weights[c] * budget), [], 0  # whole tokens: no float overshoot
        rng = np.random.default_rng([seed, int(hashlib.sha256(c.encode()).hexdigest()[:8], 16)])
        while weights[c] > 0 and got < target:
            epoch = rng.permutation(by_comp[c])  # one pass per epoch, each in its own order
            reached = np.cumsum(lengths[epoch])
            k = min(len(epoch), int(np.searchsorted(reached, target - got, side="left")) + 1)
            picked.append(epoch[:k])
            got += int(reached[k - 1])
        chosen[c] = np.concatenate(picked) if picked else np.empty(0, np.int64)
        stats[c] = {"weight": weights[c], "tokens": got, "documents": len(chosen[c]), "available_tokens": sizes[c],
                    "available_documents": len(by_comp[c]), "epochs": round(got / sizes[c], 4)}
    total = sum(s["tokens"] for s in stats.values())
    total_docs = sum(s["documents"] for s in stats.values())
    for s in stats.values():
        s["share"] = round(s["tokens"] / total, 6) if total else 0.0
        s["document_probability"] = round(s["documents"] / total_docs, 6) if total_docs else 0.0
    return chosen, {"budget": budget, "components": stats}


def first_occurrences(rows: np.ndarray) -> np.ndarray:
    """Each row once, in the order of its first appearance."""
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]


def shard_cuts(lengths: np.ndarray, shard_tokens: int) -> list[tuple[int, int]]:
    """[start, end) of each shard over documents of these lengths, in order: a shard closes with
    the document that brings it to `shard_tokens` (or with the last document)."""
    reached = np.cumsum(lengths)
    cuts, start, base = [], 0, 0
    while start < len(lengths):
        end = min(int(np.searchsorted(reached, base + shard_tokens, side="left")), len(lengths) - 1)
        cuts.append((start, end + 1))
        start, base = end + 1, int(reached[end])
    return cuts


def source_stats(table: DocumentTable, chosen: dict[str, np.ndarray], licences: dict[str, str | None]) -> dict:
    """Tokens and documents the mixture draws from each source label (repeats included), with its
    licence: what a data card owes the sources."""
    rows = np.concatenate([r for r in chosen.values()] or [np.empty(0, np.int64)])
    source = table.frame["source"].cast(pl.String).to_numpy()[rows]
    labels, codes = np.unique(source, return_inverse=True)
    tokens = np.bincount(codes, weights=table.lengths[rows], minlength=len(labels)).astype(np.int64)
    docs = np.bincount(codes, minlength=len(labels))
    total = int(tokens.sum()) or 1
    order = sorted(range(len(labels)), key=lambda k: (-tokens[k], labels[k]))
    return {str(labels[k]): {"tokens": int(tokens[k]), "documents": int(docs[k]), "share": round(int(tokens[k]) / total, 6),
                             "license": licences.get(str(labels[k]))} for k in order}


def build_stats(ws: Workspace, table: DocumentTable, chosen: dict[str, np.ndarray]) -> dict:
    """Documents and tokens the mixture draws from each build (repeats included): a document
    belongs to the build whose dedup layer kept it (see pipelines/run/increments.py)."""
    from mixforge.ledger import parquet_files

    layer_of = {name: layer["id"] for layer in (ws.stage_record("dedup") or {}).get("layers", []) for name in layer["files"]}
    shard_build = np.array([layer_of.get(f.name, "unknown") for f in parquet_files(ws.docs_dir("prune"))] or ["unknown"])
    rows = np.concatenate([r for r in chosen.values()] or [np.empty(0, np.int64)])
    builds, codes = np.unique(shard_build[table.frame["shard"].to_numpy()[rows]], return_inverse=True)
    tokens = np.bincount(codes, weights=table.lengths[rows], minlength=len(builds)).astype(np.int64)
    docs = np.bincount(codes, minlength=len(builds))
    return {str(b): {"documents": int(docs[k]), "tokens": int(tokens[k])} for k, b in enumerate(builds)}
