"""What the commands print: the tables and summary lines of build, status, clusters, proxy runs,
search fits and proposals, exports and deployments. Each takes what a command got back from the
function it called and prints it; none computes anything the command did not."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from mixforge.cli.program import console
from mixforge.errors import first_few


def ledger_table(states: dict[str, str], ledger: dict) -> Table:
    table = Table(title="ledger: documents (characters)")
    for col in ("stage", "state", "in", "out", "removed", "chars in", "chars out", "chars trimmed"):
        table.add_column(col, justify="left" if col in ("stage", "state") else "right")
    for stage, state in states.items():
        row = ledger.get(stage)
        if row is None:
            table.add_row(stage, state, *[""] * 6)
            continue
        table.add_row(
            stage, state, f"{row['docs_in']:,}", f"{row['docs_out']:,}", f"{row['docs_removed']:,}",
            f"{row['chars_in']:,}", f"{row['chars_out']:,}", f"{row['chars_trimmed']:,}",
        )
    return table


def reasons_table(ledger: dict) -> Table:
    table = Table(title="removed, by reason (kept under removed/<reason>/)")
    for col in ("stage", "reason", "docs", "chars"):
        table.add_column(col, justify="left" if col in ("stage", "reason") else "right")
    for stage, row in ledger.items():
        for reason, v in sorted(row["removed"].items(), key=lambda kv: -kv[1]["docs"]):
            table.add_row(stage, reason, f"{v['docs']:,}", f"{v['chars']:,}")
    return table


def builds_table(builds: list[dict]) -> Table:
    from mixforge.pipelines.stages import STAGE_NAMES

    table = Table(title="builds: what each added")
    for col in ("build", "finished", "files +", "changed", "ingested", "kept", "stages run"):
        table.add_column(col, no_wrap=True)
    for b in builds:
        ledger = b.get("ledger") or {}
        stages = b.get("stages") or []
        table.add_row(b["id"], (b.get("finished") or "unfinished")[:16].replace("T", " "), str(len(b.get("sources_added") or [])),
                      str(len(b.get("sources_changed") or []) + len(b.get("sources_deleted") or [])),
                      str((ledger.get("ingest") or {}).get("docs_in", "-")), str((ledger.get("prune") or {}).get("docs_out", "-")),
                      "all" if stages == STAGE_NAMES else ",".join(stages) or "-")
    return table


def _sources_table(first_docs: Path, last_docs: Path) -> Table:
    from mixforge.ledger import docs_per_source

    before, after = docs_per_source(first_docs), docs_per_source(last_docs)
    table = Table(title="kept per source label")
    for col in ("source", "ingested", "kept", "kept %"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for label, n in sorted(before.items()):
        k = after.get(label, 0)
        table.add_row(label, f"{n:,}", f"{k:,}", f"{k / max(n, 1):.0%}")
    return table


def components_table(data: dict) -> Table:
    summary = data["summary"]
    title = f"{summary['components']} components from {summary['clusters']} clusters"
    agreement = summary.get("vs_source_labels")
    if agreement:
        title += f" (vs source labels: NMI {agreement['components']['nmi']:.2f}, purity {agreement['components']['purity']:.2f})"
    table = Table(title=title)
    for col in ("component", "docs", "tokens", "quality", "top terms", "sources"):
        table.add_column(col, justify="right" if col in ("docs", "tokens", "quality") else "left")
    for c in data["components"]:
        quality = "" if c["quality_mean"] is None else f"{c['quality_mean']:.2f}"
        top = sorted(c["sources"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]  # JSON keeps keys sorted by name
        sources = ", ".join(f"{k} {v}" for k, v in top)
        table.add_row(c["component"], f"{c['documents']:,}", f"{c['tokens']:,}", quality, " ".join(c["top_terms"][:5]), sources)
    return table


def print_summary(cfg, results) -> None:
    from mixforge.pipelines.components import load_components
    from mixforge.pipelines.stages import DOCUMENT_STAGES
    from mixforge.workspace import Workspace

    ws = Workspace(cfg.workspace_dir)
    out = Console()
    doc_results = [r for r in results if r.stage in DOCUMENT_STAGES]
    states = {r.stage: ("done" if r.status == "ran" else "unchanged") for r in doc_results}
    ledger = {r.stage: r.counts for r in doc_results}
    out.print(ledger_table(states, ledger))
    out.print(reasons_table(ledger))
    out.print(_sources_table(Path(doc_results[0].docs_dir), Path(doc_results[-1].docs_dir)))
    from mixforge.pipelines.filter import filter_warnings

    for line in filter_warnings(cfg) if any(r.stage == "filter" for r in results) else []:
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)  # a source filtering mostly removed
    if any(r.stage == "components" for r in results):
        out.print(components_table(load_components(ws)))
        out.print(f"cluster report: {ws.stage_dir('components') / 'extra' / 'report.md'}")
    first, last = doc_results[0].counts, doc_results[-1].counts
    kept = last["docs_out"]
    out.print(
        f"kept {kept:,} of {first['docs_in']:,} records ({kept / max(first['docs_in'], 1):.1%}), "
        f"{last['chars_out']:,} characters"
    )
    out.print(f"documents: {doc_results[-1].docs_dir}")
    out.print(f"removed (by reason): {ws.removed_dir}")
    out.print(f"ledger: {ws.ledger_path}")


def print_runs(rows: list[dict]) -> None:
    table = Table(title="proxy runs (held-out loss, nats/token)")
    for col in ("run", "mixture", "loss mean", "bits/byte", "tokens", "tokens/s", "wall s"):
        table.add_column(col, justify="left" if col in ("run", "mixture") else "right")
    for r in rows:
        mix = ", ".join(f"{k[2:]} {v:.2f}" for k, v in sorted(r.items()) if k.startswith("w_") and v > 0)
        table.add_row(r["run_id"], mix, f"{r['loss_mean']:.3f}", f"{r['bpb_mean']:.3f}", f"{r['tokens']:,}",
                      f"{r['tokens_per_s']:,.0f}", f"{r['wall_s']:.1f}")
    Console().print(table)


def print_schedule(schedule: list[dict]) -> None:
    table = Table(title="proposed schedule (share of training tokens)")
    table.add_column("component")
    for phase in schedule:
        table.add_column(f"{phase['start_fraction']:.0%}-{phase['end_fraction']:.0%}", justify="right")
    for c in schedule[0]["weights"]:
        table.add_row(c, *(f"{phase['weights'][c]:.3f}" for phase in schedule))
    Console().print(table)


def predictor_label(fit: dict) -> str:
    return f"auto (chose {fit['chosen']})" if fit["predictor"] == "auto" else fit["predictor"]


def print_fit(fit: dict, title: str) -> None:
    """The fit report: CV (nested for auto), held-out runs, and auto's candidates."""
    table = Table(title=title)
    for col in ("check", "runs", "Spearman", "Pearson", "Kendall", "MAE"):
        table.add_column(col, justify="left" if col == "check" else "right")
    cv = f"{fit['folds']}-fold {'nested ' if fit['predictor'] == 'auto' else ''}CV"
    table.add_row(cv, str(fit["runs"]), *(f"{fit[k]:.3f}" for k in ("spearman", "pearson", "kendall", "mae")))
    if fit["eval"]:
        e = fit["eval"]
        table.add_row("held-out runs", str(e["runs"]), *(f"{e[k]:.3f}" for k in ("spearman", "pearson", "kendall", "mae")))
    Console().print(table)
    if fit["candidates"]:
        Console().print("candidates (out-of-fold Spearman): " + ", ".join(
            f"{'[bold]' if c == fit['chosen'] else ''}{c} {v['spearman']:.3f}{'[/]' if c == fit['chosen'] else ''}"
            for c, v in fit["candidates"].items()))
    if fit["eval"] and "regret" in fit["eval"]:
        e = fit["eval"]
        Console().print("held-out: " + ", ".join(f"best of predicted {k} is {v:.4g} worse than the true best" for k, v in e["regret"].items())
                        + (f"; {e['coverage']:.0%} inside the {fit['interval']['level']:.0%} interval" if "coverage" in e else ""))


def print_mixture(reference: dict, proposal: dict, reference_name: str) -> None:
    table = Table(title="proposed mixture")
    for col in ("component", reference_name, "proposal"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for c, w in proposal.items():
        table.add_row(c, f"{reference[c]:.3f}", f"{w:.3f}")
    Console().print(table)


def print_proposal(proposal: dict, verify: Optional[dict]) -> None:
    from mixforge.mixers.model_choice import trust_warning

    out = Console()
    print_mixture(proposal["natural"], proposal["weights"], "natural")
    if proposal.get("schedule"):
        print_schedule(proposal["schedule"])
    runs = proposal.get("evidence")
    if runs:
        out.print(f"proxy runs: {runs['trained']} trained, {runs['reused']} reused exactly, {runs['carried']} carried from "
                  f"earlier builds" + (f" ({', '.join(runs['carried_from'])})" if runs.get("carried_from") else "")
                  + (f", {runs['remeasured']} measured with an earlier build's model" if runs.get("remeasured") else ""))
        if runs.get("flops"):
            from mixforge.mixers.report import training_flops_line

            out.print(training_flops_line(runs["flops"]))
    fit = proposal.get("fit")
    if fit:
        out.print(f"predictor {predictor_label(fit)}: {fit['folds']}-fold CV Spearman {fit['spearman']:.3f} over {fit['runs']} runs")
        carried = fit.get("evidence")
        if carried:
            out.print(f"carried runs: CV Spearman {carried['cv_spearman_with_carried']:.3f} with, "
                      + ("n/a" if carried["cv_spearman_without_carried"] is None else f"{carried['cv_spearman_without_carried']:.3f}")
                      + f" without: {carried['why']}")
        warning = trust_warning(fit, len(proposal["weights"]))
        if warning:
            out.print(f"[bold yellow]warning:[/] {warning}")
    fidelity = proposal.get("fidelity")
    if fidelity:
        cal = fidelity["calibration"]
        out.print(f"multi-fidelity: {fidelity['cheap_runs']} cheap runs ({fidelity['cheap_cost']:.3f} of a run each) + "
                  f"{fidelity['main_runs']} at the search's proxy = {fidelity['cost_in_runs']:g} runs' compute; "
                  f"measured = {cal['rho']:.3f} x cheap prediction {cal['offset']:+.4f}; predictions are in the search proxy's units")
    if proposal.get("fallback"):
        out.print(f"[bold]fallback:[/] {proposal['fallback']}")
    free = proposal.get("unconstrained")
    if free and proposal.get("predicted") is not None:
        out.print(f"without pins, bounds and repetition caps: largest share {free['largest_share']:.1%} (proposal "
                  f"{max(proposal['weights'].values()):.1%}), predicted {free['predicted']:.4f} (proposal {proposal['predicted']:.4f})")
    table = Table(title=f"{proposal['objective']} ({'lower' if proposal['lower_is_better'] else 'higher'} is better)")
    for col in ("mixture", "predicted", "measured mean", "std", "seeds", "inside interval"):
        table.add_column(col, justify="left" if col == "mixture" else "right")
    if verify:
        for name, r in verify["results"].items():
            pred = "" if r["predicted"] is None else f"{r['predicted']:.4f}"
            inside = {True: "yes", False: "no", None: ""}[r.get("inside")]
            table.add_row(name, pred, f"{r['mean']:.4f}", f"{r['std']:.4f}", str(len(r["measured"])), inside)
        for name, why in verify.get("skipped", {}).items():
            table.add_row(name, "", f"not trained: {why}", "", "", "")
    else:
        pred = "" if proposal["predicted"] is None else f"{proposal['predicted']:.4f}"
        table.add_row("proposal", pred, "not verified yet", "", "", "")
    out.print(table)


def print_export(m: dict, out: Path | str) -> None:
    """One mixture's export: its components and where its shards and trainer files are."""
    from mixforge.pipelines.export.manifest import trainer_files

    table = Table(title=f"export {m['mixture_id']}: {m['format']}, {m['mode']}")
    for col in ("component", "weight", "share", "tokens", "documents", "epochs"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for c, s in m["components"].items():
        table.add_row(c, f"{s['weight']:.3f}", f"{s['share']:.3f}", f"{s['tokens']:,}", f"{s['documents']:,}", f"{s['epochs']:.2f}")
    Console().print(table)
    Console().print(f"{m['tokens']:,} tokens in {len(m['shards'])} shard(s): {out} (manifest.json, README.md, trainer/)",
                    soft_wrap=True)  # paths stay whole for copying
    loaders = sorted(trainer_files(m))
    Console().print("trainer fragments and loaders: " + ", ".join(f"trainer/{n}" for n in loaders), soft_wrap=True)


def print_schedule_export(record: dict, out: Path) -> None:
    """A schedule's export: its phase folders in training order."""
    table = Table(title=f"schedule export: {len(record['phases'])} phases, {record['format']}")
    for col in ("phase", "folder", "training share", "tokens", "mixture"):
        table.add_column(col, justify="left" if col in ("folder", "mixture") else "right")
    for ph in record["phases"]:
        table.add_row(str(ph["phase"]), ph["folder"], f"{ph['start_fraction']:.0%}-{ph['end_fraction']:.0%}",
                      f"{ph['tokens']:,}", ph["mixture_id"])
    Console().print(table)
    Console().print(f"{record['tokens']:,} tokens: {out} (schedule.json names the phases in order)", soft_wrap=True)


def print_deployments(rows: list[dict], flow_name: str, url: str) -> None:
    table = Table(title=f"deployments of {flow_name} on {url}")
    for col in ("name", "schedule", "runs on", "last run", "state", "next run", "config"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table if rows else f"no deployments of {flow_name} on {url}", highlight=False)


def print_status(root: Path, states: dict, ledger: dict, damage: dict, builds: list[dict], runs: dict, warnings: list[str],
                 config: Path) -> None:
    """`mixforge status`: the ledger, damaged stages, removals, builds, stale proxy runs, warnings."""
    out = Console()
    out.print(f"workspace: {root}")
    out.print(ledger_table(states, ledger))
    for stage, problems in damage.items():
        console.print(f"[bold red]damaged:[/] {first_few(problems)}: "
                      f"`mixforge build {config}` redoes {stage} and the stages after it", highlight=False)
    if ledger:
        out.print(reasons_table(ledger))
    if len(builds) > 1:
        out.print(builds_table(builds))
    if runs["stale"]:
        console.print(f"[bold yellow]note:[/] {runs['stale']} of {runs['total']} proxy runs were trained on data a later build changed: "
                      "they are not reused as results; a regmix search carries them over today's components as evidence "
                      "and trains only search.refresh_runs new runs", highlight=False)
    for line in warnings:
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)


def print_filter_preview(p: dict) -> None:
    """One source's filter preview: what each reason would remove, with examples."""
    table = Table(title=f"sources[{p['index']}] {p['source']} (kind {p['kind']}): {p['kept']} of {p['sample']} sampled records kept")
    for col in ("reason", "docs", "share", "examples"):
        table.add_column(col, justify="right" if col in ("docs", "share") else "left", overflow="fold")
    for r in p["reasons"]:
        table.add_row(r["reason"], str(r["documents"]), f"{r['share']:.0%}", "\n".join(r["examples"]))
    Console().print(table)


def print_table_fit(out: dict) -> None:
    """`search fit`: the fit report, the proposal (and schedule), the predicted value and notes."""
    fit = out["fit"]
    stdout = Console()
    for note in out["notes"]:
        stdout.print(f"note: {note}")
    print_fit(fit, f"{out['target']}: {predictor_label(fit)} on {out['runs']} runs")
    print_mixture(out["prior"], out["proposal"], "runs' mean mixture")
    if out["schedule"]:
        print_schedule(out["schedule"])
    interval = out["predicted_interval"]
    bounds = (f"{interval['level']:.0%} interval {interval['low']:.4f} to {interval['high']:.4f}" if interval["low"] is not None
              else "too few runs for an interval")
    stdout.print(f"predicted {out['target']} of the proposal: {out['predicted']:.4f} ({bounds}); best observed run "
                 f"{out['best_observed']['run_id']}: {out['best_observed']['value']:.4f} (predicted {out['best_observed']['predicted']:.4f})")
    if out["fallback"]:
        stdout.print(f"[bold]fallback:[/] {out['fallback']}")
    if out["warning"]:
        stdout.print(f"[bold yellow]warning:[/] {out['warning']}")
