"""The pieces that let the stages after dedup work one shard at a time give the same answers as
the whole corpus in memory: samples, gathered rows, agreement from counts, the next-line task."""

import numpy as np
import pytest

from mixforge.pipelines.components import label_agreement
from mixforge.pipelines.prune import cluster_batches
from mixforge.pipelines.samples import BottomK, choose_positions, gather, id_keys
from mixforge.pipelines.tokens.eval_tasks import NextLinePool, next_line_task


def test_bottom_k_is_the_same_whatever_the_shards():
    ids = [f"doc/{i}" for i in range(1000)]
    keys = id_keys(ids, seed=3)
    whole = BottomK(50)
    whole.offer(keys, ids)
    pieces = BottomK(50)
    for start in range(0, 1000, 137):  # shards of uneven size
        pieces.offer(keys[start : start + 137], ids[start : start + 137])
    assert pieces.items() == whole.items() and len(whole.items()) == 50
    assert whole.items() == sorted(whole.items(), key=ids.index)  # corpus order
    assert set(whole.items()) != set(ids[:50])  # a sample, not the head
    small = BottomK(5000)
    small.offer(keys, ids)
    assert small.items() == ids  # a corpus smaller than k is itself, in order
    assert set(sample_of(ids, seed=4)) != set(whole.items())  # the seed matters


def sample_of(ids, seed):
    sample = BottomK(50)
    sample.offer(id_keys(ids, seed), ids)
    return sample.items()


def test_gather_matches_indexing_the_concatenation():
    parts = [np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 1000 * i for i, n in enumerate([5, 0, 7, 3])]
    whole = np.concatenate(parts)
    chosen = choose_positions(len(whole), 9, seed=1)
    assert np.array_equal(gather(chosen, [len(p) for p in parts], lambda i: parts[i]), whole[chosen])
    rng_pick = np.random.default_rng(1).choice(np.arange(len(whole)), size=9, replace=False)
    assert np.array_equal(chosen, rng_pick)  # the same draw as the in-memory code made


def test_agreement_from_counts_equals_scikit_learn():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    groups = (labels + rng.integers(0, 3, 400) * (rng.random(400) < 0.4)) % 6
    got = label_agreement(labels.tolist(), groups.tolist())
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(labels, groups), abs=1e-4)
    assert label_agreement(["a", "a"], [1, 1])["nmi"] == 1.0 and label_agreement(["a", "b"], [1, 1])["nmi"] == 0.0


def test_cluster_batches_hold_at_most_the_budget():
    sizes = {0: 5, 1: 40, 2: 3, 3: 100, 4: 1}
    batches = cluster_batches(sizes, budget=45)
    assert sorted(c for b in batches for c in b) == sorted(sizes)
    assert all(sum(sizes[c] for c in b) <= 45 or len(b) == 1 for b in batches)


def test_next_line_pool_caps_each_component():
    docs = [(f"c{i % 2}", "\n".join(f"line {i} number {j} of a held-out text" for j in range(6))) for i in range(40)]
    pool = NextLinePool(per_component=5)
    for n, (comp, text) in enumerate(docs):
        pool.add(comp, np.array([n], np.uint64), [text])
    items = pool.items(n_items=30, seed=0)
    used = {item["context"].split(" ")[1] for item in items}
    assert len(items) == 30 and len(used) <= 10  # contexts from at most 5 documents per component
    assert next_line_task(docs, n_items=30, seed=0) == next_line_task(docs, n_items=30, seed=0)


@pytest.mark.timeout(400)
def test_semdedup_in_cluster_batches_removes_a_planted_near_copy(slice_config):
    """SemDeDup reads vectors from every shard in batches of clusters: batches of one cluster
    give the same removals as one batch of all, and a planted near-copy goes with its reason."""
    import json

    import polars as pl

    from mixforge.config import load_config
    from mixforge.ledger import parquet_files
    from mixforge.pipelines.build import build
    from mixforge.pipelines.prune import cluster_quality, semantic_duplicate_marks
    from mixforge.workspace import Workspace

    bible = slice_config.parent / "data" / "bible.jsonl"
    first = json.loads(bible.read_text().splitlines()[0])
    with bible.open("a") as f:  # one word changed: not an exact duplicate, and MinHash is off
        f.write(json.dumps({"id": "planted-copy", "text": first["text"].replace("serpent", "snake", 1)}) + "\n")
    cfg = load_config(slice_config)
    cfg.dedup.minhash = False
    cfg.cluster.semdedup = True
    pruned = build(cfg, until="prune")[-1]
    assert pruned.counts["docs_in"] == pruned.counts["docs_out"] + pruned.counts["docs_removed"]
    ws = Workspace(cfg.workspace_dir)
    removed = pl.read_parquet(parquet_files(ws.removed_dir / "semantic_duplicate"))
    assert pruned.counts["removed"]["semantic_duplicate"]["docs"] == removed.height >= 1
    planted = removed.filter(pl.col("source_id") == "planted-copy")  # the later of the two in corpus order
    assert planted.height == 1 and planted["kept_id"][0].startswith("bible/"), removed.select("source_id", "kept_id")
    files = parquet_files(ws.docs_dir("dedup"))
    sizes = dict(cluster_quality(ws, files).select("cluster", "docs").iter_rows())
    whole = semantic_duplicate_marks(ws, files, sizes, cfg.cluster.semdedup_threshold)
    one_cluster_each = semantic_duplicate_marks(ws, files, sizes, cfg.cluster.semdedup_threshold, budget=1)
    assert whole.sort("id").equals(one_cluster_each.sort("id")) and whole.height == removed.height


def test_whole_text_token_counts_in_pieces_equal_one_call(monkeypatch):
    """embed counts every text's tokens in pieces of about COUNT_CHARS characters (a whole shard
    at once held ~40x its text): the counts must be the ones of a single call."""
    import json

    from conftest import SLICE
    from mixforge.config import EmbedConfig
    from mixforge.pipelines.embed import stage as embed

    texts = [json.loads(line)["text"] for f in sorted(SLICE.glob("*.jsonl")) for line in f.read_text().splitlines()][:60]
    encoder = embed.Encoder(EmbedConfig(max_tokens=32))
    whole = [len(x) for x in encoder.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]]
    monkeypatch.setattr(embed, "COUNT_CHARS", 3_000)  # many pieces, some of one text longer than the budget
    assert max(map(len, texts)) > 3_000 and encoder.count_tokens(texts).tolist() == whole
