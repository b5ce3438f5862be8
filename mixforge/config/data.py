"""The sections of the data build: sources, dedup, embed, cluster and quality."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixforge.config.section import Section, SourceFormat, SourceKind


class SourceConfig(Section):
    """One input: a file, a folder or a glob, read with datatrove."""

    path: str = Field(..., description="File, folder or glob; relative paths are relative to the config file. Or an "
                      "fsspec URL (s3://bucket/prefix/*.jsonl.zst, gs://..., hf://datasets/org/name/...), read with the "
                      "endpoint and credentials of the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never the config's.")
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
