"""tokens by prune shard (what each Ray task does, run here in turn): the shards tokenized apart
and joined in shard order give the token shards, document index and next-line pool of one pass
over all of them, byte for byte. The Ray build test runs the same through a real cluster."""

import json
from pathlib import Path

from mixforge.ledger import parquet_files
from mixforge.pipelines.tokens.eval_tasks import NextLinePool
from mixforge.pipelines.tokens.shard_tasks import SPLITS, tokenize_shard
from mixforge.pipelines.tokens.documents import TOKENIZER_IN_WORKSPACE, DocumentIndex, tokenize_frame
from mixforge.pipelines.tokens.tokenizer import TokenShardWriter, workspace_frames
from mixforge.workspace import Workspace


def _writers(out: Path, tok: Path):
    return {split: TokenShardWriter(tok, out / split, TOKENIZER_IN_WORKSPACE) for split in SPLITS}, DocumentIndex(out / "documents.parquet")


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".shards" not in p.parts}


def test_prune_shards_tokenized_apart_and_joined_are_one_pass_byte_for_byte(built, tmp_path):
    _, cfg, _ = built
    ws = Workspace(cfg.workspace_dir)
    tok = ws.stage_dir("tokens") / "extra" / "tokenizer.json"
    shards = [f.name for f in parquet_files(ws.docs_dir("prune"))]
    assert len(shards) > 2

    whole_writers, whole_index = _writers(tmp_path / "whole", tok)
    whole_bytes, whole_pool = {}, NextLinePool()
    for frame in workspace_frames(ws, shards):
        tokenize_frame(frame, cfg.seed, cfg.proxy.heldout_fraction, whole_writers, whole_index, whole_bytes, whole_pool)
    whole_meta = {s: w.close() for s, w in whole_writers.items()}
    whole_index.close()

    joined_writers, joined_index = _writers(tmp_path / "joined", tok)
    joined_bytes, joined_pool = {}, NextLinePool()
    for k, shard in enumerate(shards):
        scratch = tmp_path / "joined" / ".shards" / f"{k:05d}"
        held, pool = tokenize_shard(str(ws.root), shard, str(tok), TOKENIZER_IN_WORKSPACE, cfg.seed,
                                    cfg.proxy.heldout_fraction, True, str(scratch))
        for split in SPLITS:
            joined_writers[split].append_shards(scratch / split)
        joined_index.append_index(scratch / "documents.parquet")
        joined_bytes = {c: joined_bytes.get(c, 0) + held.get(c, 0) for c in {*joined_bytes, *held}}
        joined_pool.merge(pool)
    joined_meta = {s: w.close() for s, w in joined_writers.items()}
    joined_index.close()

    assert joined_meta == whole_meta and whole_meta["train"]
    assert _files(tmp_path / "joined") == _files(tmp_path / "whole")  # .bin, .lengths.npy, .json, documents.parquet
    assert joined_bytes == whole_bytes
    assert json.dumps(joined_pool.items(seed=3)) == json.dumps(whole_pool.items(seed=3)) and whole_pool.items(seed=3)
