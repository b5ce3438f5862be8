"""The merge strategy (Scalable Data Ablation, Na et al.): one proxy per component, continued from
the shared base on that component alone; a candidate mixture is scored by evaluating the
components' models merged by its weights (proxy_training/merge.py), not by training a proxy on it.

Any number of candidates then costs one evaluation each, and the training cost is one run per
component (plus the base), whatever the candidates. The candidates are the usual pool (pinned,
within the bounds and the caps) plus the components alone, the prior and the natural mixture;
each is scored on a seeded sample of the target's windows (`search.merge_eval_tokens` per text),
and the best MERGE_FINALISTS again on the whole target. The proposal's "predicted" figure is the
merged model's: a merged model is not a proxy trained on the mixture, so its figure is for ranking;
`mixforge search verify` measures the proposal with fresh proxies, as for every strategy.

The KL term towards the prior applies with a numeric `search.kl_weight`; `auto` sizes it by a
predictor's cross-validated error, which a measured merged model does not have, so it is 0 here.
"""

from __future__ import annotations

import numpy as np

from mixforge.errors import MixforgeError
from mixforge.mixers.context import Proposal, SearchContext
from mixforge.mixers.fitting import scores
from mixforge.mixers.strategies import _proposal, candidate_pool

MERGE_FINALISTS = 8


class MergedModels:
    """predict(W): the target measured on the models merged by each row of W (a `predictor` for
    `scores`), on `max_tokens` per text (0: the whole text)."""

    def __init__(self, ctx: SearchContext, evaluate, max_tokens: int):
        self.ctx, self.evaluate, self.max_tokens = ctx, evaluate, max_tokens

    def predict(self, W: np.ndarray) -> np.ndarray:
        return np.array(self.evaluate([self.ctx.as_dict(w) for w in np.atleast_2d(W)], self.max_tokens))


def merge(ctx: SearchContext) -> Proposal:
    s, target = ctx.settings, ctx.objective.held_out_metric("the merge strategy measures merged models")
    if ctx.merge_inputs is None:
        raise MixforgeError("the merge strategy needs the workspace's component models: run it through `mixforge search`")
    rows, evaluate = ctx.merge_inputs(target)
    k = len(ctx.components)
    extra = np.vstack([np.eye(k), ctx.prior[None, :], ctx.natural[None, :]])  # the components' own runs among them
    pool = candidate_pool(ctx, s.merge_candidates, np.random.default_rng([ctx.seed, 11]), extra)
    penalty = 0.0 if s.kl_weight == "auto" else float(s.kl_weight)
    sampled = scores(MergedModels(ctx, evaluate, s.merge_eval_tokens), pool, ctx, penalty)
    order = np.argsort(sampled, kind="stable")[:MERGE_FINALISTS]
    whole = MergedModels(ctx, evaluate, 0)
    final = scores(whole, pool[order], ctx, penalty)
    best = pool[order[int(np.argmin(final))]]
    measured = float(whole.predict(best)[0])
    iterations = [{"iteration": 1, "runs": len(rows), "candidates": len(pool), "eval_tokens_per_text": s.merge_eval_tokens,
                   "finalists": [{"weights": ctx.as_dict(pool[i]), "sampled": round(float(a), 6), "whole": round(float(b), 6)}
                                 for i, a, b in zip(order, sampled[order], final)]}]
    proposal = _proposal(ctx, "merge", best, None, None, None, list(rows.values()), iterations=iterations, kl_weight=penalty)
    proposal.predicted = measured  # the merged model's figure on the whole target
    return proposal
