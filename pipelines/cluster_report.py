"""The cluster report: per component its size, quality, distinctive terms (class-based TF-IDF),
sample snippets and source mix; PNG plots (sizes, a 2-D map of a document sample, quality);
a markdown page that shows them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from mixforge.plots import pyplot, save_png
from mixforge.workspace import Workspace, atomic_write_text

TERMS_PER_COMPONENT = 8
SNIPPET_CHARS = 160
MAX_CHARS_PER_DOC = 5000  # enough text per document for term statistics, bounded cost


def distinctive_terms(texts_by_component: dict[str, list[str]], top: int = TERMS_PER_COMPONENT) -> dict[str, list[str]]:
    """Class-based TF-IDF (BERTopic's c-TF-IDF): each component is one document; a term scores
    tf(term, component) * log(1 + mean words per component / corpus frequency of term)."""
    from sklearn.feature_extraction.text import CountVectorizer

    names = list(texts_by_component)
    joined = [" ".join(t[:MAX_CHARS_PER_DOC] for t in texts_by_component[n]) for n in names]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]{2,}\b", max_features=50_000)
    try:
        counts = vectorizer.fit_transform(joined).toarray().astype(np.float64)
    except ValueError:  # no words at all (e.g. only symbols)
        return {n: [] for n in names}
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    idf = np.log(1 + counts.sum(axis=1).mean() / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    vocab = np.array(vectorizer.get_feature_names_out())
    return {n: vocab[np.argsort(-scores[i])[:top]].tolist() for i, n in enumerate(names)}


def _snippet(text: str) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"


def component_table(docs: pl.DataFrame) -> list[dict]:
    """One record per component (largest first): docs, tokens, quality, clusters, sources,
    top terms and three snippets (the documents nearest their cluster centres)."""
    texts = {c: g["text"].to_list() for (c,), g in docs.sort("component").group_by("component", maintain_order=True)}
    terms = distinctive_terms(texts)
    rows = []
    for (name,), group in docs.sort("component").group_by("component", maintain_order=True):
        sources = group.group_by("source").len().sort(["len", "source"], descending=[True, False])
        nearest = group.sort(["distance", "id"]).head(3)
        rows.append({
            "component": name,
            "documents": group.height,
            "tokens": int(group["tokens"].sum()),
            "quality_mean": round(float(group["quality"].mean()), 3) if group["quality"].null_count() < group.height else None,
            "clusters": sorted(group["cluster"].unique().to_list()),
            "sources": dict(zip(sources["source"].to_list(), sources["len"].to_list())),
            "top_terms": terms.get(name, []),
            "snippets": [_snippet(t) for t in nearest["text"].to_list()],
        })
    return sorted(rows, key=lambda r: (-r["tokens"], r["component"]))


def write_report(out: Path, docs: pl.DataFrame, table: list[dict], summary: dict, ws: Workspace, seed: int) -> None:
    """report.md plus sizes.png, map.png and quality.png in `out`."""
    _plot_sizes(out / "sizes.png", table)
    _plot_map(out / "map.png", docs, ws, seed)
    _plot_quality(out / "quality.png", docs, table)
    atomic_write_text(out / "report.md", _markdown(table, summary, _cluster_rows(docs)))


def _cluster_rows(docs: pl.DataFrame) -> list[tuple]:
    """(cluster, component, documents, tokens, mean quality) per cluster, by cluster id."""
    per = docs.group_by("cluster").agg(
        pl.col("component").first(), pl.len(), pl.col("tokens").sum(), pl.col("quality").mean()
    ).sort("cluster")
    return list(per.iter_rows())


def _markdown(table: list[dict], summary: dict, clusters: list[tuple]) -> str:
    lines = [
        "# Cluster report", "",
        f"{summary['components']} components ({summary['mode']}) from {summary['clusters']} clusters, "
        f"{summary['documents']:,} documents, {summary['tokens']:,} tokens.", "",
    ]
    agreement = summary.get("vs_source_labels")
    if agreement:
        c, k = agreement["components"], agreement["clusters"]
        lines += [f"Agreement with the source labels: components NMI {c['nmi']:.3f}, purity {c['purity']:.3f}; "
                  f"raw clusters NMI {k['nmi']:.3f}, purity {k['purity']:.3f}.", ""]
    lines += ["![component sizes](sizes.png)", "", "![2-D map of a document sample](map.png)", "",
              "![quality by component](quality.png)", "",
              "| component | docs | tokens | quality | top terms | sources |", "|---|---:|---:|---:|---|---|"]
    for r in table:
        q = "" if r["quality_mean"] is None else f"{r['quality_mean']:.2f}"
        sources = ", ".join(f"{k} {v}" for k, v in list(r["sources"].items())[:4])
        lines.append(f"| {r['component']} | {r['documents']:,} | {r['tokens']:,} | {q} | {' '.join(r['top_terms'])} | {sources} |")
    lines.append("")
    for r in table:
        lines += [f"## {r['component']}: {', '.join(r['top_terms'][:4])}", ""]
        lines += [f"> {s}" + "\n" for s in r["snippets"]]
    lines += ["## Clusters", "", "| cluster | component | docs | tokens | mean quality |", "|---:|---|---:|---:|---:|"]
    for cluster, component, n, tokens, quality in clusters:
        q = "" if quality is None else f"{quality:.2f}"
        lines.append(f"| {cluster} | {component} | {n:,} | {tokens:,} | {q} |")
    return "\n".join(lines) + "\n"


def _plot_sizes(path: Path, table: list[dict]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(table)), 3.6))
    names = [r["component"] for r in table]
    ax.bar(names, [r["tokens"] for r in table], color="#4C72B0")
    ax.set_ylabel("tokens (embedding tokenizer)")
    ax.set_title("Component sizes")
    ax.tick_params(axis="x", rotation=60)
    save_png(fig, path)


def _plot_map(path: Path, docs: pl.DataFrame, ws: Workspace, seed: int, sample: int = 3000) -> None:
    from sklearn.decomposition import PCA

    from mixforge.pipelines.embed import load_vectors

    ids, vectors, _, _ = load_vectors(ws)
    index = {i: n for n, i in enumerate(ids)}
    rng = np.random.default_rng(seed)
    picked = docs.select("id", "component").sample(n=min(sample, docs.height), seed=seed) if docs.height else docs
    rows = np.array([index[i] for i in picked["id"]], dtype=np.int64)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    if len(rows) >= 3:
        xy = PCA(n_components=2, random_state=int(rng.integers(1 << 31))).fit_transform(vectors[rows])
        comps = sorted(set(picked["component"]))
        colours = plt.get_cmap("tab20", max(len(comps), 1))
        for k, comp in enumerate(comps):
            mask = (picked["component"] == comp).to_numpy()
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=colours(k), label=comp)
        ax.legend(markerscale=2, fontsize=7, ncol=2, frameon=False)
    ax.set_title(f"Documents by component (PCA of embeddings, {len(rows):,} sampled)")
    save_png(fig, path)


def _plot_quality(path: Path, docs: pl.DataFrame, table: list[dict]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(table)), 3.6))
    names = [r["component"] for r in table]
    data = [docs.filter(pl.col("component") == n)["quality"].drop_nulls().to_list() or [np.nan] for n in names]
    ax.boxplot(data, tick_labels=names, showfliers=False)
    ax.set_ylabel("quality (1-5)")
    ax.set_ylim(1, 5)
    ax.set_title("Quality by component")
    ax.tick_params(axis="x", rotation=60)
    save_png(fig, path)
