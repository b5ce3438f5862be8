"""k-means: faiss (mixforge's clustering) against scikit-learn's MiniBatchKMeans at the same k
on the same vectors, in one run: wall time and the sum of cosine distances to the assigned
centroid (lower is better). Ours runs with the `cluster` section's defaults (at most `iterations`
Lloyd iterations, stopping once one gains less than `tolerance`); `--tolerance 0` gives the fixed
20 iterations of before. Vectors: real MiniLM embeddings of the demo corpus when `--real`, else seeded random
unit vectors in 384 dimensions (speed only; fine for a clustering-speed comparison).

    python bench/bench_kmeans.py [--n 100000] [--k 316] [--real] [--tolerance T] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=0, help="default: sqrt(n), as mixforge's auto rule")
    parser.add_argument("--real", action="store_true", help="embed the demo corpus instead of random vectors")
    parser.add_argument("--tolerance", type=float, default=None, help="default: cluster.tolerance's default")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs of each side; the best is reported")
    args = parser.parse_args()

    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    from harness import report, timed_pair
    from mixforge.config import ClusterConfig
    from mixforge.pipelines.cluster.stage import assign, auto_clusters, fit_kmeans

    if args.real:
        from bench_embed import demo_documents

        from mixforge.config import EmbedConfig
        from mixforge.pipelines.embed.stage import Encoder

        texts, _ = demo_documents(args.n)
        x = Encoder(EmbedConfig(max_tokens=128)).encode(texts)
    else:
        rng = np.random.default_rng(0)
        # a mixture of 50 directions plus noise: clustered like real embeddings, not uniform
        centres = rng.normal(size=(50, args.dim))
        x = centres[rng.integers(0, 50, args.n)] + 0.8 * rng.normal(size=(args.n, args.dim))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    k = args.k or auto_clusters(len(x))
    c = ClusterConfig()
    tolerance = c.tolerance if args.tolerance is None else args.tolerance

    def ours():
        fit = fit_kmeans(x, k, c.iterations, seed=0, sample_per_centroid=c.sample_per_centroid, tolerance=tolerance)
        ids, dist = assign(x, fit.centroids)
        return fit.centroids[ids], fit.device, fit.iterations

    def baseline():
        km = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=1, max_iter=20, batch_size=4096).fit(x)
        return km.cluster_centers_[km.labels_], "cpu", km.n_steps_

    a, b = timed_pair(ours, baseline, repeat=args.repeat)
    # the objective both minimise on unit vectors, up to centroid scale: sum of cosine distances
    # (squared Euclidean would favour sklearn, whose centroids are not renormalised to length 1)
    inertia = lambda r: float((1 - (x * r[0]).sum(1) / np.linalg.norm(r[0], axis=1)).sum())  # noqa: E731
    report(f"kmeans n={len(x)} k={k}", a["best"], b["best"], {
        "n": len(x), "k": k, "dim": x.shape[1], "vectors": "demo MiniLM" if args.real else "seeded clustered random",
        "inertia_ours": round(inertia(a["result"]), 1), "inertia_baseline": round(inertia(b["result"]), 1),
        "faiss_device": a["result"][1], "iterations_ours": a["result"][2], "tolerance": tolerance,
        "baseline_minibatch_steps": b["result"][2], "times_ours": a["times"], "times_baseline": b["times"],
        "baseline": "sklearn MiniBatchKMeans(n_init=1, max_iter=20, batch 4096)",
    })


if __name__ == "__main__":
    main()
