"""One proxy run end to end: mixture -> sampler -> train -> evaluate on every component's
held-out text, the user's eval texts and tasks -> a row in the runs table. Plain Python; the CLI
and the sweep flow call it."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from mixforge import __version__
from mixforge.config import MixforgeConfig
from mixforge.errors import ConfigError, MixforgeError
from mixforge.mixture import equal_ends, phase_ends as phase_ends_of
from mixforge.proxy_training.runs_table import (RunsTable, checked_tokens_summary, data_fingerprint, run_freshness,  # noqa: F401 (re-exported)
                                         tokens_summary)
from mixforge.proxy_training.data import MixtureSampler, check_weights, load_shards
from mixforge.proxy_training.evaluate import bits_per_byte, choice_accuracy, heldout_loss
from mixforge.proxy_training.model import GPT, preset
from mixforge.pipelines.content import cell_tokens, centroid_identity, run_content
from mixforge.pipelines.outputs import next_line_file, tokenizer_file, tokens_dir
from mixforge.pipelines.tokens import load_task, load_tokenizer
from mixforge.proxy_training.base import RUN_SETTINGS, Base, starting_point
from mixforge.proxy_training.batched import group_size, train_many
from mixforge.proxy_training.train import ProxyResult, TrainConfig, read_checkpoint, resolve_device, train
from mixforge.proxy_training.train import checkpoints as saved_checkpoints
from mixforge.workspace import Workspace, read_json


def tasks(cfg: MixforgeConfig, ws: Workspace) -> dict[str, list[dict]]:
    """The built-in next-line task (from held-out text) plus the user's `proxy.tasks` files."""
    out = {}
    built_in = next_line_file(ws)
    for path in ([built_in] if built_in.exists() else []) + [cfg.resolve(t) for t in cfg.proxy.tasks]:
        if not path.exists():
            raise MixforgeError(f"proxy.tasks: {path} not found")
        items = load_task(path)
        if items:
            out[path.name.split(".")[0]] = items
    return out


def encoder(ws: Workspace):
    tok = load_tokenizer(tokenizer_file(ws))
    return lambda text: tok.encode(text, add_special_tokens=False).ids



def run_flops(cfg: MixforgeConfig, vocab_size: int, tokens: int | None = None) -> int:
    """Training FLOPs of one proxy run at cfg.proxy's settings: FLOPs per token x tokens
    (proxy.tokens unless given; the model is built on the meta device: shapes only, no memory)."""
    import torch

    from mixforge.proxy_training.model import GPT

    with torch.device("meta"):
        model = GPT(preset(cfg.proxy.preset, vocab_size=vocab_size, block_size=cfg.proxy.seq_len))
    return model.flops_per_token() * (cfg.proxy.tokens if tokens is None else tokens)


def checkpoint_dir(ws: Workspace, run_id: str):
    return ws.root / "runs" / "checkpoints" / run_id


def heldout_metrics(model, folder, byte_counts: dict[str, int], seq_len: int, max_tokens: int = 0,
                    seed: int = 0, names: set[str] | None = None) -> dict[str, float]:
    """loss_<name> and bpb_<name> for every held-out token stream in `folder` long enough to measure,
    with scored_tokens_<name> and scored_bytes_<name>: what the figures cover (every text token
    unless `max_tokens` caps it; capped bytes are the text's bytes in proportion); `names`: those texts only."""
    if not folder.is_dir():
        return {}
    out = {}
    for name, tokens in sorted(load_shards(folder).items()):
        if len(tokens) <= seq_len or (names is not None and name not in names):
            continue  # too little held-out text to measure
        eos = (read_json(folder / f"{name}.json") or {}).get("eos_id")
        text_tokens = len(tokens) - (int(np.count_nonzero(np.asarray(tokens) == eos)) if eos is not None else 0)
        loss, scored = heldout_loss(model, tokens, seq_len, eos_id=eos, max_tokens=max_tokens, seed=seed)
        out[f"loss_{name}"], out[f"bpb_{name}"] = loss, bits_per_byte(loss, text_tokens, byte_counts[name])
        out[f"scored_tokens_{name}"] = scored
        out[f"scored_bytes_{name}"] = (byte_counts[name] if scored == text_tokens
                                       else round(byte_counts[name] * scored / text_tokens))
    return out


def heldout_means(held: dict[str, float]) -> dict[str, float]:
    """loss_mean and bpb_mean: the means over the components' held-out texts (per model, where
    the figures are a `ModelStack`'s arrays)."""
    out = {}
    for kind in ("loss", "bpb"):
        mean = np.mean([v for k, v in held.items() if k.startswith(f"{kind}_")], axis=0)
        out[f"{kind}_mean"] = float(mean) if np.ndim(mean) == 0 else mean
    return out


def text_metrics(model, folder, summary: dict, seq_len: int, max_tokens: int, seed: int, text: str | None = None) -> dict:
    """A model's figures as a run's row has them: every component's held-out text with their means
    (loss_mean, bpb_mean), then every eval text; or one `text` (a component, an eval text, or
    `mean`: the held-out texts and their means). `folder`: the tokens stage's extra folder."""
    held = {c: v["heldout_bytes"] for c, v in summary["components"].items()}
    evals = {n: v["bytes"] for n, v in summary.get("eval_texts", {}).items()}
    out: dict = {}
    if text is None or text == "mean" or text in held:
        names = None if text in (None, "mean") else {text}
        out.update(heldout_metrics(model, folder / "heldout", held, seq_len, max_tokens, seed, names))
        if names is None:
            out.update(heldout_means(out))
    if text is None or text in evals:
        out.update(heldout_metrics(model, folder / "eval", evals, seq_len, max_tokens, seed, None if text is None else {text}))
    return out


def run_id_for(cfg: MixforgeConfig, weights: dict[str, float] | list[dict[str, float]], seed: int, tokenizer_sha: str,
               data: str, phase_ends: list[float] | None = None, base_id: str | None = None) -> str:
    """Stable id of a run: the same mixture (or multi-phase schedule and its `phase_ends`), settings,
    seed, tokenizer and data (`data_fingerprint`) give the same id, so a sweep rerun finds it done;
    other data, other id. Equal phases leave the ends out of the key (the ids runs had before ends);
    runs from scratch leave the base out (the ids runs had before bases)."""
    p = cfg.proxy
    mixture = ([sorted((k, round(v, 6)) for k, v in ph.items()) for ph in weights] if isinstance(weights, list)
               else sorted((k, round(v, 6)) for k, v in weights.items()))
    parts = [mixture, seed, tokenizer_sha, p.model_dump(include=RUN_SETTINGS), data]
    if isinstance(weights, list) and phase_ends is not None and not equal_ends(phase_ends):
        parts.append([round(e, 6) for e in phase_ends])
    if base_id is not None:
        parts.append({"base": base_id})
    key = json.dumps(parts)
    return "r" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class _Run:
    """One run of a config: found finished (`row`) or ready to train."""

    run_id: str
    seed: int
    weights: dict | list  # a mixture, or a multi-phase schedule
    phases: list | None
    phase_ends: list | None = None  # where each phase of `phases` ends, as a share of training
    row: dict | None = None
    sampler: MixtureSampler | None = None
    steps: int = 0
    model_cfg: object = None
    train_cfg: TrainConfig | None = None
    data: str = ""  # data_fingerprint of the tokens it trained and was measured on
    content: str | None = None  # its cell shares (pipelines/content.py), None where the workspace cannot say
    base: Base | None = None  # where it starts (proxy.init), None: from scratch


def schedule_ends(cfg: MixforgeConfig, phases: int, ends: list[float] | None = None) -> list[float]:
    """Where the phases of a schedule of `phases` end: `ends` (a schedule file's own), else
    search.phase_ends, else equal phases."""
    if ends is None and cfg.search.phase_ends is not None and len(cfg.search.phase_ends) != phases:
        raise ConfigError(f"search.phase_ends {cfg.search.phase_ends} ends {len(cfg.search.phase_ends)} phases; this schedule "
                          f"has {phases}: set search.phase_ends to one end per phase (or null for equal phases)")
    return phase_ends_of(ends if ends is not None else cfg.search.phase_ends, phases)


def checkpoint_steps(cfg: MixforgeConfig, checkpoints: int, steps: int) -> tuple[int, ...]:
    """Where `checkpoints` checkpoints go when they mark the ends of search.phase_ends' unequal
    phases (influence's phases): at those shares of the steps. Empty otherwise (evenly spaced)."""
    ends = cfg.search.phase_ends
    if checkpoints < 2 or not ends or len(ends) != checkpoints or equal_ends(ends):
        return ()
    return tuple(sorted({max(1, min(steps, round(end * steps))) for end in ends}))


def content_basis(ws: Workspace, data: str) -> tuple | None:
    """(cells, centroids, build) that `run_content` describes a run of this workspace's tokens with."""
    cells = cell_tokens(ws, data)
    if cells is None:
        return None
    layers = (ws.stage_record("tokens") or {}).get("layers") or [{}]
    return cells, centroid_identity(ws), layers[-1].get("id")


def _prepare(cfg: MixforgeConfig, ws: Workspace, summary: dict, shards: dict, data: str, weights, seed: int | None,
             run_id: str | None, checkpoints: int, phase_ends: list[float] | None = None, *, basis: tuple | None = None,
             base: Base | None = None) -> _Run:
    p, seed = cfg.proxy, cfg.seed if seed is None else seed
    phases = [check_weights(w, sorted(shards)) for w in weights] if isinstance(weights, list) and len(weights) > 1 else None
    weights = phases or check_weights(weights[0] if isinstance(weights, list) else weights, sorted(shards))
    ends = schedule_ends(cfg, len(phases), phase_ends) if phases else None
    table = RunsTable(ws)
    run_id = run_id or run_id_for(cfg, weights, seed, summary["tokenizer"]["sha256"], data, ends, base and base.base_id)
    if table.has(run_id) and not (checkpoints and not saved_checkpoints(checkpoint_dir(ws, run_id))):
        return _Run(run_id, seed, weights, phases, ends, row=table.load().filter(run_id=run_id).row(0, named=True))
    sampler = MixtureSampler(shards, weights, p.seq_len, p.tokens, seed, max_epochs=p.max_epochs, phase_ends=ends)
    steps = -(-len(sampler) // p.batch_size)
    model_cfg = preset(p.preset, vocab_size=summary["tokenizer"]["vocab_size"], block_size=p.seq_len)
    at = checkpoint_steps(cfg, checkpoints, steps)
    train_cfg = TrainConfig(lr=p.lr, warmup_steps=min(p.warmup_steps, max(steps // 10, 1)), schedule=p.schedule,
                            seed=seed, device=p.device, checkpoint_at=at,
                            checkpoint_every=0 if at else -(-steps // checkpoints) if checkpoints else p.checkpoint_every)
    return _Run(run_id, seed, weights, phases, ends, sampler=sampler, steps=steps, model_cfg=model_cfg, train_cfg=train_cfg, data=data,
                content=None if basis is None else run_content(basis[0], phases or [weights], basis[1], basis[2]), base=base)


def _record(cfg: MixforgeConfig, ws: Workspace, summary: dict, run: _Run, model, result, train_s: float,
            trained_by: str | None = None, record: bool = True) -> dict:
    """Evaluate a trained proxy and append its row (unless not `record`: a Ray task's row, which
    the driver appends); wall_s is `train_s` plus the evaluation."""
    p, folder, t0 = cfg.proxy, tokens_dir(ws), time.perf_counter()
    row: dict = {"run_id": run.run_id}
    row.update({f"w_{c}": float(w) for c, w in sorted(run.sampler.weights.items())})
    if run.phases:
        row["phases"] = json.dumps(run.phases)
        if not equal_ends(run.phase_ends):  # equal phases: rows as they were
            row["phase_ends"] = json.dumps(run.phase_ends)
    if run.base is not None:  # runs from scratch: rows as they were
        row["base"] = run.base.base_id
    if trained_by is not None:  # its model is an earlier run's (`remeasured`)
        row["trained_by"] = trained_by
    row.update(text_metrics(model, folder, summary, p.seq_len, p.eval_max_tokens, run.seed))
    task_items = tasks(cfg, ws)
    encode = encoder(ws) if task_items else None  # the tokenizer is loaded once for every task
    for name, items in task_items.items():
        row[f"acc_{name}"] = choice_accuracy(model, encode, items[: p.task_items], max_len=p.seq_len)
    row.update({
        "train_loss": result.final_loss, "tokens": result.tokens, "steps": result.steps,
        "max_epochs_used": max(run.sampler.epochs.values()), "preset": p.preset,
        "non_embedding_params": result.non_embedding_params, "seq_len": p.seq_len, "batch_size": p.batch_size,
        "lr": p.lr, "schedule": p.schedule, "seed": run.seed, "tokenizer": summary["tokenizer"]["source"],
        "tokenizer_sha256": summary["tokenizer"]["sha256"], "wall_s": round(train_s + time.perf_counter() - t0, 2),
        "tokens_per_s": result.tokens_per_s, "device": result.device, "mixforge_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "data": run.data, "content": run.content,
    })
    if record:
        RunsTable(ws).append(row)
    return row


def run_proxy(cfg: MixforgeConfig, weights: dict[str, float] | list[dict[str, float]], seed: int | None = None,
              run_id: str | None = None, progress=None, checkpoints: int = 0, phase_ends: list[float] | None = None,
              base: Base | None = None, record: bool = True) -> dict:
    """Train one proxy on `weights` (over the components; a list is a multi-phase schedule, one
    mixture per phase, the phases ending at `phase_ends` of training (default: search.phase_ends,
    else equal phases), recorded in the row's `phases` (and `phase_ends` when unequal) with its
    overall token shares as the w_ columns) and record it; returns its row.
    A run id already in the table is not retrained: its row is returned. `checkpoints` > 0 saves
    that many evenly spaced checkpoints (the last at the end) under runs/checkpoints/<run_id>/;
    a finished run that lacks them is trained again to make them. `base`: where it starts, when not
    the config's `starting_point` (the merge's kept base). `record=False`: the row is returned, not
    written (a Ray worker's: the driver writes the table)."""
    ws = Workspace(cfg.workspace_dir)
    summary = checked_tokens_summary(ws)
    shards = load_shards(tokens_dir(ws) / "train")
    data = data_fingerprint(cfg, ws)  # named runs too: the row says what it trained on (freshness, carrying)
    if base is None and cfg.proxy.init != "scratch":
        base = starting_point(cfg, ws, summary, shards, data)
    run = _prepare(cfg, ws, summary, shards, data, weights, seed, run_id, checkpoints, phase_ends, basis=content_basis(ws, data),
                   base=base)
    if run.row is not None:
        return run.row
    ckpt_dir = checkpoint_dir(ws, run.run_id)
    init_state = base.state() if base else None  # before the clock: the base is trained once, not by this run
    t0 = time.perf_counter()
    model, result = train(run.model_cfg, run.train_cfg, run.sampler.batches(cfg.proxy.batch_size), run.steps, progress,
                          checkpoint_dir=ckpt_dir if run.train_cfg.checkpoint_every or run.train_cfg.checkpoint_at else None,
                          init_state=init_state)
    return _record(cfg, ws, summary, run, model, result, time.perf_counter() - t0, record=record)


def remeasured(cfg: MixforgeConfig, weights: dict[str, float], base: Base, trained_by: str) -> dict:
    """The row of the run of `weights` from `base` on the data of today, whose model is the one run
    `trained_by` left (an earlier build's run on the same training tokens, seed, settings and base:
    the same batches, so the same weights): its last checkpoint measured on today's held-out texts,
    evals and tasks, not trained again. Its row says so (`trained_by`); a run already in the table
    is returned."""
    ws = Workspace(cfg.workspace_dir)
    summary, shards, data = checked_tokens_summary(ws), load_shards(tokens_dir(ws) / "train"), data_fingerprint(cfg, ws)
    run = _prepare(cfg, ws, summary, shards, data, weights, None, None, 0, basis=content_basis(ws, data), base=base)
    if run.row is not None:
        return run.row
    earlier = RunsTable(ws).load().filter(run_id=trained_by).row(0, named=True)
    state = read_checkpoint(saved_checkpoints(checkpoint_dir(ws, trained_by))[-1])
    model = GPT(run.model_cfg)
    model.load_state_dict(state["model"])
    result = ProxyResult(steps=earlier["steps"], tokens=earlier["tokens"], final_loss=earlier["train_loss"],
                         tokens_per_s=earlier["tokens_per_s"], device=earlier["device"],
                         non_embedding_params=earlier["non_embedding_params"])
    return _record(cfg, ws, summary, run, model, result, 0.0, trained_by=trained_by)


def ready_base(cfg: MixforgeConfig) -> str | None:
    """The shared base of this config's runs trained (or found) now, before a sweep fans out to
    worker processes that then only read it; its id (None: runs start from scratch)."""
    if cfg.proxy.init == "scratch":
        return None
    ws = Workspace(cfg.workspace_dir)
    base = starting_point(cfg, ws, checked_tokens_summary(ws), load_shards(tokens_dir(ws) / "train"), data_fingerprint(cfg, ws))
    base.state()
    return base.base_id


def batched_proxies(cfg: MixforgeConfig) -> bool:
    """`proxy.batched` resolved: auto batches on CUDA only (on CPU train_many measured 0.7x of one
    run after another, BENCHMARKS.md)."""
    p = cfg.proxy
    return p.batched == "on" or (p.batched == "auto" and resolve_device(p.device) == "cuda")


def batch_group(cfg: MixforgeConfig, vocab_size: int) -> int:
    """`proxy.batched_group` resolved: auto sizes groups to the GPU's free memory (`group_size`), 16 elsewhere."""
    p = cfg.proxy
    if p.batched_group != "auto":
        return p.batched_group
    if resolve_device(p.device) != "cuda":
        return 16
    import torch

    return group_size(preset(p.preset, vocab_size=vocab_size, block_size=p.seq_len), p.batch_size, torch.cuda.mem_get_info()[0])


def run_proxies(cfg: MixforgeConfig, mixtures: list, seeds: list[int], checkpoints: int = 0, base: Base | None = None,
                record: bool = True) -> list[dict]:
    """`run_proxy` for many runs, trained together in groups of at most `proxy.batched_group` with
    `train_many` (same seeds, batches, rows and checkpoints as one by one, up to float rounding;
    `batch_group`). Runs already in the table are not retrained, and each group's rows are written
    as soon as it is trained, so an interrupted call loses at most the group in training. Returns
    the rows in the order of `mixtures`. `checkpoints`, `base` and `record` as in `run_proxy`."""
    ws = Workspace(cfg.workspace_dir)
    summary = checked_tokens_summary(ws)
    shards = load_shards(tokens_dir(ws) / "train")
    data = data_fingerprint(cfg, ws)
    basis, base = content_basis(ws, data), base or starting_point(cfg, ws, summary, shards, data)
    runs = [_prepare(cfg, ws, summary, shards, data, w, s, None, checkpoints, basis=basis, base=base)
            for w, s in zip(mixtures, seeds)]
    rows = {r.run_id: r.row for r in runs if r.row is not None}
    todo = list({r.run_id: r for r in runs if r.row is None}.values())  # a run asked for twice trains once
    by_steps: dict[int, list[_Run]] = {}
    for r in todo:  # one train_many call has one step count (its lr schedule); the shape is the config's preset
        by_steps.setdefault(r.steps, []).append(r)
    size = batch_group(cfg, summary["tokenizer"]["vocab_size"])
    for steps, group in sorted(by_steps.items()):
        for i in range(0, len(group), size):
            chunk = group[i : i + size]
            init_state = base.state() if base else None
            t0 = time.perf_counter()
            saves = chunk[0].train_cfg.checkpoint_every or chunk[0].train_cfg.checkpoint_at  # the same for the same steps
            trained = train_many(chunk[0].model_cfg, chunk[0].train_cfg, [r.sampler.batches(cfg.proxy.batch_size) for r in chunk],
                                 steps, seeds=[r.seed for r in chunk], init_state=init_state,
                                 checkpoint_dirs=[checkpoint_dir(ws, r.run_id) for r in chunk] if saves else None)
            share = (time.perf_counter() - t0) / len(chunk)  # each run's share of the group's training time
            for r, (model, result) in zip(chunk, trained):
                rows[r.run_id] = _record(cfg, ws, summary, r, model, result, share, record=record)
    return [rows[r.run_id] for r in runs]
