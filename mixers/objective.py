"""What a search optimises: one metric, or a weighted combination of several, always turned into
one column where lower is better; plus the KL penalty towards the prior that keeps proposals
from collapsing onto one component (DoReMi's and Olmix's warning).

Direction comes from the words of the metric's name (split at _ - . @): loss, bpb, perplexity and ppl
are minimised, acc, accuracy, f1, exact_match and pass@k maximised; a name with words of both kinds
or of neither needs `maximize` set. A combination standardises each metric over the
runs (z-scores) before weighting, so bits per byte and accuracy can be added."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mixforge.errors import ConfigError
from mixforge.mixers.runs_file import RunsData


LOWER_IS_BETTER = {"loss", "bpb", "perplexity", "ppl"}
HIGHER_IS_BETTER = {"acc", "accuracy", "f1", "exact_match", "pass@k"}


def direction(metric: str, maximize: bool | None = None) -> int:
    """+1 when lower is better, -1 when higher is better."""
    if maximize is not None:
        return -1 if maximize else 1
    words = re.split(r"[_\-.@]", metric.lower())
    pairs = [f"{a}_{b}" for a, b in zip(words, words[1:])]  # exact_match is two words
    lower = sorted(LOWER_IS_BETTER.intersection(words))
    higher = sorted(HIGHER_IS_BETTER.intersection(words + pairs))
    if re.search(r"(^|[_\-.@])pass@(\d+|k)($|[_\-.@])", metric.lower()):
        higher.append("pass@k")
    if lower and not higher:
        return 1
    if higher and not lower:
        return -1
    why = (f"its name has both {', '.join(lower)} (lower is better) and {', '.join(higher)} (higher is better)" if lower
           else f"its name has none of {', '.join(sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER))}")
    raise ConfigError(f"target {metric!r}: cannot tell whether higher or lower is better ({why}); "
                      "set search.maximize: true/false in the config, or pass --maximize / --minimize")


@dataclass
class Objective:
    """targets: {metric: weight}; the objective is lower-is-better."""

    targets: dict[str, float]
    maximize: bool | None = None

    @classmethod
    def parse(cls, target: str | dict[str, float] | None, maximize: bool | None = None) -> "Objective":
        if not target:
            raise ConfigError("no search target: set search.target (e.g. bpb_mean) or pass --target")
        targets = {target: 1.0} if isinstance(target, str) else dict(target)
        if any(not np.isfinite(w) or w <= 0 for w in targets.values()):
            raise ConfigError(f"search.target weights must be positive numbers, got {targets}")
        return cls(targets, maximize)

    @property
    def single(self) -> str | None:
        return next(iter(self.targets)) if len(self.targets) == 1 else None

    def held_out_metric(self, what: str) -> str:
        """The one loss_* or bpb_* target that `what` (a strategy measuring models on held-out text) needs."""
        target = self.single
        if target is None or not target.startswith(("loss_", "bpb_")):
            raise ConfigError(f"{what} on held-out text: search.target must be one loss_* or bpb_* metric, not {self.label!r}")
        return target

    @property
    def label(self) -> str:
        return self.single or " + ".join(f"{w:g}*{m}" for m, w in self.targets.items())

    @property
    def sign(self) -> int:
        """Direction of the fitted column: the metric's own for one target, +1 for a combination."""
        return direction(self.single, self.maximize) if self.single else 1

    def column(self, data: RunsData) -> np.ndarray:
        """The value the predictor learns, per run: the raw metric for one target (so predictions
        read in its units), else the lower-is-better weighted sum of z-scores."""
        if self.single:
            return data.targets[self.single]
        total = np.zeros(len(data))
        for metric, w in self.targets.items():
            y = data.targets[metric]
            total += w * direction(metric, self.maximize) * (y - y.mean()) / y.std()
        return total


def kl_to_prior(w: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """KL(w || prior) per row of w [n, k]; zero weights contribute nothing."""
    w = np.atleast_2d(w)
    safe = np.where(w > 0, w, 1.0)
    return np.sum(np.where(w > 0, w * np.log(safe / np.maximum(prior, 1e-12)), 0.0), axis=1)


def kl_by_phase(w: np.ndarray, prior: np.ndarray, phases: int = 1) -> np.ndarray:
    """KL to the prior summed over the phases of schedules [n, phases * k] (prior [phases * k])."""
    w, prior = np.atleast_2d(w), np.asarray(prior)
    k = w.shape[1] // phases
    return sum(kl_to_prior(w[:, p * k:(p + 1) * k], prior[p * k:(p + 1) * k]) for p in range(phases))


def trust_region_weight(mae: float, X: np.ndarray, prior: np.ndarray, phases: int = 1) -> float:
    """The default KL weight: the predictor's cross-validated MAE per median KL(run || prior) of
    the runs it learnt from. A candidate as far from the prior as a typical run pays one typical
    prediction error, so the search leaves the region the runs cover only for a predicted gain
    larger than the predictor's own error there (chosen by this rule, not by verification runs)."""
    spread = float(np.median(kl_by_phase(X, prior, phases)))
    return float(mae) / spread if spread > 0 else 0.0
