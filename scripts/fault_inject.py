"""Fault injection: SIGKILL a mixforge command (its whole process group) at seeded random moments,
rerun it to completion, and check that its outputs are identical to an uninterrupted run's and
that nothing half-written ever looked complete.

    python scripts/fault_inject.py --commands build,grow,sweep,verify,export --trials 10 --seed 0 --workdir DIR

On the committed demo slice (tests/fixtures/slice/, 128 documents) with tiny proxies. First one
uninterrupted reference run per command, in its own copy of the state before it (grow is an
incremental build after files were added to every source; its result, or the reference build's
where grow is not run, is the state sweep, search verify and export start from), with its
duration D. Then per
trial: a fresh copy of that state, the command started in a new session, SIGKILL to its group at
a uniform moment in (0, D), checks of what the kill left, a rerun to completion, and a comparison
with the reference: kept documents (id, xxh3 of text), ledger, every published file (token
shards, export shards, stage records without their timings), runs table rows without wall time,
created_at and tokens/s. One line per trial, a summary table; exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "tests" / "fixtures" / "slice"
KINDS = {"bible": "prose", "quotes": "prose", "manuals": "reference", "legal": "reference",
         "dictionary": "reference", "python_docs": "reference", "man_pages": "reference", "code": "code"}
COMMANDS = ("build", "grow", "sweep", "verify", "export")
VOLATILE = {"finished_at", "seconds", "created_at", "wall_s", "tokens_per_s", "started", "finished", "mtime_ns"}  # timings: differ run to run
SKIP_PARTS = {"logs", ".prefect"}  # datatrove's per-task logs and stats hold timings
SKIP_SUFFIXES = {".png", ".pid", ".lock", ".log"}  # plots (not data a trainer reads), process records, locks, our logs


@dataclass
class Command:
    name: str
    argv: list[str]
    start: str  # the state it starts from: "empty", "built" or "searched"
    done_when: str | None = None  # a path whose presence means done: a rerun would refuse to redo it
    stale_ok: bool = False  # killed part-way, later stages are stale for the new input (an incremental build)


def commands(sweep_runs: int) -> dict[str, Command]:
    return {
        "build": Command("build", ["build", "mixforge.yaml"], "empty"),
        "grow": Command("grow", ["build", "mixforge.yaml"], "grown", stale_ok=True),
        "sweep": Command("sweep", ["proxy", "sweep", "mixforge.yaml", "--runs", str(sweep_runs)], "built"),
        "verify": Command("verify", ["search", "verify", "mixforge.yaml"], "searched"),
        "export": Command("export", ["export", "ws/search", "--config", "mixforge.yaml", "--out", "export"], "searched",
                          done_when="export"),
    }


def environment(workdir: Path, threads: int) -> dict[str, str]:
    # one torch/BLAS thread per process: on a 2-core machine shared with other jobs, spinning
    # thread pools made a proxy run 3x slower; the setting is the same for reference and trials
    return os.environ | {
        "PREFECT_HOME": str(workdir / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", "PREFECT_LOGGING_LEVEL": "WARNING",
        "MIXFORGE_PROGRESS": "0", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
    }


def write_config(folder: Path, data: Path, proxy_tokens: int = 2000, folders: bool = False) -> None:
    """Sources by absolute path (ingest's fingerprint names the files), so that a copied workspace
    is up to date in its new folder; the workspace is relative to the config. `folders`: each
    source is a folder `data/<label>/` (files can be added to it)."""
    cfg = {
        "workspace": "ws", "workers": 2,
        "sources": [{"path": str(data / (label if folders else f"{label}.jsonl")), "label": label, "kind": kind}
                    for label, kind in KINDS.items()],
        "cluster": {"n_components": 4},
        "proxy": {"tokens": proxy_tokens, "seq_len": 32, "batch_size": 8, "preset": "tiny", "vocab_size": 512,
                  "warmup_steps": 2, "lr": 3e-3, "task_items": 10},
        "search": {"runs": 4, "candidates": 1000, "verify_seeds": 1, "target": "bpb_mean"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mixforge.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def cli(folder: Path, argv: list[str], env: dict, timeout: float = 900) -> float:
    """Run one command to completion in `folder`; its seconds. Fails loudly with its output."""
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "mixforge.cli", *argv], cwd=folder, env=env, timeout=timeout,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"`mixforge {' '.join(argv)}` in {folder} exited {run.returncode}:\n{run.stderr[-3000:]}")
    return time.perf_counter() - t0


def copy_state(src: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, symlinks=True)
    return dest


# ------------------------------------------------------------------ what a run leaves


def _normalised(path: Path, root: Path) -> object:
    """A file's comparable content: JSON without timings, runs-table rows without timings, other
    files as sha256 of their bytes with the run's own folder written as <root>."""
    data = path.read_bytes()
    if path.suffix == ".json":
        parsed = _strip(json.loads(data.replace(str(root).encode(), b"<root>")))
        if path.name == "_stage.json":  # its inventory digests raw bytes (timings, paths): each file is compared itself
            parsed.pop("files", None)
        return parsed
    if path.suffix == ".parquet" and "runs" in path.relative_to(root).parts[:2]:
        import polars as pl

        rows = pl.read_parquet(path)
        return rows.drop([c for c in rows.columns if c in VOLATILE]).to_dicts()
    return hashlib.sha256(data.replace(str(root).encode(), b"<root>")).hexdigest()


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def outputs(root: Path, workspace: str = "ws") -> dict[str, object]:
    """Every published output under `root` (the workspace `root/workspace` and the export), by
    relative path, plus the kept documents as sorted (id, xxh3 of text)."""
    import polars as pl
    import xxhash

    out: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.name == "mixforge.yaml" or path.suffix in SKIP_SUFFIXES or SKIP_PARTS & set(rel.parts):
            continue
        out[str(rel)] = _normalised(path, root)
    docs = sorted((root / workspace / "prune" / "docs").glob("*.parquet"))
    frame = pl.concat([pl.read_parquet(f, columns=["id", "text"]) for f in docs]) if docs else None
    out["kept documents (id, xxh3 of text)"] = [] if frame is None else sorted(
        (i, xxhash.xxh3_64_hexdigest(t.encode())) for i, t in frame.iter_rows())
    return out


def differences(got: dict, want: dict, show: int = 6) -> list[str]:
    diffs = [f"missing {k}" for k in want if k not in got] + [f"extra {k}" for k in got if k not in want]
    for k in want:
        if k in got and got[k] != want[k]:
            diffs.append(f"differs {k}" + (f" ({len(got[k])} vs {len(want[k])} items)" if isinstance(got[k], list) else ""))
    return diffs[:show] + ([f"... and {len(diffs) - show} more"] if len(diffs) > show else [])


def leftovers(root: Path) -> list[str]:
    """Temporary state a finished command must not leave behind."""
    names = [p for p in root.rglob("*") if p.name.endswith(".partial") or ".partial-" in p.name or ".old-" in p.name
             or ".deleting-" in p.name or (p.name.startswith(".") and p.name.endswith(".tmp"))]
    return [f"left behind {p.relative_to(root)}" for p in names]


# ------------------------------------------------------------------ what a kill may leave


def after_kill(root: Path, env: dict, stale_ok: bool = False) -> list[str]:
    """Nothing may look complete that is not: every stage `status` calls done has a record, the
    ledger entry of its record and (for document stages) as many documents as the record says; a
    tokens record's shard digests match the shards; every runs-table row reads; an export folder
    that exists verifies."""
    import polars as pl

    from mixforge.digests import shard_digests
    from mixforge.pipelines.stages import DOCUMENT_STAGES

    problems = []
    run = subprocess.run([sys.executable, "-m", "mixforge.cli", "status", "mixforge.yaml", "--json"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        return [f"status failed: {run.stderr[-500:]}"]
    stages = json.loads(run.stdout)["stages"]
    ws = root / "ws"
    ledger = json.loads((ws / "ledger.json").read_text()) if (ws / "ledger.json").exists() else {}
    for stage, info in stages.items():
        if info["state"] == "stale" and not stale_ok:
            problems.append(f"{stage}: stale (the config did not change)")
        if info["state"] != "done":
            continue
        record = json.loads((ws / stage / "_stage.json").read_text())
        if stage in DOCUMENT_STAGES:
            docs = sorted((ws / stage / "docs").glob("*.parquet"))
            n = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in docs)
            if ledger.get(stage) != record["counts"]:
                problems.append(f"{stage}: done, but the ledger's entry is not its record's counts")
            if n != record["counts"].get("docs_out"):
                problems.append(f"{stage}: done with {record['counts'].get('docs_out')} documents recorded, {n} on disk")
        if stage == "tokens" and record["counts"].get("shard_digests") != shard_digests(ws / "tokens" / "extra"):
            problems.append("tokens: done, but its shards do not match the recorded digests")
    for row in sorted((ws / "runs").rglob("*.parquet")):
        try:
            pl.read_parquet(row)
        except Exception as e:  # a half-written row would be a torn write
            problems.append(f"{row.relative_to(root)} unreadable: {e}")
    if (root / "export").exists():
        check = subprocess.run([sys.executable, "-m", "mixforge.cli", "verify", "export"], cwd=root, env=env,
                               capture_output=True, text=True, timeout=300)
        if check.returncode != 0:
            problems.append(f"export exists but does not verify: {(check.stdout + check.stderr)[-500:]}")
    return problems


def phase(root: Path, rows_before: int) -> str:
    """Where the command was when it was killed, as far as its files tell."""
    ws = root / "ws"
    partial = sorted(p.name.removesuffix(".partial") for p in ws.glob("*.partial"))
    if partial:
        return "in " + ",".join(partial)
    if (root / "export").exists():
        return "export in place (no rerun)"
    if list(root.glob(".export.partial-*")):
        return "writing export"
    rows = len(list((ws / "runs" / "rows").glob("*.parquet"))) - rows_before
    return f"{rows} new run rows" if rows else "starting"


# ------------------------------------------------------------------ trials


STOP_GRACE = 60  # seconds a command may take to stop after SIGTERM or SIGINT


def kill_at(folder: Path, argv: list[str], env: dict, at: float, sig: signal.Signals = signal.SIGKILL) -> tuple[int | None, list[str], float | None]:
    """Start the command; `at` s later send `sig`: SIGKILL to its process group (a crash, the OOM
    killer), SIGTERM to its main process alone (`kill PID`), SIGINT to its group (Ctrl-C in a
    terminal). (None if it was still running, else its exit code; problems: a SIGTERM or SIGINT
    that did not stop it within STOP_GRACE s, or left processes of its session running; the
    seconds it took to exit after SIGTERM or SIGINT.)"""
    problems: list[str] = []
    stop_s = None
    with open(folder / "killed.log", "wb") as log:
        # Ctrl-C as in a terminal: a shell's background job (CI, nohup) starts with SIGINT ignored, and
        # an ignored signal stays ignored across exec, so the command would never see it
        proc = subprocess.Popen([sys.executable, "-m", "mixforge.cli", *argv], cwd=folder, env=env, stdout=log, stderr=log,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            return proc.wait(timeout=at), [], None
        except subprocess.TimeoutExpired:
            pass
        try:
            if sig != signal.SIGKILL:
                (os.kill if sig == signal.SIGTERM else os.killpg)(proc.pid, sig)
                t0 = time.perf_counter()
                try:
                    proc.wait(timeout=STOP_GRACE)
                    stop_s = time.perf_counter() - t0
                    time.sleep(2)  # workers that were told to stop get a moment to go
                    if left := session_members(proc.pid):
                        problems.append(f"{len(left)} processes left {time.perf_counter() - t0:.0f} s after {sig.name}: "
                                        + ", ".join(left[:5]))
                except subprocess.TimeoutExpired:
                    problems.append(f"still running {STOP_GRACE} s after {sig.name}")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: datatrove workers, Prefect's server, proxy workers
            except ProcessLookupError:
                pass
            proc.wait()
    return None, problems, stop_s


def session_members(sid: int) -> list[str]:
    """'<pid> <name>' of every live process in session `sid` (the command was its leader)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if int(rest[3]) == sid and rest[0] != "Z":  # field 6 (session), not a zombie
            found.append(f"{stat.parent.name} {name}")
    return found


def trial(cmd: Command, start: Path, ref: dict, at: float, folder: Path, env: dict, sig: signal.Signals = signal.SIGKILL) -> dict:
    copy_state(start, folder)
    before = set((start / "ws" / "runs" / "rows").glob("*.parquet"))
    code, problems, stop_s = kill_at(folder, cmd.argv, env, at, sig)
    killed = code is None
    where = phase(folder, len(before)) if killed else f"finished before the kill, exit {code}"
    if stop_s is not None:
        where += f", exited {stop_s:.1f} s after {sig.name}"
    problems += [f"after the kill: {p}" for p in after_kill(folder, env, cmd.stale_ok)] if killed else []
    if code:  # it failed on its own
        problems.append(f"exited {code} unkilled: {(folder / 'killed.log').read_text()[-1500:]}")
    t0 = time.perf_counter()
    if not (cmd.done_when and (folder / cmd.done_when).exists()):  # in place: after_kill verified it
        try:
            cli(folder, cmd.argv, env)
        except (RuntimeError, subprocess.TimeoutExpired) as e:  # reported with the trial; the next trials still run
            problems.append(f"the rerun failed: {str(e)[-1500:]}")
    rerun = time.perf_counter() - t0
    problems += differences(outputs(folder), ref) + leftovers(folder)
    return {"command": cmd.name, "at": at, "killed": killed, "phase": where, "rerun_s": rerun, "problems": problems}


def grown_start(workdir: Path, env: dict, proxy_tokens: int) -> Path:
    """The state an incremental build starts from: a workspace built from two thirds of each
    source's records (folders data_grow/<label>/part-000.jsonl), then the rest added as part-001."""
    data = workdir / "data_grow"
    shutil.rmtree(data, ignore_errors=True)
    rest = {}
    for label in KINDS:
        lines = (SLICE / f"{label}.jsonl").read_text().splitlines(keepends=True)
        cut = len(lines) * 2 // 3
        (data / label).mkdir(parents=True)
        (data / label / "part-000.jsonl").write_text("".join(lines[:cut]))
        rest[label] = lines[cut:]
    folder = workdir / "start" / "grown"
    shutil.rmtree(folder, ignore_errors=True)
    write_config(folder, data, proxy_tokens, folders=True)
    cli(folder, ["build", "mixforge.yaml"], env)
    for label, lines in rest.items():
        (data / label / "part-001.jsonl").write_text("".join(lines))
    return folder


def prepare(workdir: Path, names: list[str], cmds: dict[str, Command], env: dict, proxy_tokens: int) -> tuple[dict, dict, dict]:
    """The starting states, and each command's reference outputs and duration."""
    data = workdir / "data"
    if not data.exists():
        shutil.copytree(SLICE, data)
    starts = {"empty": workdir / "start" / "empty"}
    shutil.rmtree(starts["empty"], ignore_errors=True)
    write_config(starts["empty"], data, proxy_tokens)
    refs, durations = {}, {}

    def reference(name: str) -> Path:
        folder = copy_state(starts[cmds[name].start], workdir / "ref" / name)
        durations[name] = cli(folder, cmds[name].argv, env)
        refs[name] = outputs(folder)
        print(f"reference {name}: {durations[name]:.1f} s", flush=True)
        return folder

    if "grow" in names:
        starts["grown"] = grown_start(workdir, env, proxy_tokens)
        grown = reference("grow")
    # sweep, verify and export start from a built workspace: the incremental build's result when there
    # is one (a build from scratch would cost as much again), else a build from scratch
    starts["built"] = reference("build") if "build" in names or "grow" not in names else grown
    if {"verify", "export"} & set(names):
        starts["searched"] = copy_state(starts["built"], workdir / "start" / "searched")
        cli(starts["searched"], ["search", "mixforge.yaml"], env)
    for name in names:
        if name not in refs:
            reference(name)
    return starts, refs, durations


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", default=",".join(COMMANDS), help=f"comma-separated, of {', '.join(COMMANDS)}")
    ap.add_argument("--trials", type=int, default=10, help="kills per command")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--workdir", type=Path, required=True, help="scratch folder (reused: the slice copy, Prefect's home)")
    ap.add_argument("--sweep-runs", type=int, default=4, help="proxies in the sweep")
    ap.add_argument("--proxy-tokens", type=int, default=2000, help="training tokens per proxy (more: kills land in training more often)")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per process")
    ap.add_argument("--signal", choices=["KILL", "TERM", "INT"], default="KILL",
                    help="KILL: the process group (a crash); TERM: the main process (`kill PID`); INT: the group (Ctrl-C)")
    ap.add_argument("--keep", action="store_true", help="keep each trial's folder (default: delete it once it passed)")
    args = ap.parse_args()
    names = [n.strip() for n in args.commands.split(",") if n.strip()]
    if bad := [n for n in names if n not in COMMANDS]:
        ap.error(f"--commands: unknown {', '.join(bad)}; choose from {', '.join(COMMANDS)}")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env, cmds = environment(workdir, args.threads), commands(args.sweep_runs)
    starts, refs, durations = prepare(workdir, names, cmds, env, args.proxy_tokens)
    results = []
    for name in names:
        t0 = time.perf_counter()
        rng = random.Random(f"{args.seed}:{name}")  # a command's kill moments do not depend on the others
        for i in range(args.trials):
            at = rng.uniform(0, durations[name])
            folder = workdir / "trials" / f"{name}-{i}"
            r = trial(cmds[name], starts[cmds[name].start], refs[name], at, folder, env, signal.Signals[f"SIG{args.signal}"])
            r["trial"] = i
            results.append(r)
            verdict = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])
            print(f"{name:6} trial {i:2}: kill at {at:6.1f} s of {durations[name]:.1f} s ({r['phase']}), "
                  f"rerun {r['rerun_s']:.1f} s: {verdict}", flush=True)
            if not r["problems"] and not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        durations[f"{name} trials"] = time.perf_counter() - t0
    print(f"\n{'command':8} {'trials':>6} {'killed':>6} {'failures':>8} {'reference s':>11} {'trials s':>9}")
    for name in names:
        rs = [r for r in results if r["command"] == name]
        print(f"{name:8} {len(rs):>6} {sum(r['killed'] for r in rs):>6} {sum(bool(r['problems']) for r in rs):>8} "
              f"{durations[name]:>11.1f} {durations[name + ' trials']:>9.1f}")
    (workdir / "results.json").write_text(json.dumps({"durations": durations, "trials": results}, indent=2))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
