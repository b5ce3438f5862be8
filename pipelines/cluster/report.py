"""The cluster report: per component its size, quality, distinctive terms (class-based TF-IDF),
sample snippets and source mix; PNG plots (sizes, a 2-D map of a document sample, quality);
a markdown page that shows them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from mixforge.pipelines.samples import BottomK, id_keys
from mixforge.plots import pyplot, save_png
from mixforge.workspace import atomic_write_text

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


TERM_DOCS = 1000  # documents per component whose text the term statistics read (seeded sample)
QUALITY_DOCS = 5000  # quality scores per component in the box plot
MAP_DOCS = 3000  # documents on the 2-D map


class ReportSample:
    """What the report shows of the documents, gathered shard by shard in bounded memory: per
    component a seeded sample of texts and of quality scores and its three documents nearest a
    cluster centre; a seeded sample of vectors for the map. Samples are chosen by a seeded hash
    of the id, so they do not depend on shard order."""

    def __init__(self, seed: int):
        self.seed = seed
        self.texts: dict[str, BottomK] = {}
        self.quality: dict[str, BottomK] = {}
        self.nearest: dict[str, pl.DataFrame] = {}
        self.map = BottomK(MAP_DOCS)

    def add(self, docs: pl.DataFrame, vectors_meta: Path) -> None:
        """`docs`: one shard's id, text, component, distance, quality; `vectors_meta`: its embed shard."""
        from mixforge.pipelines.outputs import load_vector_shard

        keys = id_keys(docs["id"], self.seed)
        for (name,), group in docs.with_row_index("row").group_by("component", maintain_order=True):
            rows = group["row"].to_numpy()
            self.texts.setdefault(name, BottomK(TERM_DOCS)).offer(keys[rows], [t[:MAX_CHARS_PER_DOC] for t in group["text"]])
            scored = group.filter(pl.col("quality").is_not_null())
            self.quality.setdefault(name, BottomK(QUALITY_DOCS)).offer(keys[scored["row"].to_numpy()], scored["quality"].to_list())
            near = group.select("distance", "id", "text").sort(["distance", "id"]).head(3)
            self.nearest[name] = pl.concat([self.nearest[name], near]).sort(["distance", "id"]).head(3) if name in self.nearest else near
        local = np.sort(np.argsort(keys, kind="stable")[:MAP_DOCS])  # only these can enter the map sample
        meta, vectors = load_vector_shard(vectors_meta)
        row_of = dict(zip(meta["id"].to_list(), range(meta.height)))
        ids, components = docs["id"].to_list(), docs["component"].to_list()
        self.map.offer(keys[local], [(components[i], vectors[row_of[ids[i]]].copy()) for i in local])


def component_table(totals: pl.DataFrame, sample: ReportSample) -> list[dict]:
    """One record per component (largest first): docs, tokens, quality, clusters, sources,
    top terms and three snippets (the documents nearest their cluster centres). `totals`: per
    (cluster, source, component) docs, tokens, quality_sum and quality_n."""
    terms = distinctive_terms({name: sample.texts[name].items() for name in sorted(sample.texts)})
    rows = []
    for (name,), group in totals.sort("component").group_by("component", maintain_order=True):
        sources = group.group_by("source").agg(pl.col("docs").sum()).sort(["docs", "source"], descending=[True, False])
        scored = int(group["quality_n"].sum())
        rows.append({
            "component": name,
            "documents": int(group["docs"].sum()),
            "tokens": int(group["tokens"].sum()),
            "quality_mean": round(float(group["quality_sum"].sum() / scored), 3) if scored else None,
            "clusters": sorted(group["cluster"].unique().to_list()),
            "sources": dict(zip(sources["source"].to_list(), sources["docs"].to_list())),
            "top_terms": terms.get(name, []),
            "snippets": [_snippet(t) for t in sample.nearest[name]["text"].to_list()] if name in sample.nearest else [],
        })
    return sorted(rows, key=lambda r: (-r["tokens"], r["component"]))


def cluster_rows(totals: pl.DataFrame) -> list[tuple]:
    """(cluster, component, documents, tokens, mean quality) per cluster, by cluster id; the
    component is the one holding most of the cluster's documents (components may be sources)."""
    per = totals.sort(["docs", "component"], descending=[True, False]).group_by("cluster").agg(
        pl.col("component").first(), pl.col("docs").sum(), pl.col("tokens").sum(),
        (pl.col("quality_sum").sum() / pl.col("quality_n").sum()).alias("quality")).sort("cluster")
    return [(c, comp, n, t, None if q is None or np.isnan(q) else q) for c, comp, n, t, q in per.iter_rows()]


def write_report(out: Path, table: list[dict], summary: dict, clusters: list[tuple], sample: ReportSample) -> None:
    """report.md plus sizes.png, map.png and quality.png in `out`."""
    _plot_sizes(out / "sizes.png", table)
    _plot_map(out / "map.png", sample)
    _plot_quality(out / "quality.png", sample, table)
    atomic_write_text(out / "report.md", _markdown(table, summary, clusters))


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


def _plot_map(path: Path, sample: ReportSample) -> None:
    from sklearn.decomposition import PCA

    picked = sample.map.items()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    if len(picked) >= 3:
        components = np.array([c for c, _ in picked])
        xy = PCA(n_components=2, random_state=sample.seed).fit_transform(np.stack([v for _, v in picked]))
        comps = sorted(set(components))
        colours = plt.get_cmap("tab20", max(len(comps), 1))
        for k, comp in enumerate(comps):
            mask = components == comp
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=colours(k), label=comp)
        ax.legend(markerscale=2, fontsize=7, ncol=2, frameon=False)
    ax.set_title(f"Documents by component (PCA of embeddings, {len(picked):,} sampled)")
    save_png(fig, path)


def _plot_quality(path: Path, sample: ReportSample, table: list[dict]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(table)), 3.6))
    names = [r["component"] for r in table]
    data = [(sample.quality[n].items() if n in sample.quality else []) or [np.nan] for n in names]
    ax.boxplot(data, tick_labels=names, showfliers=False)
    ax.set_ylabel("quality (1-5)")
    ax.set_ylim(1, 5)
    ax.set_title("Quality by component (seeded sample)")
    ax.tick_params(axis="x", rotation=60)
    save_png(fig, path)
