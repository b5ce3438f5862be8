"""Shard writers of every export format, and the readers `mixforge verify` re-counts them with.

A shard is a list of documents (id, component, text, token ids without EOS); token formats write
each document's tokens followed by the EOS token, as the proxy shards do.
- parquet: id, component, text, tokens (count): what Hugging Face `datasets` loads.
- jsonl: `.jsonl.zst`, one {"id", "component", "text"} per line.
- megatron: Megatron-Core indexed dataset `.bin` + `.idx` (MMIDIDX header, version 1, dtype code,
  sequence and document counts, int32 lengths, int64 byte pointers, int64 document indices),
  one sequence per document, byte-identical to datatrove's MegatronTokenizedFile (tested).
- datatrove: nanotron/datatrove `.ds` tokens + `.ds.index` (uint64 document ends) +
  `.ds.metadata` ("tokenizer|token size", token count, humanised count).
- numpy: OLMo-core style raw token memmap `.npy` (no header; dtype in the manifest).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

FORMATS = ("parquet", "jsonl", "megatron", "datatrove", "numpy")
TOKEN_FORMATS = ("megatron", "datatrove", "numpy")
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODE = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


def token_dtype(vocab_size: int, fmt: str) -> np.dtype:
    if vocab_size <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.int32) if fmt == "megatron" else np.dtype(np.uint32)  # Megatron's 4-byte code is int32


def _flat(docs: list[tuple], eos: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """All tokens (each document + EOS) and each document's length."""
    lengths = np.array([len(d[3]) + 1 for d in docs], dtype=np.int64)
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    pos = 0
    for d, n in zip(docs, lengths):
        flat[pos : pos + n - 1] = d[3]
        flat[pos + n - 1] = eos
        pos += n
    return flat, lengths


def write_shard(fmt: str, stem: Path, docs: list[tuple], eos: int, dtype: np.dtype, tokenizer_name: str) -> list[Path]:
    """Write one shard (files named from `stem`); returns the files written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": [d[0] for d in docs], "component": [d[1] for d in docs],
                          "text": [d[2] for d in docs], "tokens": [len(d[3]) + 1 for d in docs]})
        path = stem.with_suffix(".parquet")
        pq.write_table(table, path, compression="zstd")
        return [path]
    if fmt == "jsonl":
        import zstandard

        path = stem.with_suffix(".jsonl.zst")
        lines = "".join(json.dumps({"id": d[0], "component": d[1], "text": d[2]}, ensure_ascii=False) + "\n" for d in docs)
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(lines.encode("utf-8")))
        return [path]
    flat, lengths = _flat(docs, eos, dtype)
    if fmt == "numpy":
        path = stem.with_suffix(".npy")
        flat.tofile(path)
        return [path]
    if fmt == "datatrove":
        path = stem.with_suffix(".ds")
        flat.tofile(path)
        Path(f"{path}.index").write_bytes(np.cumsum(lengths).astype("<u8").tobytes())
        total = int(lengths.sum())
        Path(f"{path}.metadata").write_text(f"{tokenizer_name}|{dtype.itemsize}\n{total}\n{_humanize(total)}")
        return [path, Path(f"{path}.index"), Path(f"{path}.metadata")]
    if fmt == "megatron":
        bin_path, idx_path = stem.with_suffix(".bin"), stem.with_suffix(".idx")
        flat.tofile(bin_path)
        n = len(lengths)
        pointers = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * dtype.itemsize
        with open(idx_path, "wb") as f:
            f.write(MEGATRON_HEADER + struct.pack("<Q", 1) + struct.pack("<B", MEGATRON_DTYPE_CODE[dtype]))
            f.write(struct.pack("<Q", n) + struct.pack("<Q", n + 1))
            f.write(lengths.astype("<i4").tobytes())
            f.write(pointers.astype("<i8").tobytes())
            f.write(np.arange(n + 1, dtype="<i8").tobytes())
        return [bin_path, idx_path]
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _humanize(n: int) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}T"
    return f"{n} T"


def read_megatron_index(path: Path) -> dict:
    """The .idx of a Megatron indexed dataset, read by its documented layout."""
    raw = Path(path).read_bytes()
    if raw[:9] != MEGATRON_HEADER:
        raise ValueError(f"{path}: not a Megatron index (header {raw[:9]!r})")
    version, code = struct.unpack("<Q", raw[9:17])[0], raw[17]
    n_seq, n_doc = struct.unpack("<QQ", raw[18:34])
    off = 34
    lengths = np.frombuffer(raw, "<i4", n_seq, off)
    off += 4 * n_seq
    pointers = np.frombuffer(raw, "<i8", n_seq, off)
    off += 8 * n_seq
    doc_idx = np.frombuffer(raw, "<i8", n_doc, off)
    dtype = {v: k for k, v in MEGATRON_DTYPE_CODE.items()}[code]
    return {"version": version, "dtype": dtype, "lengths": lengths, "pointers": pointers, "document_indices": doc_idx}


def count_shard(fmt: str, files: list[Path], dtype: np.dtype) -> tuple[int, int]:
    """(documents, tokens) of a shard, re-derived from its files."""
    first = files[0]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(first, columns=["tokens"])
        return t.num_rows, int(np.sum(t.column("tokens").to_numpy()))
    if fmt == "jsonl":
        import zstandard

        lines = [json.loads(l) for l in zstandard.decompress(first.read_bytes(), max_output_size=1 << 34).decode().splitlines() if l]
        return len(lines), -1  # text only: tokens are not re-derived
    if fmt == "numpy":
        return -1, first.stat().st_size // dtype.itemsize
    if fmt == "datatrove":
        ends = np.frombuffer(Path(f"{first}.index").read_bytes(), "<u8")
        tokens = first.stat().st_size // dtype.itemsize
        if len(ends) and int(ends[-1]) != tokens:
            raise ValueError(f"{first}.index ends at token {int(ends[-1])}, the file holds {tokens}")
        return len(ends), tokens
    if fmt == "megatron":
        idx = read_megatron_index(first.with_suffix(".idx"))
        tokens = first.with_suffix(".bin").stat().st_size // idx["dtype"].itemsize
        if int(idx["lengths"].sum()) != tokens:
            raise ValueError(f"{first.with_suffix('.idx')} counts {int(idx['lengths'].sum())} tokens, the .bin holds {tokens}")
        return len(idx["lengths"]), tokens
    raise ValueError(f"unknown export format {fmt!r}")
