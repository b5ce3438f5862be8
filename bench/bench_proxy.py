"""Proxy training throughput, and many proxies at once: N proxies on N different mixtures trained
together with `train_many` (stacked parameters, one vmapped forward / backward / AdamW step per
step) against the same N trained one after another with `train` (the plain nanoGPT-style loop,
what a user would otherwise run), in one run on real text.

Data: the demo corpus (6 components) tokenized with mixforge's default BPE (trained on it here,
vocab 8192); mixtures are seeded Dirichlet(1) draws over the components, as a RegMix search samples.
Throughput: tokens/s and achieved FLOPs/s (GPT.flops_per_token x tokens/s, the PaLM / nanoGPT count);
on CUDA also MFU = FLOPs/s over the GPU's dense bf16 peak (looked up by device name for H100 / H200 /
A100; unknown GPUs and CPUs get FLOPs/s only: a CPU has no meaningful peak).

    python bench/bench_proxy.py [--presets tiny,small] [--n 4,8] [--steps 10] [--small-steps 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, FLOP/s.
PEAK_BF16 = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / HBM3
    ("A100", 312e12),
]


def peak_flops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16:
        if key.lower() in device_name.lower():
            return peak
    return None


def demo_shards(out: Path, vocab_size: int) -> dict:
    """Tokenize the demo corpus per component: {component: int64 token stream}."""
    import numpy as np
    import zstandard

    from mixforge.demo import DEMO_DIR
    from mixforge.pipelines.tokens.tokenizer import tokenize_components, train_default_tokenizer

    docs = []
    for f in sorted((DEMO_DIR / "corpus").glob("*.jsonl.zst")):
        text = zstandard.decompress(f.read_bytes(), max_output_size=1 << 30).decode()
        docs += [(f.name.split(".")[0], json.loads(line)["text"]) for line in text.splitlines()]
    tok = train_default_tokenizer([t for _, t in docs], out / "tokenizer.json", vocab_size=vocab_size, seed=0)
    tokenize_components(docs, tok, out)
    comps = sorted({c for c, _ in docs})
    meta = {c: json.loads((out / f"{c}.json").read_text()) for c in comps}
    return tok.get_vocab_size(), {c: np.fromfile(out / f"{c}.bin", dtype=meta[c]["dtype"]).astype(np.int64) for c in comps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--n", default="4,8", help="numbers of proxies trained together")
    parser.add_argument("--steps", type=int, default=0, help="steps per proxy for tiny (default: 10 CPU, 200 CUDA)")
    parser.add_argument("--small-steps", type=int, default=0, help="steps for small (default: 3 CPU, 50 CUDA)")
    parser.add_argument("--seq", type=int, default=0, help="sequence length (default: 128 CPU, 512 CUDA)")
    parser.add_argument("--batch", type=int, default=0, help="sequences per step per proxy (default: 4 CPU, 32 CUDA)")
    parser.add_argument("--small-n", default="4", help="N for the small preset (default 4)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repeats of each pair (best is reported)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from harness import report, timed, timed_pair
    from mixforge.proxy_training.batched import train_many
    from mixforge.proxy_training.data import MixtureSampler
    from mixforge.proxy_training.model import GPT, preset
    from mixforge.proxy_training.train import TrainConfig, resolve_device, train

    device = resolve_device("auto")
    cuda = device == "cuda"
    seq = args.seq or (512 if cuda else 128)
    batch = args.batch or (32 if cuda else 4)
    gpu_name = torch.cuda.get_device_name(0) if cuda else ""
    peak = peak_flops(gpu_name) if cuda else None

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        vocab, shards = demo_shards(Path(tmp), args.vocab)
        print(f"demo corpus: {len(shards)} components, {sum(len(s) for s in shards.values()):,} tokens, "
              f"vocab {vocab}, tokenized in {time.perf_counter() - t0:.1f} s")

    comps = sorted(shards)
    rng = np.random.default_rng(0)
    all_mixes = [dict(zip(comps, rng.dirichlet(np.ones(len(comps))).tolist())) for _ in range(16)]

    def streams(mixes, steps):
        # max_epochs high: a speed benchmark, the small demo corpus may be repeated
        return [MixtureSampler(shards, m, seq, token_budget=steps * batch * seq, seed=i, max_epochs=1e9).batches(batch)
                for i, m in enumerate(mixes)]

    def flops_extra(fpt: int, tok_s: float) -> dict:
        out = {"flops_per_s": f"{fpt * tok_s:.3g}"}
        if peak:
            out["mfu"] = round(fpt * tok_s / peak, 4)
        return out

    for name in [p for p in args.presets.split(",") if p]:
        cfg = preset(name, vocab_size=vocab, block_size=seq)
        steps = (args.steps or (200 if cuda else 10)) if name == "tiny" else (args.small_steps or (50 if cuda else 3))
        ns = [int(x) for x in (args.n if name == "tiny" else args.small_n).split(",") if x]
        tc = TrainConfig(lr=3e-3, warmup_steps=max(steps // 10, 1), log_every=max(steps // 5, 1))
        torch.manual_seed(0)
        fpt = GPT(cfg).flops_per_token()
        train(cfg, tc, streams(all_mixes[:1], 2)[0], 2)  # warm-up (allocator, kernels)
        train_many(cfg, tc, streams(all_mixes[:2], 2), 2)

        # single-proxy throughput with the plain loop
        single = timed(lambda cfg=cfg, tc=tc, steps=steps: train(cfg, tc, streams(all_mixes[:1], steps)[0], steps)[1])["result"]
        print(f"{name}: one proxy with train(): {single.tokens_per_s:,.0f} tokens/s, "
              f"{fpt * single.tokens_per_s:.3g} FLOP/s" + (f", MFU {fpt * single.tokens_per_s / peak:.1%}" if peak else "")
              + f" ({single.non_embedding_params:,} non-embedding params, {fpt:,} FLOPs/token, seq {seq}, batch {batch})")

        for n in ns:
            mixes = all_mixes[:n]

            def ours(cfg=cfg, tc=tc, mixes=mixes, steps=steps, n=n):
                runs = train_many(cfg, tc, streams(mixes, steps), steps, seeds=range(n), return_models=False)
                return [r for _, r in runs]

            def baseline(cfg=cfg, tc=tc, mixes=mixes, steps=steps):
                return [train(cfg, TrainConfig(**{**tc.__dict__, "seed": i}), s, steps)[1]
                        for i, s in enumerate(streams(mixes, steps))]

            a, b = timed_pair(ours, baseline, repeat=args.repeat)
            tokens = sum(r.tokens for r in a["result"])
            tok_s_ours, tok_s_base = tokens / a["best"], tokens / b["best"]
            final_gap = max(abs(x.final_loss - y.final_loss) for x, y in zip(a["result"], b["result"]))
            report(f"proxy {name} x{n} batched", a["best"], b["best"], {
                "preset": name, "n_proxies": n, "steps": steps, "seq": seq, "batch": batch, "vocab": vocab,
                "train_device": device, "gpu": gpu_name or None,
                "tokens_per_s_ours": round(tok_s_ours), "tokens_per_s_baseline": round(tok_s_base),
                "tokens_per_s_single": round(single.tokens_per_s),
                **{f"{k}_ours": v for k, v in flops_extra(fpt, tok_s_ours).items()},
                **{f"{k}_baseline": v for k, v in flops_extra(fpt, tok_s_base).items()},
                "max_final_loss_gap": round(final_gap, 5), "repeat": args.repeat,
                "times_ours": [round(t, 2) for t in a["times"]], "times_baseline": [round(t, 2) for t in b["times"]],
                "baseline": "N x train() one after another (nanoGPT-style loop, same seeds, same batches)",
            })


if __name__ == "__main__":
    main()
