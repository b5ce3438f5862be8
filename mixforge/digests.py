"""Content digests for cache keys: a result reused on the strength of a digest must have been
computed from the same bytes, not merely from files of the same name, size or time."""

from __future__ import annotations

from pathlib import Path


def file_digest(path: Path, algorithm: str = "xxh3_128") -> str:
    """Hex digest of a file's bytes, read in blocks: xxh3-128 (fast enough to hash token shards on
    every build) or any hashlib algorithm (sha256 for manifests that others check)."""
    with open(path, "rb") as f:
        return stream_digest(f, algorithm)


def stream_digest(f, algorithm: str = "xxh3_128") -> str:
    """Hex digest of what is left to read in the binary file object `f` (a local file, or an
    object in a store opened through fsspec)."""
    import hashlib

    import xxhash

    h = xxhash.xxh3_128() if algorithm == "xxh3_128" else hashlib.new(algorithm)
    for block in iter(lambda: f.read(1 << 22), b""):
        h.update(block)
    return h.hexdigest()


def shard_digests(folder: Path) -> dict[str, str]:
    """Digest of every token shard under tokens/extra/ (train, heldout, eval), by relative path:
    the data a proxy trains and is measured on. The tokens stage records them as it writes them."""
    return {str(f.relative_to(folder)): file_digest(f) for sub in ("train", "heldout", "eval")
            for f in sorted((folder / sub).glob("*.bin"))}
