#!/usr/bin/env python3
"""Build mixforge's demo corpus from real, freely redistributable text in Debian packages.

    python scripts/build_demo_corpus.py              # download, build corpus + reference set + test slice
    python scripts/build_demo_corpus.py --slice      # only re-cut tests/fixtures/slice from the corpus
    python scripts/build_demo_corpus.py --reference  # only rebuild the classifier's reference set
                                                     # (scripts/build_demo_reference.py)

Needs a Debian (bookworm) machine with apt lists (`apt-get update`), dpkg-deb, man-db and gzip.
The text is kept as it is: judging its quality is the pipeline's job, not this script's.
"""
import argparse
import gzip
import hashlib
import json
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "mixforge" / "demo" / "corpus"
SLICE = ROOT / "tests" / "fixtures" / "slice"

LIMIT, PIECE = 40_000, 12_000  # files over LIMIT chars are cut into pieces of up to PIECE
RST_HEADING = r"(?m)^(?:[=\-~^*#\"+.`]{3,}\n)?[^\n]+\n[=\-~^*#\"+.`]{3,}[ \t]*$"
PY_TOPLEVEL = r"(?m)^(?:@[^\n]*\n)*(?:class |def |async def )"
FORTUNE_SEP = r"(?<=\n%\n)"
DEVIL_ENTRY = r"(?m)^[A-Z][A-Z'. -]*, [a-z]"
JARGON_ENTRY = r"(?m)^   :[^\n]+:|^(?:Chapter \d+|Appendix [A-Z])\. "

LICENCES = {
    "code": "PSF-2.0 (a few modules add permissive notices, listed in the package's copyright file)",
    "python_docs": "PSF-2.0; code examples in the docs are also under 0BSD",
    "bible": "public domain (KJV text, 1611; Crown Letters Patent in the UK); Debian packaging GPL-2+",
    "quotes": "fortune-mod collection under its BSD notice (UC Regents); quotations not cleared one by one",
    "manuals": "debian-policy GPL-2+; developers-reference GPL-2+; gnu-standards GFDL-1.3+ (no invariant sections)",
    "man_pages": "per page: mostly Linux-man-pages-copyleft or GPL-2+, some BSD/Expat (see manpages copyright)",
    "legal": "verbatim copying of the licence texts and copyright files is permitted by their own terms",
    "dictionary": "public domain (The Devil's Dictionary, 1911; The Jargon File 4.4.7)",
}
# (label, package, files in it, split boundary, piece, limit, budget in characters). Budgets
# thin big sources evenly so that the whole corpus stays near 7 MB of text.
SOURCES = [
    ("python_docs", "python3.11-doc", "usr/share/doc/python3.11/html/_sources/**/*.rst.txt",
     RST_HEADING, PIECE, LIMIT, 1_000_000),
    ("code", "libpython3.11-stdlib", "usr/lib/python3.11/**/*.py", PY_TOPLEVEL, PIECE, LIMIT, 1_000_000),
    # fortunes: ~4 KB groups of consecutive quotes, cut after a '%' separator line
    ("quotes", "fortunes", "usr/share/games/fortunes/*", FORTUNE_SEP, 4000, 0, 400_000),
    ("quotes", "fortunes-min", "usr/share/games/fortunes/*", FORTUNE_SEP, 4000, 0, 400_000),
    ("manuals", "debian-policy", "usr/share/doc/debian-policy/policy.html/_sources/*.rst.txt",
     RST_HEADING, PIECE, LIMIT, 400_000),
    ("manuals", "developers-reference", "usr/share/developers-reference/_sources/*.rst.txt",
     RST_HEADING, PIECE, LIMIT, 300_000),
    # the GNU manuals are one file each: cut them into sections
    ("manuals", "gnu-standards", "usr/share/doc/gnu-standards/*.text.gz", RST_HEADING, PIECE, PIECE, 300_000),
    # dictionaries: groups of consecutive entries of ~4 KB
    ("dictionary", "dict-devil", "usr/share/dictd/*.dict.dz", DEVIL_ENTRY, 4000, 0, 1_000_000),
    ("dictionary", "jargon-text", "usr/share/doc/jargon-text/jargon.txt.gz", JARGON_ENTRY, 4000, 0, 450_000),
]
# Extra packages fetched only for their copyright file. Families built from one source
# package (bzip2/libbz2-1.0, ...) ship byte-identical copyright files: natural duplicates.
LEGAL_PACKAGES = [
    "bzip2", "libbz2-1.0", "file", "libmagic1", "libmagic-mgc", "pkgconf", "pkg-config",
    "readline-common", "libreadline8", "ncurses-base", "libtinfo6", "liblzma5", "xz-utils",
    "e2fsprogs", "logsave", "bsdutils", "mount", "libuuid1", "gcc-12-base", "libpython3.11-minimal",
    "libc-dev-bin", "sqlite3", "libsqlite3-0", "curl", "libcurl4", "zlib1g", "gzip", "less",
    "debianutils", "libffi8", "libexpat1", "tzdata", "grep", "sed", "diffutils", "findutils",
]


class Debs:
    """Downloads and unpacks Debian packages into a work dir; remembers their versions."""

    def __init__(self, work):
        self.work, self.versions = Path(work), {}

    def get(self, pkg):
        root, debs = self.work / "x" / pkg, self.work / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{pkg}_*.deb")):
            run = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"apt-get download {pkg} failed (run `apt-get update`?):\n{run.stderr}")
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        if not root.exists():  # unpack beside, then rename: a failed unpack is never reused
            tmp = root.with_name(pkg + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            tmp.rename(root)
        ver = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
        self.versions[pkg] = ver.stdout.strip()
        return root


def read_text(path):
    """File text (gunzipped if .gz), or None for symlinks and binary/undecodable files."""
    if path.is_symlink() or not path.is_file():
        return None
    data = path.read_bytes()
    if path.suffix in (".gz", ".dz"):  # .dz: dictzip, a gzip file with an index
        data = gzip.decompress(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.strip() and "\x00" not in text else None


def chop(block, piece, seps=(r"(?<=\n\n)", r"(?<=\n)")):
    """Cut a block at blank lines, then at line ends, until every part fits in `piece`."""
    if len(block) <= piece:
        return [block]
    if not seps:
        return [block[i:i + piece] for i in range(0, len(block), piece)]
    return [p for part in re.split(seps[0], block) for p in chop(part, piece, seps[1:])]


def split(text, boundary=None, piece=PIECE, limit=LIMIT):
    """Split long text at `boundary` (a regex: headings, entries) into pieces of <= piece chars."""
    if len(text) <= limit:
        return [text]
    cuts = sorted({0} | ({m.start() for m in re.finditer(boundary, text)} if boundary else set()))
    parts, cur = [], ""
    for a, b in zip(cuts, cuts[1:] + [len(text)]):
        for small in chop(text[a:b], piece):
            if cur and len(cur) + len(small) > piece:
                parts.append(cur)
                cur = ""
            cur += small
    return parts + [cur] if cur else parts


def as_docs(label, rel, pkg, parts):
    """One record per part; a file cut into pieces gets ids ending in #1, #2, ..."""
    return [{"id": f"{label}/{rel}" + (f"#{i + 1}" if len(parts) > 1 else ""), "text": part, "origin": pkg}
            for i, part in enumerate(parts)]


def docs_from(label, pkg, root, paths, boundary=None, piece=PIECE, limit=LIMIT):
    out = []
    for path in paths:
        text = read_text(path)
        if text is not None:
            out += as_docs(label, path.relative_to(root).as_posix(), pkg, split(text, boundary, piece, limit))
    return out


def thin(docs, budget):
    """Keep evenly spread documents until about `budget` characters remain (deterministic)."""
    total = sum(len(d["text"]) for d in docs)
    if total <= budget:
        return docs
    keep, acc = [], 0.5
    for d in docs:
        acc += budget / total
        if acc >= 1:
            keep.append(d)
            acc -= 1
    return keep


def files(root, pattern):
    return sorted(p for p in root.glob(pattern) if p.is_file() and not p.is_symlink())


def kjv_chapters(root):
    """bible.data holds 64 KiB blocks, each LZW-compressed like compress(1): gzip -d reads them."""
    data = (root / "usr/lib/bible.data").read_bytes()
    count = struct.unpack(">I", data[0x58:0x5C])[0]
    offsets = struct.unpack(f">{count + 1}I", data[0x5C:0x60 + 4 * count])
    text = b"".join(
        subprocess.run(["gzip", "-dc"], input=b"\x1f\x9d\x90" + data[a:b], capture_output=True,
                       check=True).stdout for a, b in zip(offsets, offsets[1:])).decode("utf-8")
    chapters = {}  # "Ge1" -> verse lines, in book order (dicts keep insertion order)
    for line in text.splitlines(keepends=True):
        m = re.match(r"(\d?[A-Za-z]+\d+):\d+ ", line)
        if m:
            chapters.setdefault(m.group(1), []).append(line)
    return [{"id": f"bible/usr/lib/bible.data#{ch}", "text": "".join(lines), "origin": "bible-kjv-text"}
            for ch, lines in chapters.items()]


def man_pages(debs, pkg, budget):
    """Render man pages to plain text with man-db (fixed width, no hyphenation or justification)."""
    root = debs.get(pkg)
    troff = {p: gzip.decompress(p.read_bytes()) for p in files(root, "usr/share/man/man*/*.gz")}
    pages = [{"id": p, "text": t} for p, t in troff.items() if not t.startswith(b".so ")]  # .so: aliases
    out, env = [], {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "MANWIDTH": "80"}
    for page in thin(pages, budget):  # thin on the troff sources: only kept pages get rendered
        run = subprocess.run(["man", "--nj", "--nh", "-l", str(page["id"])], capture_output=True, env=env)
        text = re.sub(r".\x08", "", run.stdout.decode("utf-8", "replace"))  # drop any overstrike
        if run.returncode == 0 and text.strip():
            rel = page["id"].relative_to(root).as_posix()
            out += as_docs("man_pages", rel, pkg, split(text, r"(?m)^[A-Z][A-Z ]+$"))
    return out


def build_sources(debs):
    """Yield (label, docs) per source, then the legal texts of every package that was used."""
    for label, pkg, pattern, boundary, piece, limit, budget in SOURCES:
        root = debs.get(pkg)
        paths = [p for p in files(root, pattern) if p.suffix != ".dat"]  # .dat: fortune indexes
        yield label, thin(docs_from(label, pkg, root, paths, boundary, piece, limit), budget)
    yield "bible", thin(kjv_chapters(debs.get("bible-kjv-text")), 1_000_000)
    yield "man_pages", man_pages(debs, "manpages", 450_000)
    yield "man_pages", man_pages(debs, "manpages-dev", 450_000)
    base = debs.get("base-files")
    yield "legal", docs_from("legal", "base-files", base, files(base, "usr/share/common-licenses/*"))
    for pkg in sorted(set(debs.versions) | set(LEGAL_PACKAGES)):
        root = debs.get(pkg)
        yield "legal", docs_from("legal", pkg, root, [root / f"usr/share/doc/{pkg}/copyright"])


def write_zst(path, docs):
    """JSONL, zstd at a fixed level (same docs, same bytes); returns the uncompressed size."""
    jsonl = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor(level=19).compress(jsonl))
    return len(jsonl)


def build(work):
    debs = Debs(work)
    corpus = {}  # label -> docs, in source order
    for label, docs in build_sources(debs):
        corpus.setdefault(label, []).extend(docs)
    CORPUS.mkdir(parents=True, exist_ok=True)
    for old in CORPUS.glob("*.jsonl.zst"):  # a label that was dropped must not linger
        old.unlink()
    prov = {"built_by": "scripts/build_demo_corpus.py", "labels": {}}
    for label in sorted(corpus):
        docs = corpus[label]
        path = CORPUS / f"{label}.jsonl.zst"
        jsonl_bytes = write_zst(path, docs)
        origins = sorted({d["origin"] for d in docs})
        prov["labels"][label] = {
            "documents": len(docs), "characters": sum(len(d["text"]) for d in docs),
            "bytes": sum(len(d["text"].encode("utf-8")) for d in docs), "jsonl_bytes": jsonl_bytes,
            "compressed_bytes": path.stat().st_size,
            "origins": {p: debs.versions[p] for p in origins}, "licence": LICENCES[label]}
    prov["total"] = {k: sum(v[k] for v in prov["labels"].values())
                     for k in ("documents", "characters", "bytes", "jsonl_bytes", "compressed_bytes")}
    ids = [d["id"] for docs in corpus.values() for d in docs]
    assert len(ids) == len(set(ids)), "document ids must be unique"
    assert prov["total"]["compressed_bytes"] < 8_000_000, "the shipped corpus must stay under 8 MB"
    (CORPUS / "PROVENANCE.json").write_text(json.dumps(prov, indent=2, ensure_ascii=False) + "\n")
    return prov


def read_corpus():
    corpus = {}
    for path in sorted(CORPUS.glob("*.jsonl.zst")):
        raw = zstandard.ZstdDecompressor().decompress(path.read_bytes()).decode("utf-8")
        corpus[path.name[: -len(".jsonl.zst")]] = [json.loads(line) for line in raw.splitlines()]
    return corpus


def make_slice(per_label=16, max_chars=4000):
    """Small fixture: ~16 short documents per label, spread across it; legal keeps exact duplicates."""
    SLICE.mkdir(parents=True, exist_ok=True)
    for label, docs in read_corpus().items():
        cap = max(max_chars, sorted(len(d["text"]) for d in docs)[min(per_label, len(docs)) - 1])
        small = [d for d in docs if len(d["text"]) <= cap]  # short ones, at least per_label of them
        picked = []
        if label == "legal":  # whole groups of identical copyright files, so dedup has work
            groups = {}
            for d in small:
                groups.setdefault(hashlib.sha1(d["text"].encode()).hexdigest(), []).append(d)
            for group in [g for g in groups.values() if len(g) > 1][:4]:
                picked += group
        rest, n = [d for d in small if d not in picked], per_label - len(picked)
        picked += [rest[i * len(rest) // n] for i in range(n)] if len(rest) > n else rest  # evenly spread
        picked.sort(key=docs.index)
        with open(SLICE / f"{label}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in picked)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--slice", action="store_true", help="only re-cut tests/fixtures/slice from the corpus")
    only.add_argument("--reference", action="store_true",
                      help="only rebuild mixforge/demo/reference.jsonl.zst (needs the corpus, to avoid overlap)")
    ap.add_argument("--workdir", help="keep downloads here (default: a temp dir, removed afterwards)")
    args = ap.parse_args()
    if not args.slice:
        tools = ("apt-get", "dpkg-deb") if args.reference else ("apt-get", "dpkg-deb", "man", "gzip")
        missing = [t for t in tools if not shutil.which(t)]
        if missing:
            raise SystemExit(f"needs a Debian machine with {missing} (man: apt-get install man-db)")
        from build_demo_reference import build_reference  # it imports this script's helpers

        work = args.workdir or tempfile.mkdtemp(prefix="mixforge-demo-")
        try:
            if not args.reference:
                prov = build(work)
                for name, info in [*prov["labels"].items(), ("total", prov["total"])]:
                    print(f"{name:12} {info['documents']:5} docs {info['bytes']:>10,} B text "
                          f"{info['compressed_bytes']:>10,} B zst")
            build_reference(work)  # after the corpus: it must not overlap it
        finally:
            if not args.workdir:
                shutil.rmtree(work, ignore_errors=True)
    if not args.reference:
        make_slice()


if __name__ == "__main__":
    main()
