"""Content digests for cache keys: a result reused on the strength of a digest must have been
computed from the same bytes, not merely from files of the same name, size or time."""

from __future__ import annotations

from pathlib import Path


def file_digest(path: Path) -> str:
    """xxh3-128 of a file's bytes, read in blocks (fast enough to hash token shards on every build)."""
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def shard_digests(folder: Path) -> dict[str, str]:
    """Digest of every token shard under tokens/extra/ (train, heldout, eval), by relative path:
    the data a proxy trains and is measured on. The tokens stage records them as it writes them."""
    return {str(f.relative_to(folder)): file_digest(f) for sub in ("train", "heldout", "eval")
            for f in sorted((folder / sub).glob("*.bin"))}
