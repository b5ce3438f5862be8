import json
from pathlib import Path

import polars as pl

from conftest import SLICE, write_config
from mixforge.config import load_config
from mixforge.pipelines.build import build

NO_FILTERS = {k: {"enabled": False} for k in ("language", "gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")}


def _legal() -> list[dict]:
    return [json.loads(l) for l in (SLICE / "legal.jsonl").read_text().splitlines()]


def _run(tmp_path: Path, rows: list[dict], **dedup) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(write_config(tmp_path, [{"path": "docs.jsonl", "filters": NO_FILTERS}], dedup=dedup))
    *_, deduped = build(cfg, until="dedup")
    kept = pl.read_parquet(sorted((tmp_path / "ws" / "dedup" / "docs").glob("*.parquet")))
    files = sorted((tmp_path / "ws" / "removed").rglob("dedup-*.parquet"))
    removed = pl.read_parquet(files) if files else pl.DataFrame(schema={"id": pl.String, "reason": pl.String, "kept_id": pl.String})
    return deduped.counts, kept, removed


def test_exact_and_near_duplicates_name_the_kept_document(tmp_path):
    legal = _legal()
    base = max(legal, key=lambda r: len(r["text"]))["text"]
    words = base.split(" ")
    edited = " ".join(w if i % 97 else w.upper() + "S" for i, w in enumerate(words))  # ~1% of words changed
    rows = [
        {"id": "first", "text": base},
        {"id": "spacing", "text": "  " + base.replace(" ", "   ").upper() + "\n\n"},  # same normalised text
        {"id": "edited", "text": edited},
        {"id": "edited-again", "text": edited.replace("the ", "a ", 3)},
    ] + [{"id": f"other{i}", "text": r["text"]} for i, r in enumerate(legal) if r["text"] != base]
    counts, kept, removed = _run(tmp_path, rows)
    by_id = {r["id"]: r for r in removed.iter_rows(named=True)}
    family = {f"docs/docs.jsonl:{n}" for n in (1, 3, 4)}  # the original and its two edits
    survivor = family & set(kept["id"])
    assert len(survivor) == 1, "exactly one of a near-duplicate cluster is kept"
    (survivor,) = survivor
    for doc_id in family - {survivor}:
        assert by_id[doc_id]["reason"] == "near_duplicate" and by_id[doc_id]["kept_id"] == survivor
    # the exact copy of the original points at the document that was kept, never at a removed one
    assert by_id["docs/docs.jsonl:2"]["reason"] == "exact_duplicate"
    assert by_id["docs/docs.jsonl:2"]["kept_id"] == survivor
    # every removed duplicate points at a document that was kept
    assert set(removed["kept_id"]) <= set(kept["id"])
    assert not set(removed["id"]) & set(kept["id"])
    assert counts["docs_in"] == kept.height + removed.height


def test_slice_licences_exact_copies_are_found(tmp_path):
    legal = _legal()
    texts = [r["text"] for r in legal]
    expected = len(texts) - len(set(texts))  # the slice keeps byte-identical copyright files
    assert expected >= 3
    counts, kept, removed = _run(tmp_path, legal, minhash=False)
    assert counts["removed"]["exact_duplicate"]["docs"] == expected
    assert kept["text"].n_unique() == kept.height


def test_dedup_can_be_switched_off(tmp_path):
    legal = _legal()
    counts, kept, removed = _run(tmp_path, legal, exact=False, minhash=False)
    assert counts["docs_removed"] == 0 and kept.height == len(legal)
