"""The sections of proxy training, mixture search and export."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixforge.config.section import Section
from mixforge.mixture import phase_ends_problem


MIN_REFRESH_RUNS = 3  # search.refresh_runs: the carried runs' weight is cross-validated on today's runs


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
        "auto", description="Sweeps train runs in groups in one process (`train_many`, stacked models under vmap); auto: on CUDA only (on CPU it is slower). Each run keeps its checkpoints as when trained alone."
    )
    batched_group: int | Literal["auto"] = Field(
        "auto", description="Most runs trained together in one batched group; auto: as many as fit in the GPU's free memory "
        "(weights, gradients, AdamW state and activations, a fifth kept free), 16 on CPU."
    )

    @field_validator("batched_group")
    @classmethod
    def _group(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("must be at least 1, or auto")
        return value

    init: str = Field(
        "scratch", description="Where every proxy run starts: scratch (fresh weights), base (one proxy trained on the natural "
        "mixture for base_tokens, once per data and settings) or the path of a checkpoint of the same preset and vocabulary "
        "(a mixforge checkpoint or a state dict; loaded as tensors only)."
    )
    base_tokens: int = Field(500_000, ge=1, description="Training tokens of the shared base (proxy.init: base).")


class SearchConfig(Section):
    """Mixture search over the components: strategy, target, predictor, candidates, verification."""

    strategy: Literal["regmix", "climb", "influence", "bayesopt", "bayesopt_mf", "merge", "aioli", "cmr"] = Field("regmix", description="Search strategy.")
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
    merge_candidates: int = Field(256, ge=1, description="merge: candidate mixtures scored by evaluating merged models.")
    merge_eval_tokens: int = Field(
        8192, ge=0, description="merge: tokens scored per held-out text for each candidate (a seeded sample of windows; 0: "
        "every token); the best 8 are scored again on the whole text."
    )
    aioli_rounds: int = Field(4, ge=1, description="aioli: rounds of the online run, each opened by probes and ended on its "
                              "updated mixture: the phases of the proposed schedule.")
    aioli_probe_share: float = Field(0.2, gt=0, lt=1, description="aioli: share of each round spent probing the components "
                                     "(at least one step each).")
    aioli_eta: float = Field(1.0, gt=0, description="aioli: exponentiated-gradient step: a component's share grows by up to "
                             "e^eta per round, in proportion to its loss drop per probe step.")
    aioli_eval_tokens: int = Field(2048, ge=0, description="aioli: target tokens scored around each probe (one seeded sample "
                                   "of windows; 0: every token).")
    cmr_domain: list[str] = Field(default_factory=list, description="cmr: the domain components (the rest are general data).")
    cmr_ratios: list[float] = Field([0.1, 0.2, 0.35, 0.5, 0.75, 1.0], min_length=3, description="cmr: domain shares one "
                                    "proxy each trains at, from the base (general data alone, 0, always trains too).")
    cmr_tolerance: float = Field(0.01, gt=0, description="cmr: the general loss a proposal may give up, as a share of the "
                                 "general loss of general data alone at the same tokens.")
    cmr_checkpoints: int = Field(4, ge=2, description="cmr: checkpoints per proxy, each a point (tokens, ratio, general loss) of the law.")
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
        "as evidence; auto: 2 per component whose tokens changed by more than 25% (at least 6, at most search.runs); "
        "off: no carried runs, the full budget. At least 3.")
    @field_validator("refresh_runs")
    @classmethod
    def _enough_refresh(cls, value):
        if value not in ("auto", "off") and value < MIN_REFRESH_RUNS:
            raise ValueError(f"must be at least {MIN_REFRESH_RUNS}, or auto, or off: how much the carried runs count is "
                             "chosen by cross-validation on today's runs, which needs 3 of them")
        return value

    @field_validator("cmr_ratios")
    @classmethod
    def _ratios(cls, value):
        if any(not 0 < r <= 1 for r in value):
            raise ValueError("domain shares in (0, 1]: general data alone (0) trains anyway")
        return sorted(set(value))

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
