"""Source kinds guessed by `init`, the build's warning when filtering removes most of a source,
and `filter-preview`: on the demo slice's real text (its sources without their kinds)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import SLICE, SLICE_KINDS, mixforge_cmd, write_config
from mixforge.config import load_config
from mixforge.ledger import docs_per_source
from mixforge.pipelines.build import build, stage_states
from mixforge.pipelines.filter.report import filter_warnings, reason_setting
from mixforge.pipelines.ingest.source_kind import guess_kind, guess_source_kinds, measure, record_extension
from datatrove.data import Document


def _init(folder: Path, files: list[Path], *extra: str) -> subprocess.CompletedProcess:
    args = mixforge_cmd() + ["init", "--workspace", "ws", "--out", str(folder / "mixforge.yaml"), *extra]
    for f in files:
        args += ["--source", str(f)]
    return subprocess.run(args, capture_output=True, text=True, cwd=folder, timeout=300)


def test_init_guesses_the_slice_kinds_and_the_build_keeps_half_of_each_source(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SLICE, data)
    result = _init(tmp_path, sorted(data.glob("*.jsonl")))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "mixforge.yaml").read_text()
    assert "kind: code  # guessed from 16 records:" in text and "file types .py" in text
    cfg = load_config(tmp_path / "mixforge.yaml")
    guessed = {Path(s.path).name.removesuffix(".jsonl"): s.kind for s in cfg.sources}
    assert guessed == SLICE_KINDS

    cfg.workers = 2
    build(cfg, until="filter")
    ws = cfg.workspace_dir
    before, after = docs_per_source(ws / "ingest" / "docs"), docs_per_source(ws / "filter" / "docs")
    kept = {label: after.get(label, 0) / n for label, n in before.items()}
    assert set(kept) == set(SLICE_KINDS) and min(kept.values()) >= 0.5, kept
    assert filter_warnings(cfg) == []


def test_guesses_match_the_demo_configs_kinds_on_the_whole_demo_corpus(tmp_path):
    from mixforge.demo import write_demo_config

    cfg = load_config(write_demo_config(tmp_path))
    demo_kinds = [s.kind for s in cfg.sources]
    for s in cfg.sources:
        s.kind = "prose"  # the guess must not read the kind it is guessing
    assert [g.kind for g in guess_source_kinds(cfg)] == demo_kinds


def test_init_tells_go_source_by_its_lines_alone(tmp_path):
    # the case: Go source marked prose kept 5 of 1,500 documents
    result = _init(tmp_path, [SLICE.parent / "go" / "go.jsonl"])
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "mixforge.yaml").read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("kind:"))
    assert line.strip().startswith("kind: code  # guessed from 4 records: ") and "code-like lines; language en" in line
    assert "(low confidence, under filters.language.min_score 0.65: the language filter is skipped for code)" in line
    assert load_config(tmp_path / "mixforge.yaml").sources[0].filters == {}


def test_init_keeps_a_source_in_another_language_in_its_own_language(tmp_path):
    lang = SLICE.parent / "lang"
    result = _init(tmp_path, [lang / "de_apropos.txt", lang / "fr_apropos.txt"])
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "mixforge.yaml").read_text()
    assert "language de 0.99" in text and "language/other_language (100%)" in text
    cfg = load_config(tmp_path / "mixforge.yaml")
    assert [s.filters for s in cfg.sources] == [{"language": {"languages": ["de"]}}, {"language": {"languages": ["fr"]}}]
    assert [cfg.source_filters(s).language.languages for s in cfg.sources] == [["de"], ["fr"]]


def test_build_warns_when_filtering_removes_most_of_a_source(tmp_path):
    shutil.copy(SLICE / "code.jsonl", tmp_path / "code.jsonl")
    shutil.copy(SLICE / "bible.jsonl", tmp_path / "bible.jsonl")
    sources = [{"path": "bible.jsonl", "kind": "prose"}, {"path": "code.jsonl", "kind": "prose"}]  # code marked prose
    config = write_config(tmp_path, sources)
    result = subprocess.run(mixforge_cmd() + ["build", str(config), "--until", "filter"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr  # the Bible keeps its documents: no warning for it
    line = warnings[0]
    assert "source 'code' (sources[1], kind prose)" in line and "of 16 documents" in line
    assert "gopher_quality/gopher_below_alpha_threshold" in line
    assert "`sources[1].kind: code`" in line and "`sources[1].filters.gopher_quality.max_non_alpha_words_ratio`" in line
    status = subprocess.run(mixforge_cmd() + ["status", str(config), "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["filter_warnings"] == [line.removeprefix("warning: ")]

    # the threshold changes no document: raising it silences the warning, and the filter stage stays done
    data = yaml.safe_load(config.read_text())
    data["filters"] = {"warn_removed_share": 1.0}
    config.write_text(yaml.safe_dump(data))
    cfg = load_config(config)
    assert filter_warnings(cfg) == [] and stage_states(cfg)["filter"] == "done"


def test_filter_preview_shows_reasons_with_examples_and_writes_nothing(tmp_path):
    shutil.copy(SLICE / "code.jsonl", tmp_path / "code.jsonl")
    shutil.copy(SLICE / "quotes.jsonl", tmp_path / "quotes.jsonl")
    config = write_config(tmp_path, [{"path": "code.jsonl", "kind": "prose"}, {"path": "quotes.jsonl", "kind": "prose"}])
    result = subprocess.run(mixforge_cmd() + ["filter-preview", str(config), "--sample", "8", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    previews = json.loads(result.stdout)
    assert [p["source"] for p in previews] == ["code", "quotes"] and all(p["sample"] == 8 for p in previews)
    code = previews[0]
    assert code["kept"] + sum(r["documents"] for r in code["reasons"]) == 8
    assert code["kept"] <= 2  # prose rules remove code
    assert {r["reason"].split("/")[0] for r in code["reasons"]} <= {"language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"}
    assert all(1 <= len(r["examples"]) <= 2 and all(len(e.split(": ", 1)[1]) <= 80 for e in r["examples"]) for r in code["reasons"])
    assert code["reasons"][0]["examples"][0].startswith("code.jsonl:")
    assert not (tmp_path / "ws").exists()

    table = subprocess.run(mixforge_cmd() + ["filter-preview", str(config), "--sample", "8"], capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "sources[0] code (kind prose)" in table.stdout and code["reasons"][0]["reason"][:14] in table.stdout
    assert "warning: on this sample, the filters would remove" in table.stderr

    missing = subprocess.run(mixforge_cmd() + ["filter-preview", str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "config file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_the_evidence_names_low_language_confidence_and_code_files():
    code = [Document(text=t["text"], id=f"code/x:{i}", metadata={"source_id": t["id"]})
            for i, t in enumerate(map(json.loads, (SLICE / "code.jsonl").read_text().splitlines()))]
    assert record_extension(code[3]) == ".py"  # from 'code/usr/lib/python3.11/difflib.py#8'
    features = measure(code)
    guess = guess_kind(features, min_language_score=0.99)
    assert guess.kind == "code" and "file types .py" in guess.evidence
    assert "low confidence, under filters.language.min_score 0.99: the language filter is skipped for code" in guess.evidence
    # without the file names, the lines alone say code
    features.code_extensions, features.top_extensions = 0.0, []
    assert guess_kind(features).kind == "code"


def test_every_reason_names_a_setting_except_length_and_malformed():
    assert reason_setting("gopher_quality/gopher_below_alpha_threshold") == ("gopher_quality", "max_non_alpha_words_ratio", None)
    assert reason_setting("gopher_repetition/duplicated_5_n_grams") == ("gopher_repetition", "dup_n_grams", [])
    assert reason_setting("language/low_confidence") == ("language", "min_score", 0.0)
    assert reason_setting("c4_quality/rejected") == ("c4_quality", "enabled", False)
    assert reason_setting("length/too_short") is None and reason_setting("malformed/duplicate_id") is None
