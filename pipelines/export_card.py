"""The dataset card of an export: README.md in the Hugging Face dataset-card format (YAML header:
license, language, size_categories, configs with data_files, pretty_name, tags) with the mixture
table, the filtering and dedup ledger, the search's predicted and verified figures, limitations,
and a PNG of the mixture against the natural shares."""

from __future__ import annotations

from pathlib import Path

import yaml

from mixforge.config import MixforgeConfig
from mixforge.plots import pyplot, save_png
from mixforge.workspace import Workspace, atomic_write_text, read_json


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def write_card(root: Path, m: dict, ws: Workspace, cfg: MixforgeConfig) -> None:
    docs = sum(s["documents"] for s in m["shards"])
    header = {"license": "other", "language": ["en"], "size_categories": [size_category(docs)],
              "pretty_name": f"mixforge mixture {m['mixture_id']}", "tags": ["mixforge", "pretraining", "data-mixture", m["format"]]}
    if m["format"] in ("parquet", "jsonl"):
        ext = ".parquet" if m["format"] == "parquet" else ".jsonl.zst"
        header["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": f"**/*{ext}"}]}]
    comps = load_descriptions(ws)
    natural = {c: s["available_tokens"] for c, s in m["components"].items()}
    total_nat = sum(natural.values()) or 1
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# mixforge mixture {m['mixture_id']}", "",
             f"{m['tokens']:,} tokens ({docs:,} documents) in {len(m['shards'])} {m['format']} shard(s), {m['mode']} mode, "
             f"seed {m['seed']}. Tokenizer sha256 `{m['tokenizer']['sha256'][:16]}`, vocabulary {m['tokenizer']['vocab_size']:,}. "
             "Every shard's sha256 is in manifest.json; `mixforge verify` checks them.", "",
             "## Mixture", "", "| component | share | natural share | tokens | epochs | what it contains |",
             "|---|---:|---:|---:|---:|---|"]
    for c, s in m["components"].items():
        lines.append(f"| {c} | {s['share']:.3f} | {natural[c] / total_nat:.3f} | {s['tokens']:,} | {s['epochs']:.2f} | {comps.get(c, '')} |")
    lines += ["", "![mixture against natural shares](mixture.png)", "", "## Filtering and deduplication", "",
              "| stage | in | out | removed |", "|---|---:|---:|---:|"]
    ledger = read_json(ws.ledger_path) or {}
    for stage, row in ledger.items():
        lines.append(f"| {stage} | {row['docs_in']:,} | {row['docs_out']:,} | {row['docs_removed']:,} |")
    lines += ["", f"Settings: filters `{cfg.filters.model_dump(mode='json')}`, dedup `{cfg.dedup.model_dump(mode='json')}`.", ""]
    search = m["provenance"].get("search")
    lines += ["## Search", ""]
    if search:
        fit = search.get("fit") or {}
        lines.append(f"Strategy {search['strategy']}, target `{search['objective']}`, predicted {search.get('predicted')}"
                     + (f", predictor CV Spearman {fit['spearman']:.3f} over {fit['runs']} runs." if fit else "."))
        verified = m["provenance"].get("verified")
        if verified:
            lines += ["", "| mixture | measured mean | std | predicted |", "|---|---:|---:|---:|"]
            for name, r in verified["results"].items():
                pred = "" if r["predicted"] is None else f"{r['predicted']:.4f}"
                lines.append(f"| {name} | {r['mean']:.4f} | {r['std']:.4f} | {pred} |")
        else:
            lines.append("\nNot verified with fresh proxies.")
    else:
        lines.append("The weights were given by hand, not found by a search.")
    lines += ["", "## Limitations", "",
              "- Components are clusters of the source corpus; their descriptions are their most distinctive terms.",
              "- Repeated components (epochs > 1) repeat whole documents; see the epochs column.",
              "- Licences are those of the sources (see their data cards); this card sets `license: other`."]
    atomic_write_text(root / "README.md", "\n".join(lines) + "\n")
    plot_shares(root / "mixture.png", m, natural, total_nat)


def load_descriptions(ws: Workspace) -> dict[str, str]:
    data = read_json(ws.stage_dir("components") / "extra" / "components.json") or {}
    return {c["component"]: ", ".join(c.get("top_terms", [])[:5]) for c in data.get("components", [])}


def plot_shares(path: Path, m: dict, natural: dict, total: int) -> None:
    plt = pyplot()
    comps = list(m["components"])
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(comps) + 2), 3.4))
    x = range(len(comps))
    ax.bar([i - 0.2 for i in x], [natural[c] / total for c in comps], 0.4, label="natural")
    ax.bar([i + 0.2 for i in x], [m["components"][c]["share"] for c in comps], 0.4, label="export")
    ax.set_xticks(list(x), comps, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("token share")
    ax.legend(fontsize=8)
    save_png(fig, path)
