"""Embedding: mixforge's Encoder against plain `SentenceTransformer.encode` with its defaults,
on the same documents and device, in one run. Also the opt-in fast paths:
- int8 (`embed.backend: int8`, the same MiniLM in onnxruntime with int8 weights): its speed
  against plain encode on the demo documents, and how close its vectors are to the full-precision
  ones (cosine) and how its components agree with the source labels (NMI), on the demo corpus and
  on a second real corpus (scripts/make_scale_corpus.py: code, docs and manual pages of this
  machine);
- static (model2vec distilled from the same model): its speed, and how well its clusters agree
  with the full model's (NMI between k-means assignments at the same k and seed) and with the
  source labels.

    python bench/bench_embed.py [--docs 400] [--max-tokens 256] [--scale-docs 400] [--no-static] [--no-int8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
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


def scale_documents(n: int, folder: Path) -> tuple[list[str], list[str]]:
    """n documents of the scale corpus (seed 0), built offline into `folder`: (texts, labels)."""
    import json

    import zstandard

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_scale_corpus.py"
    subprocess.run([sys.executable, str(script), "--docs", str(n), str(folder)], check=True, capture_output=True)
    texts, labels = [], []
    for f in sorted(folder.glob("*/*.jsonl.zst")):
        for line in zstandard.decompress(f.read_bytes(), max_output_size=1 << 30).decode().splitlines():
            texts.append(json.loads(line)["text"])
            labels.append(f.parent.name)
    return texts, labels


def component_nmi(vectors, labels: list[str], n_components: int = 20) -> float:
    """NMI between the source labels and the components the build would form from `vectors`
    (k-means at k = sqrt(n), seed 0, then Ward merging into at most `n_components`)."""
    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mixforge.pipelines.cluster.stage import assign, train_kmeans
    from mixforge.pipelines.components import merge_clusters

    k = max(2, int(round(np.sqrt(len(vectors)))))
    centroids, _ = train_kmeans(vectors, k, 20, seed=0, sample_per_centroid=256)
    component = merge_clusters(centroids, min(n_components, k), None)
    return float(nmi(labels, component[assign(vectors, centroids)[0]]))


def bench_int8(args, texts: list[str], labels: list[str], plain, encode_plain) -> None:
    """int8 vs plain encode: speed on the demo documents; cosine and component NMI on the demo
    corpus and on the scale corpus."""
    import numpy as np

    from harness import OUT_DIR, report, timed, timed_pair
    from mixforge.config import EmbedConfig
    from mixforge.pipelines.embed.stage import Encoder

    cache = OUT_DIR / "models"  # git-ignored; the cache key changes with the model and libraries
    built = timed(lambda: Encoder(EmbedConfig(max_tokens=args.max_tokens, backend="int8"), cache_dir=cache))
    fast = built["result"]
    i8, base = timed_pair(lambda: fast.encode(texts), encode_plain, args.repeat)
    corpora = {"demo": (texts, labels, base["result"], i8["result"])}
    if args.scale_docs:
        with tempfile.TemporaryDirectory() as folder:
            s_texts, s_labels = scale_documents(args.scale_docs, Path(folder))
        corpora["scale"] = (s_texts, s_labels, plain.encode(s_texts, normalize_embeddings=True), fast.encode(s_texts))
    quality = {}
    for name, (_, labs, full, quant) in corpora.items():
        cos = np.sum(full * quant, axis=1)
        quality[name] = {"docs": len(labs), "cosine_mean": round(float(cos.mean()), 4), "cosine_min": round(float(cos.min()), 4),
                         "nmi_full": round(component_nmi(full, labs), 4), "nmi_int8": round(component_nmi(quant, labs), 4)}
    n = len(texts)
    report(f"embed int8 {n} docs {args.max_tokens} tok", i8["best"], base["best"], {
        "docs": n, "int8_docs_per_s": round(n / i8["best"], 1), "baseline_docs_per_s": round(n / base["best"], 1),
        "median_ratio": round(base["median"] / i8["median"], 3), "first_load_s": round(built["best"], 1),
        **{f"{c}_{k}": v for c, q in quality.items() for k, v in q.items()},
        "baseline": "plain SentenceTransformer.encode (fp32, batch 32), same max_seq_length",
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-static", action="store_true", help="skip the static fast path (its distillation takes minutes on CPU)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 fast path")
    parser.add_argument("--no-transformer", action="store_true", help="skip mixforge's transformer Encoder vs plain encode")
    parser.add_argument("--scale-docs", type=int, default=400, help="documents of the second corpus for int8's quality (0: none)")
    args = parser.parse_args()

    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score as nmi
    from sentence_transformers import SentenceTransformer

    from harness import report, timed_pair
    from mixforge.config import EmbedConfig
    from mixforge.pipelines.cluster.stage import assign, train_kmeans
    from mixforge.pipelines.embed.stage import BLOCK, Encoder, model_path

    texts, labels = demo_documents(args.docs)
    ours = Encoder(EmbedConfig(max_tokens=args.max_tokens))
    plain = SentenceTransformer(str(model_path("all-MiniLM-L6-v2")), device=ours.device)
    plain.max_seq_length = args.max_tokens  # same truncation: the comparison is speed, not length
    encode_plain = lambda: plain.encode(texts, normalize_embeddings=True)  # noqa: E731
    n = len(texts)
    blocks = lambda: [texts[i : i + BLOCK] for i in range(0, n, BLOCK)]  # noqa: E731  the embed stage's blocks
    if not args.no_transformer:  # encode_blocks: pipelined on CUDA, plain encode per block on CPU
        a, b = timed_pair(lambda: np.concatenate(list(ours.encode_blocks(blocks()))), encode_plain, args.repeat)
        agreement = float(np.mean(np.sum(a["result"] * b["result"], axis=1)))
        report(f"embed {n} docs {args.max_tokens} tok", a["best"], b["best"], {
            "docs": n, "ours_docs_per_s": round(n / a["best"], 1), "baseline_docs_per_s": round(n / b["best"], 1),
            "mean_cosine_ours_vs_plain": round(agreement, 4), "device_used": ours.device,
            "baseline": "SentenceTransformer.encode defaults (batch 32), same max_seq_length",
        })
    if not args.no_int8 and ours.device == "cpu":  # int8 is a CPU path
        bench_int8(args, texts, labels, plain, encode_plain)
    if args.no_static:
        return
    with tempfile.TemporaryDirectory() as cache:
        fast = Encoder(EmbedConfig(max_tokens=args.max_tokens, backend="static"), cache_dir=Path(cache))
        s, b = timed_pair(lambda: fast.encode(texts), encode_plain, 1)
    k = max(2, int(round(np.sqrt(n))))
    clusters = {}
    for name, vectors in (("full", b["result"]), ("static", s["result"])):
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
