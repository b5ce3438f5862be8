"""The mixture sampler: fixed-length training sequences whose components follow the weights.

Each sequence comes from one component. Counts per component are the largest-remainder
apportionment of the sequence count by weight, and the sequences are interleaved so that every
prefix (every batch) tracks the weights too. Within a component, windows walk its token stream
in a shuffled order from a random offset, one pass per epoch, so nothing repeats before the
stream is used up; repetition is allowed up to `max_epochs` (RegMix caps it at 15) and recorded.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mixforge.errors import InputError, MixforgeError
from mixforge.mixture import check_weights  # noqa: F401  (the sampler's callers import it from here)
from mixforge.mixture import phase_ends as phase_ends_of, phase_lengths
from mixforge.workspace import read_json


def load_shards(folder: str | Path) -> dict[str, np.memmap]:
    """The token shards `tokenize_components` wrote, memory-mapped: {component: 1-D array}."""
    folder = Path(folder)
    shards, hashes = {}, set()
    for meta_path in sorted(folder.glob("*.json")):
        if meta_path.name.startswith((".", "_")):
            continue
        meta = read_json(meta_path)
        if not meta or "tokens" not in meta or "dtype" not in meta:
            continue
        comp, bin_path = meta_path.stem, meta_path.with_suffix(".bin")
        if not bin_path.exists():
            raise InputError(f"{bin_path} is missing (its {meta_path.name} is there): tokenize again")
        dtype = np.dtype(meta["dtype"])
        if bin_path.stat().st_size != meta["tokens"] * dtype.itemsize:
            raise InputError(f"{bin_path} holds {bin_path.stat().st_size} bytes, {meta_path.name} says "
                             f"{meta['tokens']} {dtype.name} tokens: tokenize again")
        shards[comp] = np.memmap(bin_path, dtype=dtype, mode="r") if meta["tokens"] else np.zeros(0, dtype)
        hashes.add(meta.get("tokenizer_sha256"))
    if not shards:
        raise InputError(f"no token shards in {folder}")
    if len(hashes) > 1:
        raise InputError(f"the shards in {folder} come from {len(hashes)} different tokenizers: tokenize again")
    return shards


def apportion(weights: np.ndarray, n: int) -> np.ndarray:
    """Largest-remainder split of n items by weights (ties go to the earlier component)."""
    exact = weights * n
    counts = np.floor(exact).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        order = np.lexsort((np.arange(len(weights)), -(exact - counts)))
        counts[order[:rest]] += 1
    return counts


def interleave(counts: np.ndarray) -> np.ndarray:
    """Component index per position: component c's k-th sequence sits at ideal time (k + 0.5) / count,
    so any prefix holds each component in proportion (a deterministic, smooth schedule)."""
    comp = np.repeat(np.arange(len(counts)), counts)
    k = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)
    when = (k + 0.5) / np.maximum(counts[comp], 1)
    return comp[np.lexsort((comp, when))]


def window_starts(n: int, seq_len: int, seed: int, comp: str, count: int) -> np.ndarray:
    """`count` window starts in a component's stream of `n` tokens: per epoch a random offset and a
    shuffled order of the seq_len-strided windows from it. The generator depends on the seed and the
    component's name only, so adding or reweighting other components leaves this one's windows as
    they were."""
    rng = np.random.default_rng([int(seed), zlib.crc32(comp.encode("utf-8"))])
    per_epoch = max(n // seq_len, 1)
    starts = []
    while sum(len(s) for s in starts) < count:
        offset = int(rng.integers(n))
        starts.append((offset + rng.permutation(per_epoch) * seq_len) % n)
    return np.concatenate(starts)[:count]


def window(tokens: np.ndarray, start: int, seq_len: int) -> np.ndarray:
    """seq_len + 1 int64 tokens from `start`, wrapping to the stream's start at its end."""
    width = seq_len + 1
    if start + width <= len(tokens):
        return np.asarray(tokens[start:start + width], dtype=np.int64)
    head = np.asarray(tokens[start:], dtype=np.int64)
    return np.concatenate([head, np.asarray(tokens[:width - len(head)], dtype=np.int64)])


class MixtureSampler:
    """Sequences of `seq_len + 1` tokens (inputs plus the shifted target) for a token budget.

    shards: {component: 1-D token array or memmap}; weights: {component: weight} (components
    left out get 0; weights not summing to 1 are normalised with a warning), or a list of such
    mappings: a multi-phase schedule, one mixture per phase, in order; phase p takes its share of
    the sequences (largest remainder) up to `phase_ends[p]` of training (e.g. [0.8, 1.0]; None:
    equal phases), and the overall weights are the phases' mean weighted by their lengths. The
    budget counts trained tokens: ceil(token_budget / seq_len) sequences. Deterministic for a seed.
    """

    def __init__(self, shards: dict[str, np.ndarray], weights: dict[str, float] | list[dict[str, float]], seq_len: int,
                 token_budget: int, seed: int, max_epochs: float = 15, phase_ends: list[float] | None = None):
        if seq_len < 1:
            raise MixforgeError(f"seq_len must be at least 1, got {seq_len}")
        if token_budget < 1:
            raise MixforgeError(f"token_budget must be at least 1, got {token_budget}")
        self.names = sorted(shards)
        self.shards = shards
        self.seq_len, self.token_budget, self.seed, self.max_epochs = int(seq_len), int(token_budget), seed, max_epochs
        self.phases = [check_weights(w, self.names) for w in (weights if isinstance(weights, list) else [weights])]
        if not self.phases:
            raise MixforgeError("a multi-phase schedule needs at least one phase")
        self.phase_ends = phase_ends_of(phase_ends, len(self.phases))
        lengths = np.array(phase_lengths(self.phase_ends))
        mean = np.mean if len(set(lengths)) == 1 else (lambda v: lengths @ v)  # equal phases: today's plain mean, to the bit
        self.weights = {c: float(mean([ph[c] for ph in self.phases])) for c in self.names}  # overall token shares
        self.available = {c: len(shards[c]) for c in self.names}
        self._check_epochs()
        self.n_sequences = math.ceil(self.token_budget / self.seq_len)
        per_phase = apportion(lengths, self.n_sequences)
        phase_counts = [apportion(np.array([ph[c] for c in self.names]), n) for ph, n in zip(self.phases, per_phase)]
        self.counts = dict(zip(self.names, np.sum(phase_counts, axis=0).tolist()))
        # realised epochs: windows read seq_len new tokens each (the +1 target overlaps the next)
        self.epochs = {c: self.counts[c] * self.seq_len / self.available[c] if self.counts[c] else 0.0
                       for c in self.names}
        self.order = np.concatenate([interleave(counts) for counts in phase_counts])
        self.starts = np.zeros(self.n_sequences, dtype=np.int64)
        for i, c in enumerate(self.names):
            if self.counts[c]:
                self.starts[self.order == i] = window_starts(self.available[c], self.seq_len, self.seed, c, self.counts[c])

    def _check_epochs(self) -> None:
        """Every weighted component must hold one window, and its target (weight * budget) must fit
        in max_epochs passes over its tokens."""
        problems = []
        for c in self.names:
            if self.weights[c] == 0:
                continue
            needed, have = self.weights[c] * self.token_budget, self.available[c]
            if have < self.seq_len + 1:
                problems.append(f"{c}: {have:,} tokens, fewer than one sequence of {self.seq_len + 1}")
            elif needed / have > self.max_epochs:
                problems.append(f"{c}: {have:,} tokens available, {needed:,.0f} needed "
                                f"(weight {self.weights[c]:.4g} of {self.token_budget:,}) = {needed / have:.1f} epochs")
        if problems:
            raise MixforgeError(f"mixture needs more data than allowed (at most {self.max_epochs} epochs per "
                                f"component): " + "; ".join(problems) + ". Lower the weight or the token budget, or add data.")

    def __len__(self) -> int:
        return self.n_sequences

    def sequence(self, i: int) -> np.ndarray:
        """Sequence i: seq_len + 1 int64 tokens, wrapping to the stream's start at its end."""
        return window(self.shards[self.names[self.order[i]]], int(self.starts[i]), self.seq_len)

    def components(self) -> list[str]:
        """Component name of each sequence, in order."""
        return [self.names[i] for i in self.order]

    def batches(self, batch_size: int, drop_last: bool = False) -> Iterator[np.ndarray]:
        """int64 arrays [batch_size, seq_len + 1] in schedule order (the last may be smaller)."""
        for lo in range(0, self.n_sequences, batch_size):
            hi = min(lo + batch_size, self.n_sequences)
            if drop_last and hi - lo < batch_size:
                return
            yield np.stack([self.sequence(i) for i in range(lo, hi)])

    def summary(self) -> dict:
        """Per component: weight, sequences, trained tokens, available tokens, epochs, realised share."""
        total = self.n_sequences * self.seq_len
        rows = {c: {"weight": self.weights[c], "sequences": self.counts[c], "tokens": self.counts[c] * self.seq_len,
                    "available_tokens": self.available[c], "epochs": round(self.epochs[c], 4),
                    "share": self.counts[c] * self.seq_len / total} for c in self.names}
        out = {"seq_len": self.seq_len, "token_budget": self.token_budget, "sequences": self.n_sequences,
               "tokens": total, "seed": self.seed, "max_epochs": self.max_epochs, "components": rows}
        if len(self.phases) > 1:
            out["phases"], out["phase_ends"] = self.phases, self.phase_ends
        return out
