"""Proposals never worse than what was measured.

`refine`: the best candidates of a pool improved by a seeded local search on the simplex (per
phase for schedules). Each round moves, around every candidate, a share of one component's weight
to another (pairwise mass moves keep the sum at 1 and pinned components untouched; one move in ten
empties the donor, so faces and corners are reachable) and keeps the best move when the strategy's
own score (prediction plus KL penalty) improves and the result is still feasible. A candidate's
step halves after a round without a gain. Cost: ROUNDS x starts x MOVES predictions.

`never_worse`: the proposal against the best observed feasible run (best measured value), both
predicted by the same model, without the KL penalty (the guarantee is about the prediction). When
the run is predicted better, the proposal becomes the better of the best refined candidate and
that run's mixture; the record says which and why.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

ROUNDS, STARTS, MOVES = 40, 16, 48
EMPTY_DONOR = 0.1  # share of moves that hand over all of the donor's weight
MIN_STEP = 1e-4


def refine(score: Callable[[np.ndarray], np.ndarray], starts: np.ndarray, ok: Callable[[np.ndarray], np.ndarray], seed,
           phases: int = 1, frozen: np.ndarray | None = None, rounds: int = ROUNDS, moves: int = MOVES) -> np.ndarray:
    """`starts` [m, phases * k] improved in place of each: every row scores no worse than its start
    and stays `ok` when it started so. score(W): lower is better, per row; ok(W): feasible, per row;
    frozen [k]: components that never move (pins)."""
    W = np.array(starts, dtype=float, copy=True)
    m, width = W.shape
    k = width // phases
    free = np.ones(k, dtype=bool) if frozen is None else ~np.asarray(frozen, dtype=bool)
    if m == 0 or free.sum() < 2:
        return W
    rng = np.random.default_rng(seed)
    best = score(W)
    step = np.full(m, 0.5)
    for _ in range(rounds):
        C = np.repeat(W, moves, axis=0)
        n, rows = len(C), np.arange(len(C))
        phase = rng.integers(phases, size=n)
        blocks = C.reshape(n, phases, k)
        seg = blocks[rows, phase]  # the moved phase of each child, a copy
        donor_key = np.where(free & (seg > 0), rng.random((n, k)), -1.0)
        donor = donor_key.argmax(axis=1)
        taker_key = np.where(free, rng.random((n, k)), -1.0)
        taker_key[rows, donor] = -1.0
        taker = taker_key.argmax(axis=1)
        fraction = np.minimum(1.0, np.repeat(step, moves) * rng.random(n))
        fraction[rng.random(n) < EMPTY_DONOR] = 1.0
        amount = seg[rows, donor] * fraction
        seg[rows, donor] -= amount
        seg[rows, taker] += amount
        blocks[rows, phase] = seg
        valid = donor_key[rows, donor] >= 0
        s = np.full(n, np.inf)
        valid[valid] = ok(C[valid])
        if valid.any():
            s[valid] = score(C[valid])
        s = s.reshape(m, moves)
        pick = s.argmin(axis=1)
        gain = s[np.arange(m), pick] < best
        W[gain] = C.reshape(m, moves, width)[np.arange(m), pick][gain]
        best[gain] = s[np.arange(m), pick][gain]
        step = np.where(gain, step, step / 2)
        if (step < MIN_STEP).all():
            break
    return W


def never_worse(predict: Callable[[np.ndarray], np.ndarray], sign: int, proposal: np.ndarray, candidate: np.ndarray,
                observed: np.ndarray, measured: np.ndarray, run_ids: list[str]) -> tuple[np.ndarray, dict | None]:
    """(the proposal, a record) given the chosen proposal, the best refined candidate and the
    feasible observed runs with their measured values (lower is better after `sign`). The record:
    {"run_id", "measured", "predicted", "proposal_predicted", "chose", "fallback"}; None without runs."""
    if not len(observed):
        return proposal, None
    b = int(np.argmin(sign * np.asarray(measured)))
    p_prop, p_cand, p_run = (float(v) for v in predict(np.vstack([proposal, candidate, observed[b]])))
    record = {"run_id": run_ids[b], "measured": float(measured[b]), "predicted": p_run, "proposal_predicted": p_prop,
              "chose": "proposal", "fallback": None}
    if sign * p_prop <= sign * p_run:
        return proposal, record
    if sign * p_cand <= sign * p_run:
        record["chose"] = f"best refined candidate (predicted {p_cand:.4f}): the first choice was predicted {p_prop:.4f}, worse than run {run_ids[b]}"
        return np.array(candidate, dtype=float), record
    best = min(p_prop, p_cand, key=lambda v: sign * v)
    record["chose"] = "best observed run"
    record["fallback"] = (f"best observed run {run_ids[b]} (measured {measured[b]:.4f}) is predicted {p_run:.4f}, the candidates' "
                          f"best {best:.4f}: the proposal is that run's mixture")
    return np.array(observed[b], dtype=float), record


def choose(score: Callable[[np.ndarray], np.ndarray], pool: np.ndarray, ok: Callable[[np.ndarray], np.ndarray], seed,
           top_k: int | None, phases: int = 1, frozen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the mean of the top_k candidates, or with top_k None the best one; the best candidate):
    the pool's STARTS best candidates are refined first and take their starts' places."""
    s = score(pool)
    order = np.argsort(s, kind="stable")
    pool, s = pool.copy(), s.copy()
    pool[order[:STARTS]] = refine(score, pool[order[:STARTS]], ok, seed, phases, frozen)
    s[order[:STARTS]] = score(pool[order[:STARTS]])
    order = np.argsort(s, kind="stable")
    return (pool[order[0]] if top_k is None else pool[order[:top_k]].mean(axis=0)), pool[order[0]]
