"""The dataset card of an export: README.md in the Hugging Face dataset-card format, rendered from
data_cards/export_card.md.jinja. YAML header (license, language, size_categories, configs with
data_files, pretty_name, tags), the mixture table, how each trainer loads it, the filtering and
dedup ledger with its settings, the search's predicted and verified figures, limitations; PNGs
of the mixture against the natural shares and of the component sizes (one PNG, two panels)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mixforge.config import MixforgeConfig
from mixforge.data_cards import render
from mixforge.pipelines.outputs import load_components
from mixforge.plots import pyplot, save_png
from mixforge.pipelines.stages import DOCUMENT_STAGES, ledger as stage_ledger
from mixforge.workspace import Workspace, atomic_write_text

LOADERS = {
    "megatron_data_path": "Megatron-LM: `trainer/megatron_data_path.txt` holds the `--data-path` blend.",
    "nanotron_dataset_weights": "nanotron: `trainer/nanotron_dataset_weights.json` weighs the `.ds` folders.",
    "olmo_core_source_mixture": "OLMo-core: `trainer/olmo_core_source_mixture.json` is a source mixture over the `.npy` files.",
    "hf_interleave_probabilities": "Hugging Face `datasets`: `trainer/load_hf_datasets.py` (`interleave_datasets` by per-document probability).",
    "mosaicml_streams": "MosaicML streaming: `trainer/load_mosaicml_streaming.py` (one `Stream` per folder with its proportion).",
}
SNIPPETS = {
    "load_torchtitan.py": "torchtitan: `trainer/load_torchtitan.py` gives an `InterleavedHuggingFaceTextDataLoader` config.",
    "load_litgpt.py": "litgpt: `trainer/load_litgpt.py` converts to litdata chunks and mixes them with `CombinedStreamingDataset`.",
}


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def write_card(root: Path, m: dict, ws: Workspace, cfg: MixforgeConfig) -> None:
    docs = sum(s["documents"] for s in m["shards"])
    licences = {src.get("license") for src in m["sources"].values()}
    shared = licences.pop() if len(licences) == 1 else None  # one licence for every source: the card's own
    header = {"license": shared.lower() if shared else "other", "language": ["en"], "size_categories": [size_category(docs)],
              "pretty_name": f"mixforge mixture {m['mixture_id']}", "tags": ["mixforge", "pretraining", "data-mixture", m["format"]]}
    if m["format"] in ("parquet", "jsonl"):
        ext = ".parquet" if m["format"] == "parquet" else ".jsonl.zst"
        header["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": f"**/*{ext}"}]}]
        if m["mode"] == "reference":  # one config per component: load_dataset(repo, "<component>")
            header["configs"] += [{"config_name": c, "data_files": [{"split": "train", "path": f"{c}/*{ext}"}]}
                                  for c in sorted({s["component"] for s in m["shards"]})]
    natural = {c: s["available_tokens"] for c, s in m["components"].items()}
    total_nat = sum(natural.values()) or 1
    described = load_descriptions(ws)
    components = [{"name": c, "share": s["share"], "natural": natural[c] / total_nat, "tokens": s["tokens"],
                   "documents": s["documents"], "epochs": s["epochs"], **described.get(c, {"terms": "", "sources": ""})}
                  for c, s in m["components"].items()]
    search, verified = m["provenance"].get("search"), m["provenance"].get("verified")
    text = render(
        "export_card.md.jinja", header=yaml.safe_dump(header, sort_keys=False).strip(), title=header["pretty_name"],
        m=m, documents=docs, components=components, sources=list(m["sources"].items()), loaders=_loaders(m["trainer"]),
        ledger=_ledger(ws),
        settings=_settings(cfg), search=search, fit=(search or {}).get("fit"),
        verified=list(verified["results"].items()) if verified else None)
    atomic_write_text(root / "README.md", text)
    plot_mixture(root / "mixture.png", m, natural, total_nat)


def load_descriptions(ws: Workspace) -> dict[str, dict]:
    """Each component's top terms and its documents' source labels, from the components stage."""
    data = load_components(ws) or {}
    out = {}
    for c in data.get("components", []):
        sources = sorted(c.get("sources", {}).items(), key=lambda kv: -kv[1])
        out[c["component"]] = {"terms": ", ".join(c.get("top_terms", [])[:5]),
                               "sources": ", ".join(f"{label} {n}" for label, n in sources[:3])}
    return out


def _loaders(trainer: dict) -> list[str]:
    lines = [line for key, line in LOADERS.items() if key in trainer]
    return lines + [line for name, line in SNIPPETS.items() if name in trainer.get("snippets", {})]


def _ledger(ws: Workspace) -> list[dict]:
    """The document stages in pipeline order, with their three largest removal reasons."""
    ledger = stage_ledger(ws)
    rows = []
    for stage in DOCUMENT_STAGES:
        if stage in ledger:
            row = ledger[stage]
            top = sorted(row.get("removed", {}).items(), key=lambda kv: -kv[1]["docs"])[:3]
            rows.append({**row, "stage": stage, "reasons": ", ".join(f"{r} ({v['docs']})" for r, v in top)})
    return rows


def _settings(cfg: MixforgeConfig) -> str:
    filters = {name: f for name, f in cfg.filters.model_dump(mode="json").items() if isinstance(f, dict) and f.get("enabled")}
    return yaml.safe_dump({"filters": filters, "dedup": cfg.dedup.model_dump(mode="json")}, sort_keys=False).strip()


def plot_mixture(path: Path, m: dict, natural: dict, total: int) -> None:
    """One PNG, two panels: token shares (natural against exported) and component sizes
    (available against exported tokens, labelled with the epochs the export takes)."""
    plt = pyplot()
    comps = m["components"]
    names = list(comps)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(names) + 3), 3.4))
    panels = [(("natural", [natural[c] / total for c in names]), ("export", [comps[c]["share"] for c in names]), "token share", None),
              (("available", [comps[c]["available_tokens"] for c in names]), ("exported", [comps[c]["tokens"] for c in names]),
               "tokens", [f"{comps[c]['epochs']:.2f} ep" for c in names])]
    x = range(len(names))
    for ax, (left, right, ylabel, labels) in zip(axes, panels):
        ax.bar([i - 0.2 for i in x], left[1], 0.4, label=left[0])
        bars = ax.bar([i + 0.2 for i in x], right[1], 0.4, label=right[0])
        if labels:
            ax.bar_label(bars, labels, fontsize=7)
        ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    save_png(fig, path)
