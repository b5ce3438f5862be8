"""The quality classifier on disk as plain data, never as code.

A workspace sits on shared storage and is copied between machines, so nothing in it may run when
read: no pickle. The fitted classifier is kept as arrays in `classifier.npz` (read with
`allow_pickle=False`) beside `classifier.json` (its kind and shape), and the predictor is rebuilt
from them: a logistic regression from its coefficients and intercept (P = sigmoid(x.w + b),
exactly what scikit-learn's predict_proba computes for two classes), LightGBM from its own text
model format (parsed, never executed), stored as the bytes of that text.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixforge.errors import MixforgeError
from mixforge.workspace import atomic_write_bytes, atomic_write_json

ARRAYS = "classifier.npz"
META = "classifier.json"
OLD_PICKLE = "classifier.pkl"  # what older versions saved: never read
FORMAT = 1


@dataclass(frozen=True)
class Classifier:
    """P(reference) of embedding vectors, from plain arrays."""

    kind: str  # logistic or lightgbm
    coef: np.ndarray | None = None  # logistic: [1, dim]
    intercept: np.ndarray | None = None  # logistic: [1]
    booster: str | None = None  # lightgbm: its text model

    def probability(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "logistic":
            from scipy.special import expit

            return expit(x @ self.coef.T + self.intercept).ravel()
        import lightgbm

        return lightgbm.Booster(model_str=self.booster).predict(x)


def from_fitted(model, kind: str) -> Classifier:
    """The plain form of a fitted scikit-learn LogisticRegression or LGBMClassifier (classes 0, 1)."""
    if list(model.classes_) != [0, 1]:
        raise ValueError(f"expected classes [0, 1], got {list(model.classes_)}")
    if kind == "lightgbm":
        return Classifier(kind, booster=model.booster_.model_to_string())
    return Classifier(kind, coef=np.asarray(model.coef_, np.float64), intercept=np.asarray(model.intercept_, np.float64))


def save_classifier(folder: Path, clf: Classifier) -> None:
    if clf.kind == "lightgbm":
        arrays = {"booster": np.frombuffer(clf.booster.encode(), np.uint8)}
    else:
        arrays = {"coef": clf.coef, "intercept": clf.intercept}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(folder / ARRAYS, buffer.getvalue())
    atomic_write_json(folder / META, {"format": FORMAT, "kind": clf.kind, "arrays": sorted(arrays)})


def load_classifier(folder: Path) -> Classifier | None:
    """The classifier saved in `folder`, or None when there is none. A file that is not plain
    arrays (a pickle, an object array) or does not fit is a MixforgeError naming it."""
    meta_file, arrays_file = folder / META, folder / ARRAYS
    if not meta_file.exists() and not arrays_file.exists():
        return None
    fix = "rerun the build with --force to fit the classifier again"
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT or meta.get("kind") not in ("logistic", "lightgbm"):
            raise ValueError(f"unknown format or kind in {meta_file}")
        with np.load(arrays_file, allow_pickle=False) as data:
            arrays = {name: data[name] for name in meta["arrays"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise MixforgeError(f"quality classifier {arrays_file}: not the plain arrays mixforge saves ({type(e).__name__}: {e}); {fix}") from None
    if meta["kind"] == "lightgbm":
        import lightgbm

        text = arrays["booster"].astype(np.uint8).tobytes().decode(errors="replace")
        try:
            lightgbm.Booster(model_str=text)  # parsed now, so a damaged model is named here, not in a worker
        except lightgbm.basic.LightGBMError as e:
            raise MixforgeError(f"quality classifier {arrays_file}: not a LightGBM model ({e}); {fix}") from None
        return Classifier("lightgbm", booster=text)
    coef, intercept = arrays["coef"], arrays["intercept"]
    if coef.dtype.kind != "f" or coef.ndim != 2 or coef.shape[0] != 1 or intercept.shape != (1,) or intercept.dtype.kind != "f":
        raise MixforgeError(f"quality classifier {arrays_file}: coefficients of shape {coef.shape} and intercept of shape "
                            f"{intercept.shape}, expected [1, dim] and [1] floats; {fix}")
    return Classifier("logistic", coef=coef, intercept=intercept)
