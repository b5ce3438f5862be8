#!/usr/bin/env python3
"""Build a corpus of N real documents, seeded, from text this machine already has (no download):
the Python standard library's sources, Debian packages' documentation, the manual pages and the
common licences. For benchmarks and scale tests; not shipped.

    python scripts/make_scale_corpus.py --docs 10000 OUT [--seed 0] [--piece 6000] [--per-file 2000]

Files are cut at line boundaries into pieces of up to `--piece` characters; N pieces are drawn
(seeded) and written as OUT/<label>/part-NNNNN.jsonl.zst ({"id", "text"} per line) with
OUT/labels.json (documents and characters per label, the seed and the sources' sizes). Asking for
more pieces than the machine has is an error that says how many there are.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

import zstandard

# (label, root, glob): plain text once decompressed; binary files are skipped
SOURCES = [
    ("code", f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}", "**/*.py"),
    ("code", "/usr/lib/python3/dist-packages", "**/*.py"),
    ("docs", "/usr/share/doc", "**/*"),
    ("man", "/usr/share/man", "man[1-8]/*.gz"),
    ("legal", "/usr/share/common-licenses", "*"),
]
MIN_CHARS = 200


def read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if b"\x00" in data[:4096]:
            return None
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def pieces(text: str, size: int) -> list[str]:
    """The text cut at line ends into pieces of up to `size` characters (a longer line is cut)."""
    out, current, held = [], [], 0
    for line in text.splitlines(keepends=True):
        while len(line) > size:
            out.append(line[:size])
            line = line[size:]
        if held + len(line) > size and current:
            out.append("".join(current))
            current, held = [], 0
        current.append(line)
        held += len(line)
    if current:
        out.append("".join(current))
    return [p for p in out if len(p.strip()) >= MIN_CHARS]


def collect(piece: int) -> list[tuple[str, str, str]]:
    """(label, id, text) of every piece, in a fixed order (sorted paths)."""
    found = []
    for label, root, pattern in SOURCES:
        for path in sorted(Path(root).glob(pattern)):
            if not path.is_file() or path.is_symlink():
                continue
            text = read_text(path)
            if text:
                found += [(label, f"{path}#{i}", p) for i, p in enumerate(pieces(text, piece))]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--piece", type=int, default=6000, help="largest document, in characters")
    parser.add_argument("--per-file", type=int, default=2000, help="documents per output file")
    args = parser.parse_args()
    found = collect(args.piece)
    if args.docs > len(found):
        sys.exit(f"make_scale_corpus: {args.docs:,} documents asked for, this machine has {len(found):,} pieces of "
                 f"up to {args.piece} characters (a smaller --piece gives more)")
    chosen = random.Random(args.seed).sample(found, args.docs)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for label, doc_id, text in chosen:
        by_label.setdefault(label, []).append((doc_id, text))
    summary = {"seed": args.seed, "piece": args.piece, "documents": args.docs, "available": len(found), "labels": {}}
    for label, docs in sorted(by_label.items()):
        folder = args.out / label
        folder.mkdir(parents=True, exist_ok=True)
        for n, start in enumerate(range(0, len(docs), args.per_file)):
            lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs[start : start + args.per_file])
            tmp = folder / f".part-{n:05d}.tmp"
            tmp.write_bytes(zstandard.ZstdCompressor(level=3).compress(lines.encode("utf-8")))
            tmp.replace(folder / f"part-{n:05d}.jsonl.zst")
        summary["labels"][label] = {"documents": len(docs), "chars": sum(len(t) for _, t in docs)}
    (args.out / "labels.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{args.out}: {args.docs:,} documents from {len(found):,} pieces; "
          + ", ".join(f"{k} {v['documents']:,}" for k, v in summary["labels"].items()))


if __name__ == "__main__":
    main()
