"""What a search strategy works with and what it returns: the search context (components, token
counts, caps and bounds, the trainer, carried runs, content space) and the proposal."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from mixforge.budget import search_runs
from mixforge.config import SearchConfig
from mixforge.errors import ConfigError
from mixforge.mixers.objective import Objective
from mixforge.mixers.sampling import feasible, tempered_prior
from mixforge.mixture import phase_ends as phase_ends_of, phase_lengths

# 4 runs where the carried runs' fit is least sure (the first round: enough to check the carried
# runs against today's data) and 2 near that fit's proposal: a proposal never predicted worse than
# today's best run can only fall back to today's runs, and a round spread for disagreement has none
# near the optimum (the demo's append: 4 such runs, and the proposal fell back to an outlying one)
MIN_AUTO_REFRESH = 6
TrainFn = Callable[..., list[dict]]  # (mixtures, seeds, label, checkpoints=0) -> run rows, in order


@dataclass
class SearchContext:
    components: list[str]
    token_counts: dict[str, int]  # training tokens per component: the natural mixture
    budget: int  # tokens per proxy run
    max_epochs: float
    settings: SearchConfig
    objective: Objective
    seed: int
    train: TrainFn
    influence_inputs: Callable | None = None  # (run_id) -> (checkpoint paths, component streams, target stream, seq_len)
    merge_inputs: Callable | None = None  # (target metric) -> (component runs' rows, evaluate([weights], max_tokens) -> [figure])
    aioli_inputs: Callable | None = None  # (target metric, start, project, bounds) -> the online run's record
    cmr_inputs: Callable | None = None  # (run_id) -> [(tokens, held-out figures)] per checkpoint, from the base
    target_tokens: int | None = None  # the training run a proposal is for (None: no repetition cap on proposals)
    cheap: SearchContext | None = None  # bayesopt_mf: the same search at the cheap fidelity (its train, tokens, caps)
    cheap_cost: float | None = None  # FLOPs of a cheap run per run at this context's proxy settings
    cheap_proxy: dict | None = None  # the proxy settings the cheap fidelity changes
    carried: list = field(default_factory=list)  # earlier runs over today's components (mixers/carry.py Carried)
    changed: dict = field(default_factory=dict)  # per component, the share of its tokens new or gone since they ran
    content: object = None  # mixers/content_space.py ContentSpace of today's components (workspace searches)
    today: object = None  # mixers/carry.py Today: what today's components are made of (None without cells)

    @property
    def natural(self) -> np.ndarray:
        counts = np.array([self.token_counts[c] for c in self.components], dtype=float)
        return counts / counts.sum()

    @property
    def prior(self) -> np.ndarray:
        p = tempered_prior(self.token_counts, self.settings.temperature)
        return np.array([p[c] for c in self.components])

    @property
    def runs(self) -> int:
        return search_runs(self.settings.runs, len(self.components))

    @property
    def refresh(self) -> int:
        """Runs a search with carried runs trains: search.refresh_runs, or for auto 2 per component
        changed past CHANGED_SHARE (at least MIN_AUTO_REFRESH), within the full budget."""
        from mixforge.mixers.carry import CHANGED_SHARE

        n = self.settings.refresh_runs
        if n == "auto":
            n = max(MIN_AUTO_REFRESH, 2 * sum(share > CHANGED_SHARE for share in self.changed.values()))
        return min(int(n), self.runs)

    @property
    def available(self) -> np.ndarray:
        return np.array([self.token_counts[c] for c in self.components], dtype=float)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) share per component of a proposal: min_share, max_share, pins (both
        ends) and the target run's repetition cap (available x max_epochs / target_tokens)."""
        s = self.settings
        unknown = sorted((set(s.min_share) | set(s.max_share) | set(s.pin)) - set(self.components))
        if unknown:
            raise ConfigError(f"search.min_share/max_share/pin name unknown component(s) {', '.join(unknown)}; "
                              f"known: {', '.join(self.components)}")
        lo = np.array([s.pin.get(c, s.min_share.get(c, 0.0)) for c in self.components])
        hi = np.array([s.pin.get(c, s.max_share.get(c, 1.0)) for c in self.components])
        if self.target_tokens:
            hi = np.minimum(hi, self.available * s.max_epochs / self.target_tokens)
        if lo.sum() > 1 + 1e-9 or hi.sum() < 1 - 1e-9 or np.any(lo > hi + 1e-12):
            within = f" within {s.max_epochs:g} epochs of {self.target_tokens:,} target tokens" if self.target_tokens else ""
            over = [c for c, low, high in zip(self.components, lo, hi) if low > high + 1e-12]
            raise ConfigError(f"search.min_share / max_share / pin cannot be met{within}: minimums sum to {lo.sum():.3g}, "
                              f"maximums to {hi.sum():.3g}" + (f"; above their highest share: {', '.join(over)}" if over else "")
                              + ". Loosen them, raise search.max_epochs or lower search.target_tokens.")
        return lo, hi

    def trainable(self, w: np.ndarray) -> np.ndarray:
        """Rows of w a proxy run can train on (its own repetition cap, proxy.max_epochs)."""
        return feasible(w, self.available, self.budget, self.max_epochs)

    def feasible(self, w: np.ndarray) -> np.ndarray:
        """Rows of w a proposal may be: trainable, within the bounds (see `bounds`)."""
        lo, hi = self.bounds()
        return self.trainable(w) & feasible(w, None, None, 0, lo, hi)

    def pinned(self, w: np.ndarray) -> np.ndarray:
        """Rows of w with the pinned shares set and the others scaled to fill the rest."""
        pins = self.settings.pin
        if not pins:
            return w
        fixed = np.array([c in pins for c in self.components])
        w = np.array(w, dtype=float, copy=True)
        rest = w[:, ~fixed].sum(axis=1, keepdims=True)
        w[:, ~fixed] = np.where(rest > 0, w[:, ~fixed] / np.where(rest > 0, rest, 1), 1 / max((~fixed).sum(), 1)) * (1 - sum(pins.values()))
        w[:, fixed] = [pins[c] for c in np.array(self.components)[fixed]]
        return w

    def as_dict(self, w: np.ndarray) -> dict[str, float]:
        return dict(zip(self.components, np.round(w, 6).tolist()))

    def phase_ends(self, phases: int) -> list[float]:
        """Where each of `phases` phases ends, as a share of training (search.phase_ends, else equal)."""
        return phase_ends_of(self.settings.phase_ends if phases > 1 else None, phases)

    def shares(self, w: np.ndarray) -> np.ndarray:
        """Overall token shares of a mixture or a schedule [phases * k]: the phases' mean weighted by their lengths."""
        blocks = np.asarray(w, dtype=float).reshape(-1, len(self.components))
        return np.array(phase_lengths(self.phase_ends(len(blocks)))) @ blocks


@dataclass
class Proposal:
    strategy: str
    objective: str
    targets: dict[str, float]
    lower_is_better: bool
    weights: dict[str, float]
    predicted: float | None  # the target's predicted value (objective units for a combination)
    predicted_interval: dict | None  # {"level", "low", "high"} (conformal, see model_choice)
    natural: dict[str, float]
    prior: dict[str, float]
    fit: dict | None  # FitReport, without per-run predictions
    fit_points: dict | None  # {"actual": [...], "predicted": [...]} out-of-fold, for the plot
    runs_used: list[str]
    iterations: list[dict] = field(default_factory=list)
    schedule: list[dict] | None = None  # multi-phase: [{"start_fraction", "end_fraction", "weights"}]
    kl_weight: float | None = None  # the KL penalty the candidates were scored with
    unconstrained: dict | None = None  # {"weights", "predicted", "largest_share", "feasible"} without pins, bounds, caps
    constraints: dict | None = None  # {"target_tokens", "max_epochs", "pin", "lowest", "highest"}: the bounds per component
    seed: int = 0
    settings: dict = field(default_factory=dict)
    fidelity: dict | None = None  # bayesopt_mf: cheap runs, main runs, cost and the calibration between them
    best_observed: dict | None = None  # the best observed feasible run, predicted by the same model (mixers/refine.py never_worse)
    fallback: str | None = None  # why the proposal is that run's mixture, when it is
    evidence: dict | None = None  # runs trained, reused exactly and carried from earlier builds (search.run_search)
    online: dict | None = None  # aioli: the online run's final target figure, cost and realised shares
    cmr: dict | None = None  # cmr: the domain, the critical ratio and its interval, the law and its points

    def to_dict(self) -> dict:
        return asdict(self)
