"""Quality: a 1-to-5 score per document (CLIMB step 3, FineWeb-Edu / DCLM style).

(a) `heuristic`: from the statistics the filter stage judges by (stop words, alphabetic words,
    lines ending in punctuation, repeated lines, mean word length), each mapped to [0, 1].
(b) `classifier`: logistic regression (or LightGBM) on the frozen embeddings, trained on the
    user's reference texts (positives) against a seeded random sample of the corpus
    (negatives); its cross-validated ROC AUC is reported. Score = 1 + 4 * P(reference).
`quality` is the classifier's score when reference texts are given, else the heuristic's.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from mixforge.config import MixforgeConfig, section_hash
from mixforge.errors import ConfigError, LedgerError
from mixforge.pipelines.cluster import valid_counts, valid_vectors
from mixforge.pipelines.embed import cached_encoder
from mixforge.pipelines.run import StageInputs, StageOptions, StageResult, map_shards, plan_stage, run_side_stage
from mixforge.pipelines.outputs import load_vector_shard, vector_file, vector_shards
from mixforge.pipelines.quality.model import OLD_PICKLE, Classifier, from_fitted, load_classifier, save_classifier
from mixforge.pipelines.samples import choose_positions, gather
from mixforge.workspace import Workspace, atomic_write_parquet

# Gopher's stop words (datatrove's GopherQualityFilter uses the same list)
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
WORD = re.compile(r"\S+")


# bump when heuristic_score, the scores' layout (scores/<shard>.parquet) or the classifier's files change
# (4: plain arrays, quality_model.py, instead of a pickle)
SCORER_VERSION = 4
PARAGRAPH = re.compile(r"\n\s*\n")


def heuristic_score(text: str) -> float:
    """1 (code, tables, boilerplate) to 5 (clean running prose): the mean of five signals in
    [0, 1], the statistics Gopher, C4 and FineWeb judge documents by."""
    words = WORD.findall(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    paragraphs = [p.strip() for p in PARAGRAPH.split(text) if p.strip()]
    if not words or not lines:
        return 1.0
    alpha = sum(any(ch.isalpha() for ch in w) for w in words) / len(words)
    signals = [
        float(np.clip((alpha - 0.6) / 0.35, 0, 1)),  # words with letters: >= 95% in prose
        min(sum(w.lower() in STOP_WORDS for w in words) / len(words) / 0.12, 1.0),  # ~12% stop words in prose
        sum(p[-1] in ".!?\"':" for p in paragraphs) / len(paragraphs),  # paragraphs that end a sentence
        len(set(lines)) / len(lines),  # lines that are not repeats
        float(np.clip(1 - abs(sum(map(len, words)) / len(words) - 4.8) / 2.5, 0, 1)),  # English word length
    ]
    return float(1 + 4 * np.mean(signals))


def read_reference(paths: list[Path], setting: str = "quality.reference") -> list[str]:
    """Reference texts: JSONL lines with `text` (.jsonl, .jsonl.gz, .jsonl.zst), or whole text
    files (folders are walked). Errors name `setting`, the file and the line."""
    texts: list[str] = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        if not files or not path.exists():
            raise ConfigError(f"{setting}: {path} not found")
        for f in files:
            if f.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
                from datatrove.io import get_datafolder

                with get_datafolder(str(f.parent)).open(f.name, "rt", compression="infer") as fh:
                    for n, line in enumerate(fh, 1):
                        if not line.strip():
                            continue
                        try:
                            texts.append(json.loads(line)["text"])
                        except (json.JSONDecodeError, KeyError, TypeError) as e:
                            raise ConfigError(f"{setting}: {f}:{n}: not a JSON object with `text` ({e})") from None
            else:
                texts.append(f.read_text(encoding="utf-8", errors="replace"))
    return [t for t in texts if t.strip()]


def train_classifier(positives: np.ndarray, negatives: np.ndarray, kind: str, seed: int):
    """Fit on reference (1) vs corpus (0); returns (model, cross-validated ROC AUC mean, std)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x = np.concatenate([positives, negatives])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    if kind == "lightgbm":
        from lightgbm import LGBMClassifier

        model = LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=5,
                               class_weight="balanced", random_state=seed, verbose=-1)
    else:
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    folds = min(5, len(positives), len(negatives))
    if folds < 2:
        raise ConfigError(f"quality.reference: need at least 2 reference texts and 2 corpus documents, got {len(positives)} and {len(negatives)}")
    scores = cross_val_score(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="roc_auc")
    model.fit(x, y)
    return model, float(scores.mean()), float(scores.std())


def quality_fingerprint(cfg: MixforgeConfig, upstream_fingerprint: str) -> str:
    refs = []
    for r in cfg.quality.reference:
        p = cfg.resolve(r)
        refs.append((str(p), p.stat().st_size if p.is_file() else None, p.stat().st_mtime_ns if p.exists() else None))
    q = cfg.quality
    return section_hash(upstream_fingerprint, refs, q.classifier, q.negatives, cfg.seed, cfg.embed.model_dump(), SCORER_VERSION)


def run_quality(cfg: MixforgeConfig, inputs: StageInputs, options: StageOptions = StageOptions()) -> StageResult:
    """Score every kept document into `<workspace>/quality/extra/scores/<shard>.parquet`, one
    dedup shard at a time (finished shards are kept on resume)."""
    upstream = inputs["cluster"]  # its documents are the dedup output it assigned
    q = cfg.quality
    planned = plan_stage(cfg, "quality", quality_fingerprint, upstream, options.force)
    ws = planned.ws

    def body(partial: Path) -> dict:
        t0 = time.perf_counter()
        out = partial / "extra" / "scores"
        out.mkdir(parents=True, exist_ok=True)
        summary: dict = {}
        extra = partial / "extra"
        (extra / OLD_PICKLE).unlink(missing_ok=True)  # an older version's pickle: code if loaded, so never read
        model = load_classifier(extra) if q.reference else None  # after a build (or on resume): the one fitted then
        if model is not None:
            summary["classifier"] = f"{q.classifier} (fitted by an earlier build)"
        elif q.reference:
            reference = read_reference([cfg.resolve(r) for r in q.reference])
            positives = cached_encoder(cfg.embed.model_dump_json(), str(ws.root / "models")).encode(reference)
            shards = vector_shards(ws)
            counts = valid_counts(shards)
            chosen = choose_positions(sum(counts), q.negatives, cfg.seed)
            negatives = gather(chosen, counts, lambda i: valid_vectors(shards[i]))
            fitted, auc, auc_std = train_classifier(positives, negatives, q.classifier, cfg.seed)
            model = from_fitted(fitted, q.classifier)
            save_classifier(extra, model)
            summary.update(reference_texts=len(reference), negatives=len(negatives), classifier=q.classifier,
                           cv_roc_auc=round(auc, 4), cv_roc_auc_std=round(auc_std, 4))
        files = planned.files  # after a build: only the new shards
        calls = [(str(ws.root), str(f), model, str(out / f"{f.stem}.parquet")) for f in files]
        done = map_shards(cfg, score_shard, calls, "quality", [pq.ParquetFile(f).metadata.num_rows for f in files])
        docs, heuristic_sum, classifier_sum, classified = (sum(col) for col in zip(*done)) if done else (0, 0, 0, 0)
        summary = {"documents": docs, "heuristic_mean": round(heuristic_sum / max(docs, 1), 3)} | summary
        if model is not None:
            summary["classifier_mean"] = round(classifier_sum / max(classified, 1), 3)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        return summary

    return run_side_stage(ws, "quality", planned.fingerprint, body, upstream.docs_dir, force=options.force,
                          settings=q.model_dump(), layer=planned.layer, base=planned.base)


def score_shard(ws_root: str, shard: str, model: Classifier | None, target: str) -> tuple[int, float, float, int]:
    """Scores of one dedup shard into `target` (kept when already there): (documents, sum of
    heuristic scores, sum of classifier scores, documents with a classifier score)."""
    if Path(target).exists():
        scores = pl.read_parquet(target)
    else:
        scores = _score_shard(Workspace(Path(ws_root)), Path(shard), model)
        atomic_write_parquet(Path(target), scores)
    return scores.height, scores["heuristic"].sum() or 0, scores["classifier"].sum() or 0, scores["classifier"].count()


def _score_shard(ws: Workspace, shard: Path, model: Classifier | None) -> pl.DataFrame:
    """id, heuristic, classifier (null without reference texts or a usable vector), quality."""
    docs = pl.read_parquet(shard, columns=["id", "text"])
    scores = docs.select("id", pl.col("text").map_elements(heuristic_score, return_dtype=pl.Float64).alias("heuristic"))
    if model is None:
        return scores.with_columns(pl.lit(None, pl.Float64).alias("classifier"), pl.col("heuristic").alias("quality"))
    meta, vectors = load_vector_shard(vector_file(ws, shard))
    if meta["id"].to_list() != scores["id"].to_list():
        raise LedgerError(f"quality: the vectors of {shard.name} are not for its documents; rerun the build with --force")
    valid = meta["valid"].to_numpy()
    prob = np.where(valid, model.probability(vectors), np.nan) if len(vectors) else np.zeros(0)
    scores = scores.with_columns(pl.Series("classifier", 1 + 4 * prob).fill_nan(None))
    return scores.with_columns(pl.coalesce("classifier", "heuristic").alias("quality"))
