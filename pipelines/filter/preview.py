"""`mixforge filter-preview`: what each source's filters would remove, on a seeded sample of its
records, before any build. Runs the build's own filter chain (`build_filters` + `FilterChain`)
in-process and writes nothing."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from datatrove.data import Document

from mixforge.config import MixforgeConfig
from mixforge.pipelines.filter.stage import FilterChain, build_filters
from mixforge.pipelines.ingest import SAMPLE, sample_records, source_key

EXAMPLES = 2  # per reason
EXAMPLE_CHARS = 80


def run_chain(cfg: MixforgeConfig, index: int, docs: list[Document], settings=None) -> list[tuple[Document, str | None]]:
    """(document, removal reason or None) for each of `docs` under source `index`'s filters
    (`settings`: a FiltersConfig to try instead of the configured one). Documents are copied:
    C4 trims the texts it keeps."""
    chain = build_filters(settings or cfg.source_filters(cfg.sources[index]))
    copies = [Document(text=d.text, id=d.id, metadata={**d.metadata, "reason": None}) for d in docs]
    step = FilterChain({source_key(cfg, index): chain}, duplicate_ids={})  # ids start with the source key
    return [(d, d.metadata.get("reason")) for d in step.run(copies)]


def preview_source(cfg: MixforgeConfig, index: int, n: int = SAMPLE) -> dict:
    """One source's preview: sample size, kept, and per reason its count and examples."""
    docs = sample_records(cfg, index, n)
    reasons: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for doc, reason in run_chain(cfg, index, docs):
        if reason is None:
            continue
        reasons[reason] += 1
        if len(examples[reason]) < EXAMPLES:
            text = " ".join(doc.text.split())  # a removed document's text is restored whole
            where = str(doc.metadata.get("origin")).rsplit("/", 1)[-1]  # file:line
            examples[reason].append(f"{where}: {text[:EXAMPLE_CHARS]}")
    source = cfg.sources[index]
    return {
        "source": source.label or source_key(cfg, index),
        "index": index,
        "kind": source.kind,
        "sample": len(docs),
        "kept": len(docs) - sum(reasons.values()),
        "reasons": [{"reason": r, "documents": c, "share": c / max(len(docs), 1), "examples": examples[r]}
                    for r, c in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
    }


def filter_preview(cfg: MixforgeConfig, n: int = SAMPLE) -> list[dict]:
    """Every source's preview, in config order."""
    return [preview_source(cfg, i, n) for i in range(len(cfg.sources))]


MAX_RELAXED = 4  # rules init may turn off per source; past that the source needs a person's look


def relax_filters(cfg: MixforgeConfig, index: int, docs: list[Document], language: str = "") -> tuple[dict, str]:
    """Per-source filter overrides under which source `index` keeps more than
    1 - filters.warn_removed_share of `docs` (its sample), found by turning off, one at a time,
    the rule that removes the most (length and malformed records are never relaxed), and a note
    naming each rule with the share of the sample it removed ("" when nothing was relaxed).
    `language`: the source's own language, kept when `language/other_language` removes most."""
    from mixforge.pipelines.filter.report import reason_setting

    source = cfg.sources[index]
    overrides: dict[str, dict] = {k: dict(v) for k, v in source.filters.items()}
    notes: list[str] = []
    pending, first = docs, None
    for _ in range(MAX_RELAXED):
        trial = source.model_copy(update={"filters": overrides})
        removed = [(d, r) for d, r in run_chain(cfg, index, pending, cfg.source_filters(trial)) if r]
        first = len(removed) / max(len(docs), 1) if first is None else first
        if len(removed) / max(len(docs), 1) <= cfg.filters.warn_removed_share:
            break
        reason, count = Counter(r for _, r in removed).most_common(1)[0]
        setting = reason_setting(reason)
        if setting is None:
            break  # the biggest loss is one no setting should undo
        name, key, value = setting
        if key == "languages":  # a source in another language keeps its own
            key, value = ("languages", [language]) if language else ("enabled", False)
        overrides.setdefault(name, {})[key] = value
        notes.append(f"{reason} ({count / len(docs):.0%})")
        pending = [d for d, _ in removed]  # relaxing only loosens: kept documents stay kept
    if not notes:
        return overrides, ""
    return overrides, (f"set by init: the {source.kind} filters would remove {first:.0%} of a {len(docs)}-record sample; "
                       f"relaxed what removed most: {', '.join(notes)}")


def suggest_source_settings(cfg: MixforgeConfig, n: int = SAMPLE, done=None) -> dict[int, dict[str, str]]:
    """What `mixforge init` writes per source: sets each source's `kind` to its guess and, where
    the guessed kind's filters would still remove more than filters.warn_removed_share of the
    sample, per-source `filters:` overrides (see `relax_filters`). Returns {index: {key: comment}}
    with the evidence, for the config's comments; `done(index, notes)` is called per source."""
    from mixforge.pipelines.language_id import OfflineFT176
    from mixforge.pipelines.ingest import guess_kind, measure

    lid = OfflineFT176()
    notes: dict[int, dict[str, str]] = {}
    for i, source in enumerate(cfg.sources):
        docs = sample_records(cfg, i, n)
        guess = guess_kind(measure(docs, lid), cfg.filters.language.min_score)
        source.kind = guess.kind
        notes[i] = {"kind": guess.evidence}
        overrides, relaxed = relax_filters(cfg, i, docs, guess.features.language)
        if relaxed:
            source.filters = overrides
            notes[i]["filters"] = relaxed
        if done:
            done(i, notes[i])
    return notes


def write_starter_config(sources: list[str], workspace: str, out: Path, label_field: str | None, force: bool,
                         done=None) -> None:
    """`mixforge init`: a commented default config at `out` that reads `sources` (files, folders
    or globs), each source's kind (and filter overrides) guessed from a seeded sample of its
    records by `suggest_source_settings`; `done(index, source, notes)` is called per source."""
    from mixforge.config.template import default_config, render_config
    from mixforge.errors import MixforgeError
    from mixforge.workspace import atomic_write_text

    if out.exists() and not force:
        raise MixforgeError(f"{out} exists; pass --force to overwrite it")
    if not sources:
        raise MixforgeError("give at least one --source PATH")
    base = out.resolve().parent
    missing = [s for s in sources if "*" not in s and not Path(s).exists()]
    if missing:
        raise MixforgeError(f"--source not found: {', '.join(missing)}")
    cfg = default_config([str(Path(s).resolve()) for s in sources], workspace, label_field, base)
    cfg._base_dir = base  # the guesses read the sources as the build will
    notes = suggest_source_settings(cfg, done=done and (lambda i, note: done(i, cfg.sources[i], note)))
    atomic_write_text(out, render_config(cfg, notes))
