"""Predictors of a target metric from mixture weights.

- `lightgbm`: RegMix's regressor (gbdt, 1000 rounds, learning rate 0.01, seed 42) with
  CLIMB's shape limits (depth 4, L1/L2 regularisation). Adapted to small run counts: LightGBM's
  default of 20 samples per leaf makes every prediction the mean below ~32 runs (a pitfall seen in
  RegMix's notebook), so leaves need max(2, min(20, n // 8)). Early stopping (20 rounds) only on a
  split carved from the training runs, never on evaluation runs, and only from 32 runs up.
- `mixing_law`: the Data Mixing Laws form y = c + k * exp(t . w), fitted by least squares with a
  small ridge on t (few runs, many components).
- `linear`: ridge regression on the weights (RegMix's linear baseline).
- `law_boost`: the mixing law plus LightGBM on its residuals.
- `content`: a Gaussian process on what the runs trained on (content features, workspace searches
  only: mixers/content_space.py).
- `ensemble`: the mean of lightgbm, mixing_law and linear.
- `stacked` and `auto` (the default) are weighted and chosen by cross-validation: model_choice.py.
"""

from __future__ import annotations

import warnings

import numpy as np

PREDICTORS = ("auto", "lightgbm", "mixing_law", "linear", "law_boost", "content", "ensemble", "stacked")


class LightGBMPredictor:
    def __init__(self, seed: int = 42, rounds: int = 1000, learning_rate: float = 0.01):
        self.seed, self.rounds, self.learning_rate = seed, rounds, learning_rate

    def _model(self, n: int):
        import lightgbm as lgb

        return lgb.LGBMRegressor(
            objective="regression", n_estimators=self.rounds, learning_rate=self.learning_rate, max_depth=4,
            num_leaves=15, min_child_samples=max(2, min(20, n // 8)), min_child_weight=1e-3, reg_alpha=1e-3,
            reg_lambda=1e-3, subsample=1.0, colsample_bytree=1.0, random_state=self.seed, deterministic=True,
            force_row_wise=True, n_jobs=1, verbose=-1, min_data_in_bin=1,
        )

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "LightGBMPredictor":
        import lightgbm as lgb

        n = len(X)
        self.model = self._model(n)
        if n >= 32:  # early stopping on runs carved from the training set
            order = np.random.default_rng(self.seed).permutation(n)
            hold, train = order[: max(n // 5, 4)], order[max(n // 5, 4):]
            w = (None, None) if sample_weight is None else (sample_weight[train], [sample_weight[hold]])
            self.model.fit(X[train], y[train], sample_weight=w[0], eval_X=(X[hold],), eval_y=(y[hold],), eval_sample_weight=w[1],
                           callbacks=[lgb.early_stopping(20, verbose=False)])
            best = self.model.best_iteration_ or self.rounds
            self.model = self._model(n).set_params(n_estimators=best)  # refit on all training runs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no further splits with positive gain" on tiny sets
            self.model.fit(X, y, sample_weight=sample_weight)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        # every core for a candidate pool (100,000 mixtures x 1000 trees); one for the small sets cross-validation predicts
        return self.model.predict(X, num_threads=0 if len(X) >= 10_000 else 1)


class MixingLawPredictor:
    """y = c + k * exp(t . w) (Data Mixing Laws, ICLR 2025)."""

    def __init__(self, ridge: float = 1e-3, seed: int = 0):
        self.ridge, self.seed = ridge, seed

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "MixingLawPredictor":
        from scipy.optimize import least_squares

        self.scale = float(np.std(y)) or 1.0
        self.center = float(np.mean(y))
        z = (y - self.center) / self.scale  # fit in standard units, so one ridge fits every metric
        lin = LinearPredictor(alpha=1e-3).fit(X, z, sample_weight)
        root_w = np.ones(len(X)) if sample_weight is None else np.sqrt(sample_weight)  # weighted least squares

        k = X.shape[1]
        ridge_rows = np.hstack([np.zeros((k, 2)), np.sqrt(self.ridge) * np.eye(k)])

        def residuals(p):
            c, kk, t = p[0], p[1], p[2:]
            return np.concatenate([root_w * (c + kk * np.exp(np.clip(X @ t, -50, 50)) - z), np.sqrt(self.ridge) * t])

        def jacobian(p):  # analytic: 5-10x fewer evaluations than finite differences
            e = np.exp(np.clip(X @ p[2:], -50, 50))
            return np.vstack([root_w[:, None] * np.column_stack([np.ones(len(X)), e, p[1] * e[:, None] * X]), ridge_rows])

        starts = []
        for sign in (1.0, -1.0):  # start from the linear fit, read as a first-order exponential
            p0 = np.concatenate([[lin.model.intercept_ - sign], [sign], lin.model.coef_ / sign])
            starts.append(least_squares(residuals, p0, jac=jacobian, method="trf", max_nfev=30))
        best = min(starts, key=lambda f: f.cost)  # a few steps tell the right sign; only that start is refined
        if best.status == 0:  # 2,000 evaluations up to 1,000 runs, then fewer: on a long flat valley (a near-linear
            # target) the refine never converges and its cost grows with the runs (16 fits of 200,000 runs: many minutes)
            budget = max(100, min(2000, 2_000_000 // len(X)))
            best = least_squares(residuals, best.x, jac=jacobian, method="trf", max_nfev=budget)
        self.params = best.x
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        c, kk, t = self.params[0], self.params[1], self.params[2:]
        return self.center + self.scale * (c + kk * np.exp(np.clip(X @ t, -50, 50)))


class LinearPredictor:
    def __init__(self, alpha: float = 1e-3):
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "LinearPredictor":
        from sklearn.linear_model import Ridge

        self.model = Ridge(alpha=self.alpha).fit(X, y, sample_weight=sample_weight)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)


class LawBoostPredictor:
    """The mixing law, then LightGBM on what the law leaves unexplained: the law's smooth shape
    carries the ranking far from the runs (RegMix's 1B mixtures), the trees the local detail the
    law misses. `law`: an already fitted law on the same runs (model choice reuses it)."""

    def __init__(self, seed: int = 42, law: MixingLawPredictor | None = None):
        self.seed, self.law = seed, law

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "LawBoostPredictor":
        self.law = self.law or MixingLawPredictor(seed=self.seed).fit(X, y, sample_weight)
        # the residuals are small corrections: 200 rounds at 0.05 fit them as well as 1000 at 0.01, 5x cheaper
        self.trees = LightGBMPredictor(seed=self.seed, rounds=200, learning_rate=0.05).fit(X, y - self.law.predict(X), sample_weight)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.law.predict(X) + self.trees.predict(X)


class ContentPredictor:
    """A Gaussian process on content features (mixers/content_space.py): ARD RBF plus noise,
    targets standardised. A sample weight w < 1 adds (1/w - 1) x CARRIED_NOISE of variance to its
    run (sklearn's per-sample alpha), so a carried run is believed less, never ignored."""

    CARRIED_NOISE = 0.1

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "ContentPredictor":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        # length scales at their bounds on tiny sets; a process-wide filter: the fits run in threads,
        # where catch_warnings (process state, restored per thread) lets them through
        warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn.gaussian_process")
        scale = np.std(X, axis=0)
        self.scale = np.where(scale > 0, scale, 1.0)
        alpha = 1e-8 if sample_weight is None else 1e-8 + self.CARRIED_NOISE * (1 / np.maximum(sample_weight, 1e-3) - 1)
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(X.shape[1]), (1e-2, 1e2)) + WhiteKernel(1e-2, (1e-6, 1.0))
        self.gp = GaussianProcessRegressor(kernel, alpha=alpha, normalize_y=True, n_restarts_optimizer=1,
                                           random_state=self.seed).fit(X / self.scale, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.gp.predict(X / self.scale)


class Columns:
    """A model that reads some columns of its input: the weight bases skip the content features
    (and the content model reads only them)."""

    def __init__(self, model, columns: slice):
        self.model, self.columns = model, columns

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "Columns":
        self.model.fit(X[:, self.columns], y, sample_weight)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X[:, self.columns])


class WeightedPredictor:
    """A weighted sum of fitted predictors: the ensemble (equal weights) and the stacked model
    (weights from out-of-fold predictions, see model_choice)."""

    def __init__(self, members: dict[str, object], weights: dict[str, float]):
        self.members, self.weights = members, {m: w for m, w in weights.items() if w > 0}

    def predict(self, X: np.ndarray) -> np.ndarray:
        return sum(w * self.members[m].predict(X) for m, w in self.weights.items())


ENSEMBLE = ("lightgbm", "mixing_law", "linear")  # the ensemble's members, equal weights


class EnsemblePredictor(WeightedPredictor):
    def __init__(self, seed: int = 42):
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "EnsemblePredictor":
        super().__init__({m: make_predictor(m, self.seed).fit(X, y, sample_weight) for m in ENSEMBLE},
                         {m: 1 / len(ENSEMBLE) for m in ENSEMBLE})
        return self


def make_predictor(name: str, seed: int = 42):
    """A single model by name (`auto` and `stacked` are chosen and weighted by cross-validation:
    see `model_choice.fit_predictor`)."""
    if name == "lightgbm":
        return LightGBMPredictor(seed=seed)
    if name == "mixing_law":
        return MixingLawPredictor(seed=seed)
    if name == "linear":
        return LinearPredictor()
    if name == "law_boost":
        return LawBoostPredictor(seed=seed)
    if name == "ensemble":
        return EnsemblePredictor(seed=seed)
    if name == "content":
        return ContentPredictor(seed=seed)
    raise ValueError(f"unknown predictor {name!r}; choose one of {', '.join(PREDICTORS)}")
