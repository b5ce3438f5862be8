"""The critical mixture ratio law (CMR scaling law, Gu et al. 2024) for continual pretraining.

Continued from a base on a mixture whose domain share is r, a model forgets general text as a
power law in the tokens T and the ratio r. Measured against continuing on general data alone for
the same tokens (the reference a proxy base needs: it is undertrained, so any continuation lowers
its general loss, and only the part the domain data costs is forgetting):

    forgetting(T, r) = L_general(T, r) - L_general(T, 0) = k T^a r^b

fitted by least squares in log space on the measured points that forgot (forgetting > 0). The
critical ratio at T is the largest r whose predicted forgetting stays within `tolerance` x the
reference's general loss: r* = (tolerance L_general(T, 0) / (k T^a))^(1/b), within [lowest,
highest]. Its interval comes from refitting on bootstrap resamples of the points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mixforge.errors import MixforgeError

MIN_POINTS = 3  # three parameters


@dataclass
class CmrLaw:
    k: float
    a: float  # exponent of the tokens (tokens in units of `tokens_unit`)
    b: float  # exponent of the domain ratio
    tokens_unit: float
    points: int  # measured points it was fitted on (those that forgot)
    rmse_log: float  # root mean square error of log forgetting on them

    def forgetting(self, tokens, ratio) -> np.ndarray:
        return self.k * (np.asarray(tokens, dtype=float) / self.tokens_unit) ** self.a * np.asarray(ratio, dtype=float) ** self.b

    def critical_ratio(self, tokens: float, reference: float, tolerance: float, lowest: float = 0.0, highest: float = 1.0) -> float:
        """The largest domain share in [lowest, highest] whose predicted forgetting at `tokens` is
        within tolerance x `reference` (the general loss of general data alone)."""
        allowed = tolerance * reference
        at_one = float(self.forgetting(tokens, 1.0))
        ratio = (allowed / at_one) ** (1 / self.b) if at_one > 0 and self.b > 0 else 1.0
        return float(np.clip(ratio, lowest, highest))

    def to_dict(self) -> dict:
        return asdict(self)


def fit_cmr(tokens, ratios, forgetting) -> CmrLaw:
    """The law from measured points (tokens, domain ratio > 0, forgetting). Points that did not
    forget (forgetting <= 0) carry no log; at least MIN_POINTS must remain."""
    T, r, f = (np.asarray(v, dtype=float) for v in (tokens, ratios, forgetting))
    keep = (f > 0) & (r > 0) & (T > 0)
    if keep.sum() < MIN_POINTS:
        raise MixforgeError(f"the CMR law needs at least {MIN_POINTS} measured points that forgot general text; "
                            f"{int(keep.sum())} of {len(f)} did")
    unit = float(np.max(T[keep]))
    X = np.column_stack([np.ones(keep.sum()), np.log(T[keep] / unit), np.log(r[keep])])
    y = np.log(f[keep])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    rmse = float(np.sqrt(np.mean((X @ coef - y) ** 2)))
    return CmrLaw(k=float(np.exp(coef[0])), a=float(coef[1]), b=float(coef[2]), tokens_unit=unit, points=int(keep.sum()),
                  rmse_log=rmse)


def critical_ratio_interval(tokens, ratios, forgetting, at_tokens: float, reference: float, tolerance: float,
                            lowest: float, highest: float, seed: int, resamples: int = 500, level: float = 0.9) -> dict:
    """The critical ratio's `level` interval: the law refitted on bootstrap resamples of the points
    (resamples with too few points that forgot are skipped and counted)."""
    T, r, f = (np.asarray(v, dtype=float) for v in (tokens, ratios, forgetting))
    rng, found, skipped = np.random.default_rng([seed, 17]), [], 0
    for _ in range(resamples):
        i = rng.integers(len(f), size=len(f))
        try:
            found.append(fit_cmr(T[i], r[i], f[i]).critical_ratio(at_tokens, reference, tolerance, lowest, highest))
        except MixforgeError:
            skipped += 1
    if not found:
        return {"level": level, "low": None, "high": None, "resamples": 0, "skipped": skipped}
    tail = (1 - level) / 2
    return {"level": level, "low": float(np.quantile(found, tail)), "high": float(np.quantile(found, 1 - tail)),
            "resamples": len(found), "skipped": skipped}
