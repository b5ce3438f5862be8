"""The mixture type every layer shares: weights over components, checked and normalised."""

from __future__ import annotations

import math
import warnings

from mixforge.errors import MixforgeError


def weight_value(comp: str, w) -> float:
    """One component's weight as a float: a finite number >= 0, else an error naming the component."""
    try:
        if isinstance(w, bool):
            raise TypeError
        w = float(w)
    except (TypeError, ValueError):
        raise MixforgeError(f"weight of component {comp!r} is {w!r}, not a number") from None
    if math.isnan(w) or math.isinf(w):
        raise MixforgeError(f"weight of component {comp!r} is {w}: weights must be finite numbers")
    if w < 0:
        raise MixforgeError(f"weight of component {comp!r} is {w}: weights cannot be negative")
    return w


def check_weights(weights: dict[str, float], known: list[str]) -> dict[str, float]:
    """Weights for every known component (missing ones are 0), summing to 1."""
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise MixforgeError(f"unknown component(s) {', '.join(unknown)} in the weights; known: {', '.join(sorted(known))}")
    clean = {comp: weight_value(comp, weights.get(comp, 0.0)) for comp in known}
    top = max(clean.values(), default=0.0)
    if top > 0 and math.isinf(sum(clean.values())):  # 1e308 + 1e308 overflows: only the proportions count
        clean = {comp: w / top for comp, w in clean.items()}
    total = sum(clean.values())
    if total <= 0:
        raise MixforgeError("the weights sum to 0: at least one component needs a positive weight")
    if abs(total - 1.0) > 1e-4:  # rounding noise (weights written to 6 decimals) is normalised silently
        warnings.warn(f"mixture weights sum to {total:.6g}, not 1: normalised", stacklevel=3)
    return {c: w / total for c, w in clean.items()}
