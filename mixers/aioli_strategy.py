"""The aioli strategy (Aioli, Chen et al., ICLR'25): one proxy run that updates its mixture every
round from the mixing law it estimates online (proxy_training/aioli.py), starting from the prior
and kept within the search's pins, bounds and caps after every update.

The proposal is the schedule the run followed (one phase per round: exportable, one folder per
phase) and its average mixture; `mixforge search verify` trains fresh proxies on both. There is no
predictor: the proposal carries the online run's own final figure as what was observed, and its
cost (one run plus the probes' evaluations) in `online`.
"""

from __future__ import annotations

import numpy as np

from mixforge.errors import MixforgeError
from mixforge.mixers.context import Proposal, SearchContext
from mixforge.mixers.strategies import _clip, _proposal, phase_schedule


def aioli(ctx: SearchContext) -> Proposal:
    target = ctx.objective.held_out_metric("the aioli strategy measures its model")
    if ctx.aioli_inputs is None:
        raise MixforgeError("the aioli strategy trains on the workspace's tokens: run it through `mixforge search`")
    lo, hi = ctx.bounds()

    def project(w: np.ndarray) -> np.ndarray:
        return _clip(ctx.pinned(np.asarray(w, dtype=float)[None, :])[0], lo, hi, ctx)

    bounds = {"lowest": np.round(lo, 6).tolist(), "highest": np.round(hi, 6).tolist(), "max_epochs": ctx.max_epochs,
              "budget": ctx.budget}
    run = ctx.aioli_inputs(target, project(ctx.prior), project, bounds)
    blocks = np.array([[phase[c] for c in ctx.components] for phase in run["schedule"]])
    proposal = _proposal(ctx, "aioli", blocks.ravel(), None, None, None, [], iterations=run["rounds"],
                         schedule=phase_schedule(ctx, blocks))
    proposal.online = {"observed": run["final"][target], "tokens": run["tokens"], "flops": run["flops"],
                       "seconds": run["seconds"], "evaluations": run["evaluations"], "probe_steps": run["probe_steps"],
                       "realised_shares": run["realised_shares"], "base": run["base"]}
    return proposal
