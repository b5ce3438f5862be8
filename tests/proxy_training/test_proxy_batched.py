"""Many proxies at once (train_many): stacked models under vmap must train exactly like separate
train() runs, on real slice text."""


import numpy as np
import pytest
import torch
import yaml

from conftest import slice_token_streams
from mixforge.proxy_training.batched import group_size, per_model_clip_, train_many
from mixforge.proxy_training.data import MixtureSampler
from mixforge.proxy_training.model import preset
from mixforge.proxy_training.train import TrainConfig, checkpoints, read_checkpoint, train

SEQ, BATCH = 64, 8
MIXES = [{"bible": 1.0, "code": 0.0}, {"bible": 0.5, "code": 0.5}, {"bible": 0.1, "code": 0.9}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """bible and code slices tokenized with a small BPE trained on them; a tiny proxy config."""
    tok, streams = slice_token_streams(tmp_path_factory.mktemp("tok"))
    return streams, preset("tiny", vocab_size=tok.get_vocab_size(), block_size=SEQ)


def _batches(streams, weights, steps, seed=0):
    return MixtureSampler(streams, weights, SEQ, token_budget=steps * BATCH * SEQ, seed=seed).batches(BATCH)


def _curve(result):
    return np.array([loss for _, loss in result.losses])


@pytest.mark.timeout(120)
def test_one_proxy_matches_train(setup):
    streams, cfg = setup
    tc = TrainConfig(lr=3e-3, warmup_steps=3, seed=5, log_every=1)
    model, alone = train(cfg, tc, _batches(streams, MIXES[1], 12), 12)
    [(batched_model, together)] = train_many(cfg, tc, [_batches(streams, MIXES[1], 12)], 12, seeds=[5])
    assert [s for s, _ in together.losses] == [s for s, _ in alone.losses] == list(range(12))
    np.testing.assert_allclose(_curve(together), _curve(alone), rtol=1e-4)
    assert _curve(together)[-1] < _curve(together)[0]  # it learns
    assert together.tokens == alone.tokens == 12 * BATCH * SEQ
    assert together.final_loss == pytest.approx(alone.final_loss, rel=1e-4)
    assert (together.non_embedding_params, together.flops_per_token) == (alone.non_embedding_params, alone.flops_per_token)
    # the model comes back as an ordinary GPT with the same weights (tied head included)
    assert batched_model.lm_head.weight is batched_model.wte.weight
    for (name, p), q in zip(model.state_dict().items(), batched_model.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=name)
    x = torch.from_numpy(next(iter(_batches(streams, MIXES[0], 1)))[:, :-1])
    with torch.no_grad():
        torch.testing.assert_close(batched_model(x)[0], model.eval()(x)[0], rtol=1e-3, atol=1e-3)


@pytest.mark.timeout(120)
def test_each_model_of_a_group_keeps_the_checkpoints_train_would_and_train_resumes_from_them(setup, tmp_path):
    """Checkpoints of a batched group are each model's own, in train's format: its weights and its
    slice of the stacked AdamW. train resumes from one to what an uninterrupted run gives (wrong
    moments would send the resumed run elsewhere)."""
    import shutil
    from dataclasses import replace

    streams, cfg = setup
    tc = TrainConfig(lr=3e-3, warmup_steps=2, log_every=1, checkpoint_every=3)
    folders = [tmp_path / "group" / str(i) for i in range(2)]
    train_many(cfg, tc, [_batches(streams, MIXES[i + 1], 6, seed=i) for i in range(2)], 6, seeds=[7, 8], checkpoint_dirs=folders)
    for i, seed in enumerate((7, 8)):
        alone = tmp_path / "alone" / str(i)
        model, _ = train(cfg, replace(tc, seed=seed), _batches(streams, MIXES[i + 1], 6, seed=i), 6,
                         checkpoint_dir=alone)
        assert [p.name for p in checkpoints(folders[i])] == [p.name for p in checkpoints(alone)] == ["step_0000003.pt", "step_0000006.pt"]
        for got_path, want_path in zip(checkpoints(folders[i]), checkpoints(alone)):
            got, want = read_checkpoint(got_path), read_checkpoint(want_path)
            assert (got["step"], got["tokens"], got["model_config"]) == (want["step"], want["tokens"], want["model_config"])
            assert got["model"].keys() == want["model"].keys()
            for name, tensor in want["model"].items():
                torch.testing.assert_close(got["model"][name], tensor, rtol=1e-3, atol=1e-4, msg=name)
            for k, per in want["optimizer"]["state"].items():
                for name, tensor in per.items():
                    torch.testing.assert_close(got["optimizer"]["state"][k][name], tensor, rtol=1e-3, atol=1e-5, msg=f"{k} {name}")
        resumed_dir = tmp_path / "resumed" / str(i)
        resumed_dir.mkdir(parents=True)
        shutil.copy(checkpoints(folders[i])[0], resumed_dir)  # killed after step 3: train goes on from the group's checkpoint
        resumed, _ = train(cfg, replace(tc, seed=seed), _batches(streams, MIXES[i + 1], 6, seed=i), 6,
                           checkpoint_dir=resumed_dir)
        for (name, p), q in zip(model.state_dict().items(), resumed.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.timeout(120)
def test_three_mixtures_train_as_if_alone(setup):
    """Three mixtures, three seeds, clipping active: each curve equals that model trained alone, so
    nothing leaks between models (gradients, optimiser state or clipping)."""
    streams, cfg = setup
    steps, seeds = 10, [0, 1, 2]
    tc = TrainConfig(lr=3e-3, warmup_steps=3, log_every=1, grad_clip=0.2)  # early norms are > 0.2: clipping is on
    runs = train_many(cfg, tc, [_batches(streams, m, steps) for m in MIXES], steps, seeds=seeds, return_models=False)
    curves = [_curve(r) for _, r in runs]
    for mix, seed, curve in zip(MIXES, seeds, curves):
        tc_alone = TrainConfig(lr=3e-3, warmup_steps=3, log_every=1, grad_clip=0.2, seed=seed)
        _, alone = train(cfg, tc_alone, _batches(streams, mix, steps), steps)
        np.testing.assert_allclose(curve, _curve(alone), rtol=1e-4)
    assert not np.allclose(curves[0], curves[2], rtol=1e-3)  # the models really differ
    state, _ = runs[0]
    assert state["wte.weight"].shape == (cfg.vocab_size, cfg.n_embd) and "lm_head.weight" in state


@pytest.mark.timeout(120)
def test_batched_training_is_deterministic(setup):
    streams, cfg = setup
    tc = TrainConfig(lr=3e-3, warmup_steps=3, log_every=2)

    def run(seeds):
        runs = train_many(cfg, tc, [_batches(streams, m, 6) for m in MIXES[:2]], 6, seeds=seeds, return_models=False)
        return [r.losses for _, r in runs]

    a, b, c = run([3, 4]), run([3, 4]), run([3, 5])
    assert a == b and a[0] == c[0] and a[1] != c[1]


@pytest.mark.timeout(120)
def test_clipping_is_per_model():
    """A model with a huge gradient is clipped to max_norm; one under it is left alone (a joint clip
    would have shrunk it too). Same result as clip_grad_norm_ on each model separately."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 5), (3, 5), (3, 7, 2)]  # 3 models
    params = [torch.zeros(s, requires_grad=True) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * torch.tensor([100.0, 0.01, 1.0]).view(-1, *[1] * (p.dim() - 1))
    expected = []
    for i in range(3):
        single = [torch.zeros(p.shape[1:], requires_grad=True) for p in params]
        for s, p in zip(single, params):
            s.grad = p.grad[i].clone()
        norm = torch.nn.utils.clip_grad_norm_(single, 1.0)
        expected.append((norm, [s.grad for s in single]))
    before = [p.grad[1].clone() for p in params]
    norms = per_model_clip_(params, 1.0)
    for i, (norm, grads) in enumerate(expected):
        assert norms[i].item() == pytest.approx(norm.item(), rel=1e-5)
        for p, want in zip(params, grads):
            torch.testing.assert_close(p.grad[i], want)
    assert norms[0] > 100 and norms[1] < 1
    for p, b in zip(params, before):
        assert torch.equal(p.grad[1], b)  # the small one is untouched
    clipped = torch.sqrt(sum((p.grad[0] ** 2).sum() for p in params))
    assert clipped.item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.timeout(120)
def test_ragged_batches_are_padded_exactly(setup):
    """Streams whose batches differ in shape (a short last batch, a shorter sequence): padding with
    ignored targets leaves each model's training as it is alone."""
    streams, cfg = setup
    full = next(iter(_batches(streams, MIXES[1], 1)))
    a = [full, full[:5]]  # 8 then 5 sequences
    b = [full[:, :33], full[:3, :49]]  # shorter sequences
    tc = TrainConfig(lr=3e-3, warmup_steps=1, log_every=1, seed=7)
    runs = train_many(cfg, tc, [iter(a), iter(b)], 2, return_models=False)
    for stream, (_, together) in zip((a, b), runs):
        _, alone = train(cfg, tc, iter(stream), 2)
        np.testing.assert_allclose(_curve(together), _curve(alone), rtol=1e-4)
        assert together.tokens == alone.tokens


@pytest.mark.timeout(300)
def test_batched_sweep_records_the_rows_of_one_by_one_and_resumes(tmp_path, monkeypatch):
    """`proxy.batched: on` on CPU: a sweep interrupted after its first group and run again trains
    only the missing run, and its rows equal the rows of the same runs trained one by one."""
    import polars as pl

    from conftest import workspace_with_tokens
    from mixforge.config import load_config
    from mixforge.flows.proxy import sweep_flow
    from mixforge.mixers.sampling import random_mixtures
    from mixforge.proxy_training import proxy
    from mixforge.proxy_training.runs_table import RunsTable
    from mixforge.workspace import Workspace

    def small(folder, **proxy_settings):  # a few steps and a capped evaluation: seconds per run
        folder.mkdir()
        config = workspace_with_tokens(folder, tokens=1024)
        data = yaml.safe_load(config.read_text())
        data["proxy"].update(seq_len=16, eval_max_tokens=256, task_items=10, **proxy_settings)
        config.write_text(yaml.safe_dump(data))
        return config

    alone = load_config(small(tmp_path / "one"))
    counts = {c: v["train_tokens"] for c, v in proxy.tokens_summary(Workspace(alone.workspace_dir))["components"].items()}
    mixtures = random_mixtures(counts, 3, alone.seed, alone.proxy.tokens, alone.proxy.max_epochs)
    expected = {r["run_id"]: r for r in (proxy.run_proxy(alone, w, seed=alone.seed + i) for i, w in enumerate(mixtures))}

    config = small(tmp_path / "batched", batched="on", batched_group=2)
    cfg = load_config(config)
    assert proxy.batched_proxies(cfg)

    groups = []
    def interrupted(*args, **kwargs):
        groups.append(len(args[2]))
        if len(groups) == 2:
            raise KeyboardInterrupt  # the sweep is stopped while its second group trains
        return train_many(*args, **kwargs)

    monkeypatch.setattr(proxy, "train_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        proxy.run_proxies(cfg, mixtures, [cfg.seed + i for i in range(3)])
    table = RunsTable(Workspace(cfg.workspace_dir))
    first = table.load()
    assert groups == [2, 1] and first.height == 2

    groups.clear()
    monkeypatch.setattr(proxy, "train_many", lambda *a, **k: groups.append(len(a[2])) or train_many(*a, **k))
    rows = sweep_flow(str(config), runs=3)
    assert groups == [1]  # only the run the interruption lost
    runs = table.load()
    assert runs.filter(pl.col("run_id").is_in(first["run_id"].to_list()))["created_at"].to_list() == first["created_at"].to_list()
    assert [r["run_id"] for r in rows] == list(expected) and sorted(runs["run_id"]) == sorted(expected)
    volatile = {"wall_s", "tokens_per_s", "created_at"}
    for row in runs.iter_rows(named=True):
        want = expected[row["run_id"]]
        assert set(row) == set(want)
        for key in set(row) - volatile:
            if isinstance(want[key], float):
                assert row[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key
            else:
                assert row[key] == want[key], key


def test_groups_are_sized_to_the_free_memory():
    tiny, small = (preset(name, vocab_size=8192, block_size=256) for name in ("tiny", "small"))
    sizes = [group_size(tiny, 16, gib << 30) for gib in (1, 8, 40)]
    assert 1 <= sizes[0] < sizes[1] < sizes[2] <= 256  # more memory, more proxies at once
    assert group_size(small, 16, 40 << 30) < sizes[2] and group_size(tiny, 64, 40 << 30) < sizes[2]  # bigger models, batches
    assert group_size(tiny, 16, 0) == 1 and group_size(tiny, 1, 1 << 50, most=64) == 64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_group_sized_to_the_gpu_trains_within_its_memory():
    cfg = preset("tiny", vocab_size=8192, block_size=256)
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info()[0]
    n = group_size(cfg, 16, free)
    streams = [(np.random.default_rng(i).integers(0, 8192, (16, 257)) for _ in range(3)) for i in range(n)]
    torch.cuda.reset_peak_memory_stats()
    trained = train_many(cfg, TrainConfig(device="cuda", warmup_steps=1), streams, 3, return_models=False)
    assert len(trained) == n and torch.cuda.max_memory_allocated() <= free
