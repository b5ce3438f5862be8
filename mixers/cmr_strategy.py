"""The cmr strategy for continual pretraining (CMR scaling law, mixers/cmr_law.py): how much
domain data a model can be continued on before it forgets general text.

The components fall in two groups: `search.cmr_domain` names the domain ones, the rest are
general; each group keeps its natural split, so a mixture is one number, the domain share r. From
the base (`proxy.init: base`, or the user's own checkpoint: continual pretraining needs a model
to continue), one proxy per ratio of `search.cmr_ratios` (0, general data alone, always among
them), one seed for all (their differences are the ratio's, not the seed's), each with
`search.cmr_checkpoints` checkpoints: every checkpoint is a point (tokens, ratio, general loss).
The law is fitted on the points' forgetting, and the proposal is the critical ratio at the
proxies' tokens, within the pins and bounds, with its bootstrap interval. `search verify` trains
the proposal and general data alone from the base with fresh seeds and says whether the
proposal's forgetting stayed within the tolerance.
"""

from __future__ import annotations

import numpy as np

from mixforge.errors import ConfigError, MixforgeError
from mixforge.mixers.cmr_law import critical_ratio_interval, fit_cmr
from mixforge.mixers.context import Proposal, SearchContext
from mixforge.mixers.strategies import _clip, _proposal


def groups(ctx: SearchContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(domain mask, general data alone, domain data alone) over ctx.components, each group in its natural split."""
    domain = ctx.settings.cmr_domain
    unknown = sorted(set(domain) - set(ctx.components))
    if not domain or unknown or set(domain) == set(ctx.components):
        raise ConfigError("the cmr strategy needs search.cmr_domain: the domain components, some but not all of "
                          f"{', '.join(ctx.components)}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    mask = np.array([c in domain for c in ctx.components])
    natural = ctx.natural
    return mask, np.where(mask, 0, natural) / natural[~mask].sum(), np.where(mask, natural, 0) / natural[mask].sum()


def group_loss(row: dict, components: list[str], weights: np.ndarray, family: str) -> float:
    """A group's loss: its components' held-out `family` (loss or bpb) figures, weighted by their share in the group."""
    used = [(c, w) for c, w in zip(components, weights) if w > 0]
    return float(sum(w * row[f"{family}_{c}"] for c, w in used) / sum(w for _, w in used))


def family_of(ctx: SearchContext) -> str:
    target = ctx.objective.single or ""
    return "bpb" if target.startswith("bpb_") else "loss"


def cmr(ctx: SearchContext) -> Proposal:
    s = ctx.settings
    if ctx.cmr_inputs is None:
        raise MixforgeError("the cmr strategy reads its runs' checkpoints: run it through `mixforge search`")
    mask, general, domain = groups(ctx)
    lo, hi = ctx.bounds()
    lowest, highest = max(lo[mask].sum(), 1 - hi[~mask].sum()), min(hi[mask].sum(), 1 - lo[~mask].sum())
    ratios = sorted({0.0, *s.cmr_ratios})
    mixtures = {r: (1 - r) * general + r * domain for r in ratios}
    skipped = {r: "repeats a component more than proxy.max_epochs" for r, w in mixtures.items() if not ctx.trainable(w[None, :])[0]}
    if 0.0 in skipped:
        raise ConfigError("the cmr strategy's reference run (general data alone) needs more general tokens than proxy.max_epochs "
                          "allows at proxy.tokens: lower proxy.tokens")
    trained = [r for r in ratios if r not in skipped]
    rows = ctx.train([ctx.as_dict(mixtures[r]) for r in trained], [ctx.seed] * len(trained), "cmr", checkpoints=s.cmr_checkpoints)
    family = family_of(ctx)
    curves = {r: [(tokens, group_loss(m, ctx.components, general, family)) for tokens, m in ctx.cmr_inputs(row["run_id"])]
              for r, row in zip(trained, rows)}
    reference = dict(curves[0.0])
    points = [(tokens, r, loss - reference[tokens]) for r in trained if r > 0 for tokens, loss in curves[r] if tokens in reference]
    T, R, F = (np.array(v, dtype=float) for v in zip(*points)) if points else (np.zeros(0),) * 3
    law = fit_cmr(T, R, F)
    at, ref = max(reference), reference[max(reference)]
    ratio = law.critical_ratio(at, ref, s.cmr_tolerance, lowest, highest)
    interval = critical_ratio_interval(T, R, F, at, ref, s.cmr_tolerance, lowest, highest, ctx.seed)
    w = _clip(ctx.pinned(((1 - ratio) * general + ratio * domain)[None, :])[0], lo, hi, ctx)
    proposal = _proposal(ctx, "cmr", w, None, None, None, rows, iterations=[{"iteration": 1, "runs": len(rows)}])
    proposal.cmr = {"domain": s.cmr_domain, "ratio": ratio, "interval": interval, "law": law.to_dict(), "family": family,
                    "tolerance": s.cmr_tolerance, "tokens": at, "reference_general": ref, "lowest": lowest, "highest": highest,
                    "predicted_forgetting": float(law.forgetting(at, ratio)), "general_only": ctx.as_dict(general),
                    "points": [{"tokens": int(t), "ratio": r, "forgetting": f} for t, r, f in points],
                    "skipped_ratios": {str(r): why for r, why in skipped.items()}}
    return proposal


def verified_forgetting(cmr_record: dict, components: list[str], rows: dict[str, list[dict]]) -> dict:
    """What verify measured: the general loss of fresh proxies on the proposal and on general data
    alone (same seeds), the forgetting between them against what the tolerance allows."""
    general = np.array([cmr_record["general_only"].get(c, 0.0) for c in components])
    on = {name: float(np.mean([group_loss(r, components, general, cmr_record["family"]) for r in rows[name]]))
          for name in ("proposal", "general only")}
    forgetting, allowed = on["proposal"] - on["general only"], cmr_record["tolerance"] * on["general only"]
    return {"general_proposal": on["proposal"], "general_only": on["general only"], "forgetting": forgetting,
            "allowed": allowed, "within": bool(forgetting <= allowed), "predicted_forgetting": cmr_record["predicted_forgetting"]}
