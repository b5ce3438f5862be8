"""What a search leaves for people: report.md with the proposal, the fit report and (after
verify) measured figures beside predicted ones, and PNG plots: predicted against actual
(out-of-fold) with its rank correlation, the proposed mixture against the natural one, search
progress per iteration, and verification results with their spread."""

from __future__ import annotations

from pathlib import Path

from mixforge.plots import pyplot, save_png
from mixforge.workspace import atomic_write_text


def plot_fit(path: Path, proposal: dict) -> None:
    plt = pyplot()
    pts, fit = proposal["fit_points"], proposal["fit"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(pts["actual"], pts["predicted"], s=18, alpha=0.75)
    lo, hi = min(pts["actual"] + pts["predicted"]), max(pts["actual"] + pts["predicted"])
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"measured {proposal['objective']}")
    ax.set_ylabel("predicted (out of fold)")
    ax.set_title(f"{fit['predictor']}, {fit['folds']}-fold CV: Spearman {fit['spearman']:.2f}, {fit['runs']} runs", fontsize=9)
    save_png(fig, path)


def plot_mixture(path: Path, proposal: dict) -> None:
    plt = pyplot()
    comps = list(proposal["weights"])
    series = [("natural", proposal["natural"]), ("proposal", proposal["weights"])]
    for phase in proposal.get("schedule") or []:
        series.append((f"phase {phase['start_fraction']:.0%}-{phase['end_fraction']:.0%}", phase["weights"]))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(comps) + 2), 3.6))
    width = 0.8 / len(series)
    for i, (name, w) in enumerate(series):
        ax.bar([j + i * width for j in range(len(comps))], [w.get(c, 0) for c in comps], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(comps))], comps, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("token share")
    ax.legend(fontsize=8)
    ax.set_title(f"{proposal['strategy']} proposal for {proposal['objective']}", fontsize=9)
    save_png(fig, path)


def plot_progress(path: Path, proposal: dict) -> None:
    plt = pyplot()
    its = [i for i in proposal["iterations"] if i.get("best_observed") is not None]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot([i["runs"] for i in its], [i["best_observed"] for i in its], marker="o", label="best measured run")
    if proposal.get("predicted") is not None:
        ax.axhline(proposal["predicted"], color="C1", ls="--", lw=1, label="proposal, predicted")
    ax.set_xlabel("proxy runs so far")
    ax.set_ylabel(proposal["objective"])
    ax.legend(fontsize=8)
    save_png(fig, path)


def plot_cmr(path: Path, proposal: dict) -> None:
    """The cmr law against its points: forgetting by domain share, one curve per token count."""
    import numpy as np

    from mixforge.mixers.cmr_law import CmrLaw

    plt, record = pyplot(), proposal["cmr"]
    law = CmrLaw(**record["law"])
    fig, ax = plt.subplots(figsize=(5, 3.8))
    grid = np.linspace(0.01, 1, 100)
    for i, tokens in enumerate(sorted({p["tokens"] for p in record["points"]})):
        pts = [p for p in record["points"] if p["tokens"] == tokens]
        ax.scatter([p["ratio"] for p in pts], [p["forgetting"] for p in pts], s=16, color=f"C{i}")
        ax.plot(grid, law.forgetting(tokens, grid), color=f"C{i}", lw=1, label=f"{tokens:,} tokens")
    ax.axhline(record["tolerance"] * record["reference_general"], color="grey", ls="--", lw=0.8, label="tolerance")
    ax.axvline(record["ratio"], color="k", lw=0.8, label=f"critical ratio {record['ratio']:.2f}")
    ax.set_xlabel("domain share")
    ax.set_ylabel(f"general {record['family']} lost vs general data alone")
    ax.legend(fontsize=7)
    save_png(fig, path)


def plot_verify(path: Path, verify: dict) -> None:
    plt = pyplot()
    names = list(verify["results"])
    res = verify["results"]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(names) + 1.5), 3.4))
    ax.bar(names, [res[n]["mean"] for n in names], yerr=[res[n]["std"] for n in names], capsize=4, label="measured")
    pred = [(i, res[n]["predicted"]) for i, n in enumerate(names) if res[n]["predicted"] is not None]
    if pred:
        ax.scatter([i for i, _ in pred], [p for _, p in pred], color="C1", zorder=3, label="predicted")
    values = [res[n]["mean"] for n in names] + [p for _, p in pred]
    span = max(values) - min(values) or abs(max(values)) * 0.05 or 1.0
    ax.set_ylim(min(values) - span, max(values) + span)
    ax.set_ylabel(verify["objective"])
    ax.set_title(f"fresh proxies, {verify['seeds']} seeds each (mean, std)", fontsize=9)
    ax.legend(fontsize=8)
    save_png(fig, path)


def constraint_lines(proposal: dict) -> list[str]:
    """What bounded the proposal (pins, shares, the target run's repetition cap) and what the
    same rule proposes without them, with the predicted cost of the constraints."""
    c, free = proposal.get("constraints"), proposal.get("unconstrained")
    if not c:
        return []
    lines = ["", "## Constraints", ""]
    if c.get("target_tokens"):
        lines.append(f"Target run: {c['target_tokens']:,} tokens, each component at most {c['max_epochs']:g} epochs of its tokens.")
    if c.get("pin"):
        lines.append("Pinned: " + ", ".join(f"{k} {v:.3f}" for k, v in c["pin"].items()) + ".")
    lines += ["", "| component | lowest | highest | proposal |" + (" unconstrained |" if free else ""),
              "|---|---:|---:|---:|" + ("---:|" if free else "")]
    for comp, w in proposal["weights"].items():
        lines.append(f"| {comp} | {c['lowest'][comp]:.3f} | {c['highest'][comp]:.3f} | {w:.3f} |"
                     + (f" {free['weights'][comp]:.3f} |" if free else ""))
    if free and proposal.get("predicted") is not None:
        sign = 1 if proposal["lower_is_better"] else -1
        cost = sign * (proposal["predicted"] - free["predicted"])
        lines += ["", f"Unconstrained optimum: predicted {free['predicted']:.4f}, largest share {free['largest_share']:.1%}"
                  f"{'' if free['feasible'] else ' (breaks the constraints)'}; the constraints cost {cost:+.4f} in predicted "
                  f"{proposal['objective']} (positive: the proposal is predicted worse). KL weight {proposal.get('kl_weight') or 0:.4g}."]
    return lines


def fidelity_lines(proposal: dict) -> list[str]:
    """bayesopt_mf: where the compute went and how the cheap fidelity's predictions map to the
    search proxy's units."""
    f = proposal.get("fidelity")
    if not f:
        return []
    cal = f["calibration"]
    agree = "" if cal["spearman"] is None else f", Spearman {cal['spearman']:.3f} between them"
    lines = ["", "## Multi-fidelity", "",
             f"{f['cheap_runs']} cheap runs ({', '.join(f'{k} {v}' for k, v in f['cheap_proxy'].items())}; {f['cheap_cost']:.3f} of a run's "
             f"FLOPs each) and {f['main_runs']} at the search's proxy: {f['cost_in_runs']:g} runs' worth of compute, "
             f"{f['cheap_share']:.0%} meant for the cheap fidelity. The predictor above was fitted on the cheap runs; "
             f"at the search's proxy, measured = {cal['rho']:.3f} x predicted {cal['offset']:+.4f}, plus a GP on what is left"
             f"{agree}. The proposal's predicted figure and interval are in the search proxy's units.", "",
             "| run at the search's proxy | cheap prediction | measured |", "|---|---:|---:|"]
    lines += [f"| {rid} | {p:.4f} | {m:.4f} |" for rid, p, m in zip(f["main_run_ids"], cal["cheap_predicted"], cal["main_measured"])]
    return lines


def trust_lines(fit: dict, components: int) -> str:
    """The fit report in words: the (nested) CV figures, auto's candidates, the interval, a warning."""
    from mixforge.mixers.model_choice import trust_warning

    name = f"auto (chose {fit['chosen']})" if fit["predictor"] == "auto" else fit["predictor"]
    nested = "nested " if fit["predictor"] == "auto" else ""
    text = (f"{name}, {fit['folds']}-fold {nested}cross-validation over {fit['runs']} runs: Spearman {fit['spearman']:.3f}, "
            f"Pearson {fit['pearson']:.3f}, Kendall {fit['kendall']:.3f}, MAE {fit['mae']:.4f}.")
    if fit.get("candidates"):
        text += " Candidates, out-of-fold Spearman: " + ", ".join(f"{c} {v['spearman']:.3f}" for c, v in fit["candidates"].items()) + "."
    if fit.get("interval") and fit["interval"]["half_width"] is not None:
        text += f" {fit['interval']['level']:.0%} prediction interval: +-{fit['interval']['half_width']:.4f} (conformal, out-of-fold residuals)."
    warning = trust_warning(fit, components)
    return text + (f"\n\n**Warning:** {warning}" if warning else "")


def observed_lines(proposal: dict) -> list[str]:
    """The proposal against the best observed feasible run, both predicted by the same model; why
    the proposal is that run's mixture, when it is."""
    best = proposal.get("best_observed")
    if not best:
        return []
    if proposal.get("fallback"):
        return ["", f"**Fallback:** {proposal['fallback']}: no candidate is predicted better than a run already measured."]
    same = f"Best observed feasible run {best['run_id']}: measured {best['measured']:.4f}, predicted {best['predicted']:.4f}"
    if best["chose"] != "proposal":
        return ["", f"{same}; the proposal is the {best['chose']}."]
    return ["", f"{same}; the proposal is predicted at least as good."]


def training_flops_line(flops: dict) -> str:
    """What a search trained, in FLOPs (proposal.evidence.flops), in one line."""
    parts = [f"runs {flops['runs']:.3g}"] + [f"{k} {flops[k]:.3g}" for k in ("base", "online") if flops.get(k)]
    earlier = "; the base was trained by an earlier search (not counted)" if flops.get("base_trained_earlier") else ""
    return f"training FLOPs: {flops['total']:.3g} ({', '.join(parts)}){earlier}"


def evidence_lines(proposal: dict) -> list[str]:
    """Runs trained, reused and carried from earlier builds, and what the carried ones did to the fit."""
    runs, fit = proposal.get("evidence"), (proposal.get("fit") or {}).get("evidence")
    if not runs:
        return []
    text = f"Proxy runs: {runs['trained']} trained, {runs['reused']} reused exactly, {runs['carried']} carried from earlier builds"
    if runs.get("remeasured"):
        text += f", {runs['remeasured']} measured on today's data with an earlier build's model (its tokens unchanged)"
    if runs.get("carried_from"):
        text += (f" ({', '.join(runs['carried_from'])}; on average {runs['carried_kept_share']:.0%} of their tokens' data "
                 f"kept unchanged), {runs['refresh_runs']} refresh runs")
    text += "."
    if runs.get("flops"):
        line = training_flops_line(runs["flops"])
        text += f" {line[0].upper()}{line[1:]}."
    if fit:
        without = fit["cv_spearman_without_carried"]
        text += (f" Cross-validated on today's {fit['fresh_runs']} runs: Spearman {fit['cv_spearman_with_carried']:.3f} with the "
                 f"carried runs, {'n/a' if without is None else f'{without:.3f}'} without; {fit['why']}.")
    skipped = runs.get("carried_skipped") or {}
    if skipped:
        text += " Not carried: " + "; ".join(f"{n} ({why})" for why, n in skipped.items()) + "."
    return ["", text]


def online_lines(proposal: dict) -> list[str]:
    """aioli: the online run's rounds (the target after each round's probes, the mixture it moved
    to, the component whose probe lowered the target most) and its cost."""
    run = proposal["online"]
    lines = ["", "## The online run", "",
             f"One run of {run['tokens']:,} tokens ({run['flops']:.3g} FLOPs, {run['seconds']:.0f} s), {run['evaluations']} "
             f"target evaluations; each round probed every component for {run['probe_steps']} step(s). Its own final "
             f"{proposal['objective']}: {run['observed']:.4f} (a model whose mixture changed as it trained: verify measures the "
             "schedule and its average with fresh proxies).", "",
             "| round | target after probes | largest drop per step | mixture after the round's update |", "|---:|---:|---|---|"]
    for it in proposal["iterations"]:
        drops = it["loss_drop_per_step"]
        best = max(drops, key=drops.get)
        mix = ", ".join(f"{c} {w:.2f}" for c, w in sorted(it["weights"].items(), key=lambda kv: -kv[1]) if w >= 0.01)
        lines.append(f"| {it['iteration']} | {it['target_after_probes']:.4f} | {best} {drops[best]:+.4f} | {mix} |")
    return lines


def cmr_lines(proposal: dict, verify: dict | None) -> list[str]:
    """cmr: the critical ratio with its interval, the law and, once verified, the forgetting measured."""
    r, law = proposal["cmr"], proposal["cmr"]["law"]
    span = (f" ({r['interval']['level']:.0%} interval {r['interval']['low']:.3f} to {r['interval']['high']:.3f}, "
            f"{r['interval']['resamples']} bootstrap refits)" if r["interval"]["low"] is not None else "")
    lines = ["", "## Critical mixture ratio", "",
             f"Domain components: {', '.join(r['domain'])}. The largest domain share whose predicted loss of general "
             f"{r['family']} stays within {r['tolerance']:.1%} of general data alone ({r['reference_general']:.4f}) at "
             f"{r['tokens']:,} tokens: **{r['ratio']:.3f}**{span}, allowed {r['lowest']:.3f} to {r['highest']:.3f}.", "",
             f"Law: forgetting = {law['k']:.4g} (T / {law['tokens_unit']:,.0f})^{law['a']:.3f} r^{law['b']:.3f}, fitted on "
             f"{law['points']} points that forgot (RMSE {law['rmse_log']:.3f} in log).", "", "![cmr law](cmr.png)"]
    if verify and verify.get("cmr"):
        v = verify["cmr"]
        lines += ["", f"Verified with fresh proxies: general {r['family']} {v['general_proposal']:.4f} on the proposal against "
                      f"{v['general_only']:.4f} on general data alone: {v['forgetting']:+.4f} lost (predicted "
                      f"{v['predicted_forgetting']:+.4f}), {'within' if v['within'] else 'beyond'} the {v['allowed']:.4f} allowed."]
    return lines


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"


def markdown(proposal: dict, verify: dict | None, stale: bool = False) -> str:
    better = "lower" if proposal["lower_is_better"] else "higher"
    lines = [f"# Mixture search: {proposal['strategy']}", "",
             f"Target: `{proposal['objective']}` ({better} is better). Seed {proposal['seed']}. "
             f"Proxy runs used: {len(proposal['runs_used'])}.", ""]
    if proposal["predicted"] is not None:
        interval = proposal.get("predicted_interval") or {}
        bounds = (f" ({interval['level']:.0%} interval {interval['low']:.4f} to {interval['high']:.4f})"
                  if interval.get("low") is not None else "")
        lines.append(f"Predicted {proposal['objective']} of the proposal: **{proposal['predicted']:.4f}**{bounds}.")
        if proposal["strategy"] == "merge":
            lines.append("That figure is the merged model's (the components' models averaged by the proposal's weights), "
                         "measured on the whole target: it ranks candidates; verify measures the mixture with fresh proxies.")
            lines += evidence_lines(proposal)
        lines += observed_lines(proposal)
    fit = proposal.get("fit")
    if fit:
        lines += ["", "## How far to trust the predictor", "", trust_lines(fit, len(proposal["weights"]))]
        lines += evidence_lines(proposal) + ["", "![predicted against measured](fit.png)"]
    lines += fidelity_lines(proposal)
    lines += ["", "## Proposed mixture", "", "| component | natural | proposal |", "|---|---:|---:|"]
    for c, w in proposal["weights"].items():
        lines.append(f"| {c} | {proposal['natural'][c]:.3f} | {w:.3f} |")
    lines += constraint_lines(proposal)
    if proposal.get("schedule"):
        lines += ["", "Multi-phase schedule (share of training tokens -> mixture):", ""]
        for ph in proposal["schedule"]:
            mix = ", ".join(f"{c} {w:.2f}" for c, w in ph["weights"].items() if w >= 0.01)
            lines.append(f"- {ph['start_fraction']:.0%} to {ph['end_fraction']:.0%}: {mix}")
    if proposal.get("online"):
        lines += online_lines(proposal)
    if proposal.get("cmr"):
        lines += cmr_lines(proposal, verify)
    lines += ["", "![proposal against natural shares](mixture.png)", "", "## Progress", "",
              "| iteration | runs | best measured | CV Spearman |", "|---:|---:|---:|---:|"]
    for it in proposal["iterations"]:
        lines.append(f"| {it['iteration']} | {it['runs']} | {_fmt(it.get('best_observed'))} | {_fmt(it.get('cv_spearman'))} |")
    lines += ["", "![progress](progress.png)", "", "## Verification (fresh proxies)", ""]
    if not verify and stale:
        lines.append("Not verified: this folder's verify.json measured an earlier proposal. "
                     "Run `mixforge search verify CONFIG` for this one.")
    elif not verify:
        lines.append("Not verified yet: run `mixforge search verify CONFIG`.")
    else:
        lines += [f"{verify['seeds']} fresh seed(s) per mixture, seeds no search run used.", ""]
        if verify.get("search_start"):
            lines += [f"The search's runs were trained from another starting point ({', '.join(verify['search_start'])}) than "
                      f"these ({verify['start']}): predictions are in their units, so no interval is compared.", ""]
        lines += ["| mixture | measured mean | std | predicted | interval | measured inside |", "|---|---:|---:|---:|---:|:---:|"]
        for name, r in verify["results"].items():
            interval = r.get("interval") or {}
            span = f"{interval['low']:.4f} to {interval['high']:.4f}" if interval.get("low") is not None else ""
            inside = {True: "yes", False: "no", None: ""}[r.get("inside")]
            lines.append(f"| {name} | {r['mean']:.4f} | {r['std']:.4f} | {_fmt(r['predicted'])} | {span} | {inside} |")
        for name, why in verify.get("skipped", {}).items():
            lines.append(f"| {name} | not trained: {why} | | | | |")
        if "gain_over_uniform" in verify:
            lines += ["", f"Measured gain of the proposal over uniform: {verify['gain_over_uniform']:+.4f} "
                          f"({better} is better)."]
        lines += ["", "![verification](verify.png)"]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, proposal: dict, verify: dict | None, stale: bool = False) -> None:
    """report.md and the PNGs. `verify` must be for this proposal (see current_verify); `stale`
    says a verify.json for another proposal is in the folder."""
    if proposal.get("fit_points"):
        plot_fit(folder / "fit.png", proposal)
    plot_mixture(folder / "mixture.png", proposal)
    if proposal.get("cmr"):
        plot_cmr(folder / "cmr.png", proposal)
    plot_progress(folder / "progress.png", proposal)
    if verify and verify["results"]:
        plot_verify(folder / "verify.png", verify)
    elif not verify:
        (folder / "verify.png").unlink(missing_ok=True)  # an earlier proposal's figures
    from mixforge.mixers.mixture_file import proposal_digest
    from mixforge.workspace import read_json

    digest = proposal_digest(proposal)
    sizes = [v for f in sorted(folder.glob("verify-*.json")) if (v := read_json(f)) and v.get("proposal_sha256") == digest]
    atomic_write_text(folder / "report.md", markdown(proposal, verify, stale) + "".join(size_lines(v) for v in sizes))


def size_lines(verify: dict) -> str:
    """A verification at another proxy preset, with the rank agreement between the sizes."""
    sizes = verify["sizes"]
    agreement = ("too few search runs to compare" if sizes["spearman"] is None else
                 f"Spearman {sizes['spearman']:.3f} between the two sizes on {sizes['mixtures']} of the search's mixtures, retrained")
    lines = ["", f"## At proxy preset {verify['preset']} (the search used {verify['search_preset']})", "", agreement + ".", "",
             "| mixture | measured mean | std |", "|---|---:|---:|"]
    lines += [f"| {name} | {r['mean']:.4f} | {r['std']:.4f} |" for name, r in verify["results"].items()]
    if "gain_over_uniform" in verify:
        lines += ["", f"Measured gain of the proposal over uniform at this size: {verify['gain_over_uniform']:+.4f}."]
    return "\n".join(lines) + "\n"
