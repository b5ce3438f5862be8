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


def phase_ends_problem(ends, phases: int | None = None) -> str | None:
    """What is wrong with `ends` as the ends of a schedule's phases (shares of training: numbers
    in (0, 1], increasing, the last exactly 1, one per phase), or None when nothing is."""
    if not isinstance(ends, (list, tuple)) or not ends:
        return f"expected a list of phase ends, one per phase (e.g. [0.8, 1.0]), not {str(ends)[:80]!r}"
    for i, end in enumerate(ends):
        if isinstance(end, bool) or not isinstance(end, (int, float)) or not math.isfinite(end):
            return f"entry {i} is {str(end)[:40]!r}, not a number"
        if not 0 < end <= 1:
            return f"entry {i} is {end:g}; each phase ends at a share of training in (0, 1]"
        if i and end <= ends[i - 1]:
            return f"entry {i} ({end:g}) is not after entry {i - 1} ({ends[i - 1]:g}); the ends must increase"
    if ends[-1] != 1:
        return f"the last phase ends at {ends[-1]:g}, not at the end of training (1.0)"
    if phases is not None and len(ends) != phases:
        return f"{len(ends)} phase end(s) for {phases} phase(s); give one end per phase"
    return None


def phase_ends(ends, phases: int) -> list[float]:
    """The end of each of `phases` phases as a share of training: `ends` (checked), or equal
    phases when None."""
    if ends is None:
        return [(p + 1) / phases for p in range(phases)]
    problem = phase_ends_problem(ends, phases)
    if problem:
        raise MixforgeError(f"phase ends {str(ends)[:80]}: {problem}")
    return [float(e) for e in ends]


def phase_lengths(ends: list[float]) -> list[float]:
    """Each phase's share of training, from the phases' ends (equal phases: exactly 1 / n each, so
    that their sequence counts and mean weights are those of equal phases to the last bit)."""
    if equal_ends(ends):
        return [1 / len(ends)] * len(ends)
    return [end - start for start, end in zip([0.0] + list(ends[:-1]), ends)]


def equal_ends(ends: list[float]) -> bool:
    """The ends are those of equal phases (within float rounding)."""
    return all(abs(end - (p + 1) / len(ends)) < 1e-9 for p, end in enumerate(ends))
