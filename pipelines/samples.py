"""Seeded samples of a corpus read shard by shard, in memory bounded by the sample.

- `id_keys` + `BottomK`: the k documents with the smallest seeded hash of their id. The choice of
  a document depends only on its id and the seed, never on shard order or corpus size, and
  samples of shards merge exactly (bottom-k of the union = bottom-k of the bottom-ks).
- `choose_positions` + `gather`: a uniform sample of row positions drawn once from the total
  count, gathered shard by shard (the k-means training sample, the classifier's negatives).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


def id_keys(ids: Iterable[str], seed: int) -> np.ndarray:
    """A seeded 64-bit hash per id (xxh3): the sampling key."""
    import xxhash

    return np.fromiter((xxhash.xxh3_64_intdigest(i.encode("utf-8"), seed=seed) for i in ids), dtype=np.uint64)


class BottomK:
    """Keeps the `k` items with the smallest keys seen so far; `items()` returns them in the
    order they were offered (so a sample of a small corpus is the corpus, in corpus order)."""

    def __init__(self, k: int):
        self.k = k
        self._keys = np.zeros(0, np.uint64)
        self._order = np.zeros(0, np.int64)
        self._items: list = []
        self._seen = 0

    def offer(self, keys: np.ndarray, items: list) -> None:
        order = np.arange(self._seen, self._seen + len(items), dtype=np.int64)
        self._seen += len(items)
        keys = np.concatenate([self._keys, np.asarray(keys, np.uint64)])
        order = np.concatenate([self._order, order])
        pool = self._items + list(items)
        if len(keys) > self.k:
            keep = np.argpartition(keys, self.k - 1)[: self.k]
            keep = keep[np.argsort(order[keep], kind="stable")]
            keys, order, pool = keys[keep], order[keep], [pool[i] for i in keep]
        self._keys, self._order, self._items = keys, order, pool

    def merge(self, other: "BottomK") -> None:
        """Offer what `other` kept, in its order: as if everything offered to it had been offered here."""
        self.offer(other._keys, other._items)

    def items(self) -> list:
        return list(self._items)


def choose_positions(total: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct positions out of `total`, seeded, in the generator's draw order (the same
    draw as `rng.choice(array_of_total, size, replace=False)` on the whole array)."""
    return np.random.default_rng(seed).choice(total, size=min(size, total), replace=False)


def gather(positions: np.ndarray, counts: list[int], load: Callable[[int], np.ndarray]) -> np.ndarray:
    """Rows at global `positions` (in that order) of the concatenation of parts of `counts` rows,
    loading one part at a time with `load(part_index)`."""
    parts, where, offset = [], [], 0
    for part, n in enumerate(counts):
        hit = np.flatnonzero((positions >= offset) & (positions < offset + n))
        if len(hit):
            parts.append(load(part)[positions[hit] - offset])
            where.append(hit)
        offset += n
    if not parts:
        return np.zeros((0, 0), np.float32)
    rows = np.concatenate(parts)
    out = np.empty_like(rows)
    out[np.concatenate(where)] = rows
    return out
