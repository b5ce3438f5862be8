"""The quality classifier's reference set: mixforge/demo/reference.jsonl.zst.

    python scripts/build_demo_corpus.py --reference   # only the reference set (reads the shipped corpus)
    python scripts/build_demo_corpus.py               # a full build makes it right after the corpus

"High-quality or target examples" in the FineWeb-Edu / DCLM sense: explanatory, educational
technical prose that a classifier learns to tell apart from a random sample of the corpus. It is
the Python 3.11 tutorial and HOWTOs (reST sources from python3.11-doc), cut and thinned with the
corpus script's helpers. It must not overlap the corpus, or the classifier would see the same
text on both sides: files the corpus uses are skipped, and so is any piece that shares text with it.
"""
import re

from build_demo_corpus import ROOT, RST_HEADING, Debs, docs_from, files, read_corpus, thin, write_zst

REFERENCE = ROOT / "mixforge" / "demo" / "reference.jsonl.zst"
PACKAGE = "python3.11-doc"
PATTERNS = [f"usr/share/doc/python3.11/html/_sources/{d}/*.rst.txt" for d in ("tutorial", "howto")]
SKIP = {"index.rst.txt"}  # tables of contents, not prose
PIECE, LIMIT, MIN_CHARS, BUDGET = 8_000, 10_000, 1_500, 320_000  # ~50 documents of 1.5-10 KB
SHINGLE, MAX_SHARED = 13, 0.02  # a piece with > 2 % of its 13-word runs in the corpus is left out


def origin_path(doc):
    """The file inside its package: the id without its label and #part."""
    return doc["id"].split("/", 1)[1].split("#")[0]


def shingles(text):
    words = text.split()
    return {" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def paragraphs(text, min_chars=100):
    """Paragraphs of some length, whitespace-normalised (a table or a sentence copied across docs)."""
    return {p for p in (" ".join(b.split()) for b in re.split(r"\n\s*\n", text)) if len(p) >= min_chars}


class Overlap:
    """What the corpus holds: origin paths, texts, paragraphs, 13-word runs."""

    def __init__(self, corpus):
        self.paths = {origin_path(d) for d in corpus}
        self.texts = {d["text"] for d in corpus}
        self.paras = set().union(*(paragraphs(d["text"]) for d in corpus))
        self.runs = set().union(*(shingles(d["text"]) for d in corpus))

    def shared(self, doc):
        """(same path, same text, paragraphs in common, share of 13-word runs found in the corpus)."""
        runs = shingles(doc["text"])
        return (origin_path(doc) in self.paths, doc["text"] in self.texts,
                len(paragraphs(doc["text"]) & self.paras), len(runs & self.runs) / max(len(runs), 1))

    def disjoint(self, doc):
        same_path, same_text, paras, runs = self.shared(doc)
        return not (same_path or same_text or paras) and runs <= MAX_SHARED


def build_reference(work):
    corpus = [d for docs in read_corpus().values() for d in docs]
    if not corpus:
        raise SystemExit("no corpus in mixforge/demo/corpus: build it first (the reference set must not overlap it)")
    overlap, debs = Overlap(corpus), Debs(work)
    root = debs.get(PACKAGE)
    paths = [p for pattern in PATTERNS for p in files(root, pattern)
             if p.name not in SKIP and p.relative_to(root).as_posix() not in overlap.paths]
    pieces = docs_from("reference", PACKAGE, root, paths, RST_HEADING, PIECE, LIMIT)
    long_enough = [d for d in pieces if len(d["text"]) >= MIN_CHARS]
    clean = [d for d in long_enough if overlap.disjoint(d)]
    docs = thin(clean, BUDGET)

    # the check, on what is written: no path, text or paragraph of the corpus; few shared word runs
    checks = [overlap.shared(d) for d in docs]
    worst = max(range(len(docs)), key=lambda i: checks[i][3])
    print(f"overlap with the corpus ({len(corpus)} docs): {sum(c[0] for c in checks)} shared paths, "
          f"{sum(c[1] for c in checks)} identical texts, {sum(c[2] for c in checks)} shared paragraphs; "
          f"most shared {SHINGLE}-word runs: {checks[worst][3]:.2%} ({docs[worst]['id']})")
    assert not any(c[0] or c[1] or c[2] for c in checks), "the reference set overlaps the corpus"
    assert len({d["id"] for d in docs}) == len(docs), "document ids must be unique"

    size = write_zst(REFERENCE, docs)
    text_bytes = [len(d["text"].encode("utf-8")) for d in docs]
    print(f"reference    {len(docs):5} docs {sum(text_bytes):>10,} B text {REFERENCE.stat().st_size:>10,} B zst "
          f"({min(text_bytes):,}-{max(text_bytes):,} B each; {PACKAGE} {debs.versions[PACKAGE]}, "
          f"{len({origin_path(d) for d in docs})} files)")
    print(f"  from {len(pieces)} pieces of {len(paths)} files: {len(pieces) - len(long_enough)} under "
          f"{MIN_CHARS:,} chars, {len(long_enough) - len(clean)} sharing text with the corpus, "
          f"{len(clean) - len(docs)} thinned out; jsonl {size:,} B")
    return docs
