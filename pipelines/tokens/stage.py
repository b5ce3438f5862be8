"""Tokens: the components tokenized into token shards for proxy training.

The tokenizer is the user's tokenizer.json (`proxy.tokenizer`, typically the target model's),
or a byte-level BPE trained on a seeded sample of the corpus. A seeded `heldout_fraction` of
each component's documents (chosen by a hash of the id, so independent of order) goes to
`heldout/` for evaluation; the rest to `train/`. A next-line multiple-choice task is built from
the held-out documents (`tasks/next_line.jsonl`). The user's `proxy.eval_texts` files are
tokenized into `eval/<name>.bin` for loss and bits per byte. Output under `tokens/extra/`.
With `executor: ray` the prune shards are tokenized by Ray tasks and joined here (shard_tasks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path


from mixforge.config import MixforgeConfig, section_hash
from mixforge.digests import shard_digests
from mixforge.errors import ConfigError
from mixforge.pipelines.outputs import load_components

from mixforge.pipelines.quality import read_reference
from mixforge.pipelines.samples import BottomK, id_keys
from mixforge.pipelines.tokens.eval_tasks import NextLinePool
from mixforge.pipelines.tokens.documents import TOKENIZER_IN_WORKSPACE, DocumentIndex, tokenize_frame
from mixforge.pipelines.tokens.tokenizer import (
    TokenShardWriter,
    load_tokenizer,
    tokenize_components,
    tokenizer_identity,
    train_default_tokenizer,
    workspace_frames,
)
from mixforge.pipelines.run import LayerPlan, StageInputs, StageOptions, StageResult, plan_stage, run_side_stage
from mixforge.pipelines.run.shards import uses_ray
from mixforge.workspace import Workspace, atomic_write_text

TOKENIZER_SAMPLE_DOCS = 20_000


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


def tokenizer_sample(ws: Workspace, seed: int, size: int = TOKENIZER_SAMPLE_DOCS) -> list[str]:
    """A seeded sample of kept texts for training the default tokenizer (by a hash of the id)."""
    sample = BottomK(size)
    for frame in workspace_frames(ws):
        sample.offer(id_keys(frame["id"], seed), frame["text"].to_list())
    return sample.items()


def appending_from(partial: Path) -> Path:
    """Hard links to the earlier layers' shards and index, made once before an appending run
    replaces any of them in `partial/extra`: what a resumed run appends to again."""
    before = partial / "appending"
    if not before.exists():
        tmp = partial / ".appending.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        extra = partial / "extra"
        for f in [extra / "documents.parquet"] + [f for split in ("train", "heldout") for f in sorted((extra / split).glob("*"))]:
            (tmp / f.relative_to(extra)).parent.mkdir(parents=True, exist_ok=True)
            os.link(f, tmp / f.relative_to(extra))
        os.replace(tmp, before)
    return before


def run_tokens(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """Tokenize the components into `<workspace>/tokens/extra/{train,heldout}/`, one prune shard
    at a time (memory: one shard, the tokenizer's training sample and the task's pool).

    A layer of new component files (the components stage kept its names) is appended: the
    tokenizer, the next-line task and the eval texts stay as the build that made them, and the new
    documents' tokens go after the earlier ones in each component's shards."""
    upstream = inputs["components"]  # its documents are the prune output it named
    planned = plan_stage(cfg, "tokens", tokens_fingerprint, upstream, options.force)
    return run_side_stage(planned.ws, "tokens", planned.fingerprint,
                          lambda partial: _tokenize_layer(cfg, planned.ws, planned.layer, partial),
                          upstream.docs_dir, force=options.force,
                          settings=cfg.proxy.model_dump(include={"tokenizer", "vocab_size", "heldout_fraction", "eval_texts"}),
                          layer=planned.layer, base=planned.base)


def _tokenize_layer(cfg: MixforgeConfig, ws: Workspace, layer: LayerPlan, partial: Path) -> dict:
    """The stage's work in `partial/extra/`: the tokenizer (made on a first run, carried over when
    appending), the token shards and document index, the next-line task and the eval texts.
    Returns the layer's summary for the stage record."""
    t0 = time.perf_counter()
    out = partial / "extra"
    out.mkdir(parents=True, exist_ok=True)
    tok_path = out / "tokenizer.json"
    earlier = layer.previous[-1]["counts"] if layer.incremental else None
    names = {r["component"] for r in (load_components(ws) or {}).get("components", [])}
    extra_eval = [] if earlier else eval_texts(cfg, names)  # bad files fail before any work
    if earlier is None:  # (an appending run keeps the tokenizer the earlier layers used, carried over)
        _make_tokenizer(cfg, ws, tok_path)
    before = appending_from(partial) if earlier else None
    train, held, held_bytes, pool = _write_shards(cfg, ws, layer.inputs, out, tok_path, before, earlier)
    if earlier:  # the task and eval texts the earlier runs were measured on
        task_items, evals = earlier["next_line_items"], earlier["eval_texts"]
    else:
        task_items, evals = _write_task_and_evals(cfg, out, tok_path, pool, extra_eval)
    components = {c: {"train_tokens": m["tokens"], "train_documents": m["documents"],
                      "heldout_tokens": held.get(c, {}).get("tokens", 0), "heldout_bytes": held_bytes.get(c, 0)}
                  for c, m in train.items()}
    return {"next_line_items": task_items, "shard_digests": shard_digests(out),
            "tokenizer": tokenizer_identity(tok_path) | {"path": TOKENIZER_IN_WORKSPACE, "source": cfg.proxy.tokenizer or "default BPE"},
            "components": components, "seconds": round(time.perf_counter() - t0, 2), "appended": bool(earlier),
            "eval_texts": evals}


def _make_tokenizer(cfg: MixforgeConfig, ws: Workspace, tok_path: Path) -> None:
    """The user's `proxy.tokenizer` copied to `tok_path` (once it loads), else a byte-level BPE
    trained on a seeded sample of the kept texts."""
    p = cfg.proxy
    if p.tokenizer:
        load_tokenizer(cfg.resolve(p.tokenizer))  # fails with the file named if it does not load
        shutil.copyfile(cfg.resolve(p.tokenizer), tok_path)
    else:
        train_default_tokenizer(tokenizer_sample(ws, cfg.seed), tok_path, vocab_size=p.vocab_size, seed=cfg.seed)


def _write_shards(cfg: MixforgeConfig, ws: Workspace, inputs: list[str], out: Path, tok_path: Path,
                  before: Path | None, earlier: dict | None) -> tuple[dict, dict, dict[str, int], NextLinePool]:
    """The documents of `inputs` tokenized into the train or held-out shards and the document index
    (after `before`'s, when appending); every writer aborted if anything fails. Returns the train
    and held-out shards' counts per component, the held-out bytes per component (earlier layers'
    included) and the pool of held-out texts the next-line task is drawn from (first run only)."""
    writers = {split: TokenShardWriter(tok_path, out / split, TOKENIZER_IN_WORKSPACE, before and before / split)
               for split in ("train", "heldout")}
    index = DocumentIndex(out / "documents.parquet", before and before / "documents.parquet")
    pool = NextLinePool()
    held_bytes = {c: m["heldout_bytes"] for c, m in earlier["components"].items()} if earlier else {}
    try:
        if uses_ray(cfg):  # one Ray task per prune shard, joined here in shard order
            from mixforge.pipelines.tokens.shard_tasks import tokenize_on_ray

            tokenize_on_ray(cfg, ws, inputs, out, tok_path, writers, index, held_bytes, pool if earlier is None else None)
        else:
            for frame in workspace_frames(ws, inputs):
                tokenize_frame(frame, cfg.seed, cfg.proxy.heldout_fraction, writers, index, held_bytes,
                               pool if earlier is None else None)
        train, held = (writers[split].close() for split in ("train", "heldout"))
        index.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return train, held, held_bytes, pool


def _write_task_and_evals(cfg: MixforgeConfig, out: Path, tok_path: Path, pool: NextLinePool,
                          extra_eval: list[tuple[str, str]]) -> tuple[int, dict]:
    """A first run's next-line task (drawn from `pool`) and its tokenized `proxy.eval_texts`:
    the task's item count and each eval text's tokens, documents and bytes."""
    task = pool.items(n_items=200, seed=cfg.seed)
    atomic_write_text(out / "tasks" / "next_line.jsonl", "".join(json.dumps(item) + "\n" for item in task))
    tokenized = tokenize_components(extra_eval, tok_path, out / "eval", tokenizer_path=TOKENIZER_IN_WORKSPACE) if extra_eval else {}
    eval_bytes = {n: sum(len(t.encode("utf-8")) for nn, t in extra_eval if nn == n) for n in tokenized}
    evals = {n: {"tokens": m["tokens"], "documents": m["documents"], "bytes": eval_bytes[n]} for n, m in tokenized.items()}
    return len(task), evals
