"""Embedding: mixforge's Encoder against plain `SentenceTransformer.encode` with its defaults,
on the same documents and device, in one run. Also the opt-in static fast path (model2vec
distilled from the same model): its speed, and how well its clusters agree with the full
model's (NMI between k-means assignments at the same k and seed) and with the source labels.

    python bench/bench_embed.py [--docs 400] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def demo_documents(n: int) -> tuple[list[str], list[str]]:
    """Up to n documents spread evenly over the demo corpus's labels: (texts, labels)."""
    import json

    import zstandard

    from mixforge.demo import DEMO_DIR

    files = sorted((DEMO_DIR / "corpus").glob("*.jsonl.zst"))
    texts, labels = [], []
    for f in files:
        rows = [json.loads(l) for l in zstandard.decompress(f.read_bytes(), max_output_size=1 << 30).decode().splitlines()]
        step = max(len(rows) // max(n // len(files), 1), 1)
        for r in rows[::step][: n // len(files)]:
            texts.append(r["text"])
            labels.append(f.name.split(".")[0])
    return texts, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-static", action="store_true", help="skip the static fast path (its distillation takes minutes on CPU)")
    args = parser.parse_args()

    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score as nmi
    from sentence_transformers import SentenceTransformer

    from harness import report, timed_pair
    from mixforge.config import EmbedConfig
    from mixforge.pipelines.cluster import assign, train_kmeans
    from mixforge.pipelines.embed import Encoder, model_path

    texts, labels = demo_documents(args.docs)
    ours = Encoder(EmbedConfig(max_tokens=args.max_tokens))
    plain = SentenceTransformer(str(model_path("all-MiniLM-L6-v2")), device=ours.device)
    plain.max_seq_length = args.max_tokens  # same truncation: the comparison is speed, not length
    encode_ours = lambda: ours.encode(texts)  # noqa: E731
    encode_plain = lambda: plain.encode(texts, normalize_embeddings=True)  # noqa: E731
    a, b = timed_pair(encode_ours, encode_plain, args.repeat)
    agreement = float(np.mean(np.sum(a["result"] * b["result"], axis=1)))
    n = len(texts)
    report(f"embed {n} docs {args.max_tokens} tok", a["best"], b["best"], {
        "docs": n, "ours_docs_per_s": round(n / a["best"], 1), "baseline_docs_per_s": round(n / b["best"], 1),
        "mean_cosine_ours_vs_plain": round(agreement, 4), "device_used": ours.device,
        "baseline": "SentenceTransformer.encode defaults (batch 32), same max_seq_length",
    })

    if args.no_static:
        return
    with tempfile.TemporaryDirectory() as cache:
        fast = Encoder(EmbedConfig(max_tokens=args.max_tokens, backend="static"), cache_dir=Path(cache))
        s, _ = timed_pair(lambda: fast.encode(texts), encode_plain, 1)
    k = max(2, int(round(np.sqrt(n))))
    clusters = {}
    for name, vectors in (("full", a["result"]), ("static", s["result"])):
        centroids, _ = train_kmeans(vectors, k, 20, seed=0, sample_per_centroid=256)
        clusters[name] = assign(vectors, centroids)[0]
    report(f"embed static fast path {n}", s["best"], b["best"], {
        "docs": n, "static_docs_per_s": round(n / s["best"], 1), "k": k,
        "nmi_static_vs_full_clusters": round(float(nmi(clusters["full"], clusters["static"])), 4),
        "nmi_full_vs_labels": round(float(nmi(labels, clusters["full"])), 4),
        "nmi_static_vs_labels": round(float(nmi(labels, clusters["static"])), 4),
        "baseline": "full model, plain encode",
    })


if __name__ == "__main__":
    main()
