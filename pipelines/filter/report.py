"""What filtering removed per source, the setting behind each removal reason, and the warning
the build prints when a source loses more than `filters.warn_removed_share` of its documents.

Counts come from the workspace's files (ingest's kept shards and the filter stage's
`removed/<reason>/filter-*.parquet`, both with a `source` column), so `build` and `status`
report the same thing and the threshold can change without refiltering.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import pyarrow.parquet as pq

from mixforge.config import PROSE_ONLY_FILTERS, MixforgeConfig
from mixforge.ledger import docs_per_source
from mixforge.pipelines.ingest import source_keys
from mixforge.workspace import Workspace

# reason (`<filter>/<rule>`) -> (filter, setting, value that turns the rule off). A value of
# None in the YAML disables a Gopher rule; settings without an off value turn the filter off.
_GOPHER_QUALITY = {
    "gopher_short_doc": "min_doc_words", "gopher_long_doc": "max_doc_words",
    "gopher_below_avg_threshold": "min_avg_word_length", "gopher_above_avg_threshold": "max_avg_word_length",
    "gopher_too_many_hashes": "max_symbol_word_ratio", "gopher_too_many_ellipsis": "max_symbol_word_ratio",
    "gopher_too_many_bullets": "max_bullet_lines_ratio", "gopher_too_many_end_ellipsis": "max_ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "max_non_alpha_words_ratio", "gopher_enough_stop_words": "min_stop_words",
}
_FIXED = {
    "c4_quality/too_few_sentences": ("c4_quality", "min_num_sentences", -1),
    "c4_quality/curly_bracket": ("c4_quality", "filter_curly_bracket", False),
    "c4_quality/lorem_ipsum": ("c4_quality", "filter_lorem_ipsum", False),
    "fineweb_quality/line_punct_ratio": ("fineweb_quality", "line_punct_thr", 0.0),
    "fineweb_quality/short_line_ratio": ("fineweb_quality", "short_line_thr", 1.0),
    "fineweb_quality/char_dup_ratio": ("fineweb_quality", "char_duplicates_ratio", 1.0),
    "language/low_confidence": ("language", "min_score", 0.0),
}
NOT_RELAXED = ("length/", "malformed/")  # too short, too long and broken records stay removed


def reason_setting(reason: str) -> tuple[str, str, Any] | None:
    """(filter, setting, off value) behind a removal reason; None for reasons no filter setting
    should relax (length, malformed records)."""
    if reason.startswith(NOT_RELAXED):
        return None
    if reason in _FIXED:
        return _FIXED[reason]
    name, _, rule = reason.partition("/")
    if name == "gopher_quality" and rule in _GOPHER_QUALITY:
        return name, _GOPHER_QUALITY[rule], None
    if name == "gopher_repetition":
        if rule in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
            return name, rule, None
        if re.fullmatch(r"top_\d+_gram", rule):
            return name, "top_n_grams", []
        if re.fullmatch(r"duplicated_\d+_n_grams", rule):
            return name, "dup_n_grams", []
    if name == "language" and rule == "other_language":
        return name, "languages", None  # the caller knows which language the source is in
    return (name, "enabled", False) if name in PROSE_ONLY_FILTERS["code"] else None


def source_index(cfg: MixforgeConfig, label: str) -> int | None:
    """The config source a label comes from: the one labelled so (or named so by its file), else
    the only source with `label_field`; None when it cannot be told."""
    keys = source_keys(cfg)
    for i, s in enumerate(cfg.sources):
        if s.label_field is None and (s.label or keys[i]) == label:
            return i
    by_field = [i for i, s in enumerate(cfg.sources) if s.label_field is not None]
    return by_field[0] if len(by_field) == 1 else None


def filter_removals(ws: Workspace) -> dict[str, dict]:
    """label -> {"in": documents entering the filter stage, "reasons": {reason: documents}}."""
    entered = docs_per_source(ws.docs_dir("ingest"))
    reasons: dict[str, Counter] = defaultdict(Counter)
    for f in ws.removed_files("filter"):
        table = pq.read_table(f, columns=["source", "reason"])
        for label, reason in zip(table["source"].to_pylist(), table["reason"].to_pylist()):
            reasons[label][reason] += 1
    return {label: {"in": n, "reasons": dict(reasons.get(label, {}))} for label, n in sorted(entered.items())}


def removal_warning(cfg: MixforgeConfig, label: str, entered: int, reasons: dict[str, int], what: str = "filtering removed") -> str | None:
    """One line when `reasons` remove more than `filters.warn_removed_share` of a source's
    `entered` documents: the share, the top 3 reasons and the settings that would change them."""
    removed = sum(reasons.values())
    if not entered or removed / entered <= cfg.filters.warn_removed_share:
        return None
    index = source_index(cfg, label)
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    prefix = f"sources[{index}]." if index is not None else ""
    scope = f"{prefix}filters." if index is not None else "filters."
    settings = []
    for reason, _ in top:
        setting = reason_setting(reason)
        if setting and f"{scope}{setting[0]}.{setting[1]}" not in settings:
            settings.append(f"{scope}{setting[0]}.{setting[1]}")
    kind = cfg.sources[index].kind if index is not None else None
    # the kinds that skip the filter behind the top reason come first: often the real fix
    kinds = [f"`{prefix}kind: {k}` (skips {', '.join(PROSE_ONLY_FILTERS[k])})" for k in ("reference", "code")
             if kind and k != kind and top[0][0].split("/")[0] in PROSE_ONLY_FILTERS[k]]
    fix = " or ".join(kinds + [f"`{s}`" for s in settings])
    where = f" (sources[{index}], kind {kind})" if index is not None else ""
    top_text = ", ".join(f"{r} {n:,}" for r, n in top)
    advice = f"; to keep more set {fix}" if fix else ""
    hint = "; `mixforge filter-preview` shows examples" if what == "filtering removed" else ""
    return (f"{what} {removed / entered:.0%} of source {label!r}{where}: {removed:,} of {entered:,} documents; "
            f"top reasons: {top_text}{advice} (warning above filters.warn_removed_share {cfg.filters.warn_removed_share:g}{hint})")


def filter_warnings(cfg: MixforgeConfig) -> list[str]:
    """The warnings for the workspace's filter stage (empty when it has not run)."""
    ws = Workspace(cfg.workspace_dir)
    if ws.stage_record("filter") is None:
        return []
    out = []
    for label, row in filter_removals(ws).items():
        line = removal_warning(cfg, label, row["in"], row["reasons"])
        if line:
            out.append(line)
    return out
