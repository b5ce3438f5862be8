"""Tokens: the components tokenized into token shards for proxy training.

The tokenizer is the user's tokenizer.json (`proxy.tokenizer`, typically the target model's),
or a byte-level BPE trained on a seeded sample of the corpus. A seeded `heldout_fraction` of
each component's documents (chosen by a hash of the id, so independent of order) goes to
`heldout/` for evaluation; the rest to `train/`. A next-line multiple-choice task is built from
the held-out documents (`tasks/next_line.jsonl`). The user's `proxy.eval_texts` files are
tokenized into `eval/<name>.bin` for loss and bits per byte. Output under `tokens/extra/`.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import zlib
from pathlib import Path

from mixforge.config import MixforgeConfig, section_hash
from mixforge.digests import shard_digests
from mixforge.pipelines.tokenize import (
    load_tokenizer,
    tokenize_components,
    tokenizer_identity,
    train_default_tokenizer,
    workspace_frames,
)
from mixforge.errors import ConfigError
from mixforge.pipelines.quality import read_reference
from mixforge.pipelines.tasks import next_line_task
from mixforge.stage_runner import StageResult, run_side_stage
from mixforge.workspace import Workspace, atomic_write_parquet, atomic_write_text

TOKENIZER_SAMPLE_DOCS = 20_000


def is_heldout(doc_id: str, seed: int, fraction: float) -> bool:
    """By the document's id, so a change elsewhere in the corpus never redraws a document's split."""
    return zlib.crc32(f"{seed}:{doc_id}".encode()) % 10_000 < fraction * 10_000


def file_identity(path: Path | None) -> tuple | str:
    return (str(path), path.stat().st_size, path.stat().st_mtime_ns) if path and path.exists() else str(path)


def eval_text_name(path: str) -> str:
    """`loss_<name>` / `bpb_<name>` columns: the file name without its extensions."""
    return Path(path).name.split(".")[0]


def tokens_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    p = cfg.proxy
    tok = file_identity(cfg.resolve(p.tokenizer) if p.tokenizer else None)
    evals = [file_identity(cfg.resolve(e)) for e in p.eval_texts]
    return section_hash(upstream_fingerprint, tok, p.vocab_size, p.heldout_fraction, cfg.seed, evals)


def eval_texts(cfg: MixforgeConfig, components: set[str]) -> list[tuple[str, str]]:
    """(name, text) for every `proxy.eval_texts` file (JSONL with `text`, plain or compressed, or a
    whole text file); names must be distinct from each other and from the components, since both
    become metric columns."""
    out, names = [], set()
    for entry in cfg.proxy.eval_texts:
        path, name = cfg.resolve(entry), eval_text_name(entry)
        if not path.is_file():
            raise ConfigError(f"proxy.eval_texts: {path} not found")
        if name in names or name in components or name == "mean":
            raise ConfigError(f"proxy.eval_texts: {path} would be named {name!r}, which a component or another "
                              f"file already uses: rename the file")
        texts = read_reference([path], setting="proxy.eval_texts")
        if not texts:
            raise ConfigError(f"proxy.eval_texts: {path} holds no text")
        names.add(name)
        out.extend((name, t) for t in texts)
    return out


def text_hash(text: str) -> int:
    """What export checks a document's text against before it reuses the document's tokens."""
    import xxhash

    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


def write_document_index(out: Path, ids: list[str], docs: list[tuple[str, str]], splits: list[str]) -> None:
    """`documents.parquet`: where each kept document's tokens are (split, component, start and
    length in tokens, EOS included) and a hash of its text, so that export slices the tokens
    instead of tokenizing again."""
    import numpy as np
    import polars as pl

    components = [c for c, _ in docs]
    lengths = {key: np.load(out / key[0] / f"{key[1]}.lengths.npy").astype(np.int64) for key in set(zip(splits, components))}
    begins = {key: np.cumsum(n) - n for key, n in lengths.items()}
    starts, sizes, seen = [], [], dict.fromkeys(lengths, 0)  # documents of each (split, component) come in order
    for key in zip(splits, components):
        k = seen[key]
        seen[key] = k + 1
        starts.append(int(begins[key][k]))
        sizes.append(int(lengths[key][k]))
    atomic_write_parquet(out / "documents.parquet", pl.DataFrame(
        {"id": ids, "component": components, "split": splits, "start": starts, "length": sizes,
         "text_hash": pl.Series([text_hash(t) for _, t in docs], dtype=pl.UInt64)}))


def run_tokens(cfg: MixforgeConfig, upstream: StageResult, force: bool = False) -> StageResult:
    """Tokenize the components into `<workspace>/tokens/extra/{train,heldout}/`."""
    ws = Workspace(cfg.workspace_dir)
    p = cfg.proxy

    def body(partial: Path) -> dict:
        t0 = time.perf_counter()
        out = partial / "extra"
        out.mkdir(parents=True, exist_ok=True)
        tok_path = out / "tokenizer.json"
        frames = list(workspace_frames(ws))  # read once: the split below keeps every text anyway
        ids = [i for f in frames for i in f["id"].to_list()]
        docs = [d for f in frames for d in zip(f["component"].to_list(), f["text"].to_list())]
        extra_eval = eval_texts(cfg, {c for c, _ in docs})  # bad files fail before any work
        if p.tokenizer:
            load_tokenizer(cfg.resolve(p.tokenizer))  # fails with the file named if it does not load
            shutil.copyfile(cfg.resolve(p.tokenizer), tok_path)
        else:
            sample = [text for _, text in docs]
            random.Random(cfg.seed).shuffle(sample)
            train_default_tokenizer(sample[:TOKENIZER_SAMPLE_DOCS], tok_path, vocab_size=p.vocab_size, seed=cfg.seed)
        held_bytes: dict[str, int] = {}
        train_docs, held_docs = [], []
        splits = ["heldout" if is_heldout(doc_id, cfg.seed, p.heldout_fraction) else "train" for doc_id in ids]
        for (comp, text), split in zip(docs, splits):
            if split == "heldout":
                held_docs.append((comp, text))
                held_bytes[comp] = held_bytes.get(comp, 0) + len(text.encode("utf-8"))
            else:
                train_docs.append((comp, text))
        task = next_line_task(held_docs, n_items=200, seed=cfg.seed)
        atomic_write_text(out / "tasks" / "next_line.jsonl", "".join(json.dumps(item) + "\n" for item in task))
        train = tokenize_components(train_docs, tok_path, out / "train")
        held = tokenize_components(held_docs, tok_path, out / "heldout")
        evals = tokenize_components(extra_eval, tok_path, out / "eval") if extra_eval else {}
        write_document_index(out, ids, docs, splits)
        eval_bytes = {n: sum(len(t.encode("utf-8")) for nn, t in extra_eval if nn == n) for n in evals}
        components = {c: {"train_tokens": m["tokens"], "train_documents": m["documents"],
                          "heldout_tokens": held.get(c, {}).get("tokens", 0), "heldout_bytes": held_bytes.get(c, 0)}
                      for c, m in train.items()}
        return {"next_line_items": len(task), "shard_digests": shard_digests(out), "tokenizer": tokenizer_identity(tok_path) | {"path": "tokens/extra/tokenizer.json", "source": p.tokenizer or "default BPE"},
                "components": components, "seconds": round(time.perf_counter() - t0, 2),
                "eval_texts": {n: {"tokens": m["tokens"], "documents": m["documents"], "bytes": eval_bytes[n]}
                               for n, m in evals.items()}}

    fingerprint = tokens_fingerprint(cfg, upstream.fingerprint)
    return run_side_stage(ws, "tokens", fingerprint, body, upstream.docs_dir, force=force,
                          settings=p.model_dump(include={"tokenizer", "vocab_size", "heldout_fraction", "eval_texts"}))
