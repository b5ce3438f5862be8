"""What a search optimises: one metric, or a weighted combination of several, always turned into
one column where lower is better; plus the KL penalty towards the prior that keeps proposals
from collapsing onto one component (DoReMi's and Olmix's warning).

Direction comes from the metric's name: loss_*, bpb_*, train_loss and ppl* are minimised, acc_*
maximised; any other column needs `maximize` set. A combination standardises each metric over the
runs (z-scores) before weighting, so bits per byte and accuracy can be added."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixforge.errors import ConfigError
from mixforge.mixers.runs_data import RunsData


def direction(metric: str, maximize: bool | None = None) -> int:
    """+1 when lower is better, -1 when higher is better."""
    if maximize is not None:
        return -1 if maximize else 1
    if metric.startswith(("loss_", "bpb_", "ppl")) or metric == "train_loss":
        return 1
    if metric.startswith("acc_"):
        return -1
    raise ConfigError(f"target {metric!r}: cannot tell whether higher or lower is better; set search.maximize")


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
