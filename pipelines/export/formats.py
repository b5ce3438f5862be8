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
- mds: MosaicML streaming MDS shard `.mds` (columns component, id, text: str and tokens:
  ndarray), byte-identical to `MDSWriter(hashes=["sha256"], size_limit=None)` (tested), with one
  `index.json` per folder, written once the folder's shards are done (`write_mds_index`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from mixforge.errors import MixforgeError

FORMATS = ("parquet", "jsonl", "megatron", "datatrove", "numpy", "mds")
TOKEN_FORMATS = ("megatron", "datatrove", "numpy")  # raw token arrays, no header
TEXT_FORMATS = ("parquet", "jsonl")
MDS_COLUMNS = ("component", "id", "text", "tokens")  # sorted, the order MDSWriter stores them in
MDS_SHAPE_DTYPES = ((1 << 8, np.uint8, 0), (1 << 16, np.uint16, 1), (1 << 32, np.uint32, 2))
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODE = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


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
    if fmt == "mds":
        path = stem.with_suffix(".mds")
        path.write_bytes(_mds_shard(docs, eos, dtype))
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


def mds_config(dtype: np.dtype) -> dict:
    """The shard-writing settings MDSWriter records in every shard and index entry."""
    return {"column_encodings": ["str", "str", "str", f"ndarray:{dtype.name}"], "column_names": list(MDS_COLUMNS),
            "column_sizes": [None] * len(MDS_COLUMNS), "compression": None, "format": "mds", "hashes": ["sha256"],
            "size_limit": None, "version": 2}


def _mds_tokens(tokens: np.ndarray, eos: int, dtype: np.dtype) -> bytes:
    """MDS `ndarray:<dtype>` with a dynamic shape: (ndim << 2 | shape dtype code), the shape, the values."""
    n = len(tokens) + 1
    _, shape_dtype, code = next(t for t in MDS_SHAPE_DTYPES if n < t[0])
    values = np.empty(n, dtype=dtype)
    values[:-1], values[-1] = tokens, eos
    return bytes([(1 << 2) | code]) + np.array([n], dtype=shape_dtype).tobytes() + values.tobytes()


def _mds_shard(docs: list[tuple], eos: int, dtype: np.dtype) -> bytes:
    """One MDS shard: sample count, uint32 sample offsets, the settings as JSON, the samples; each
    sample is the uint32 size of each column, then the columns."""
    config = json.dumps(mds_config(dtype), sort_keys=True).encode()
    samples = []
    for d in docs:
        cols = [d[1].encode("utf-8"), str(d[0]).encode("utf-8"), d[2].encode("utf-8"), _mds_tokens(d[3], eos, dtype)]
        samples.append(np.array([len(c) for c in cols], np.uint32).tobytes() + b"".join(cols))
    start = 4 + 4 * (len(samples) + 1) + len(config)
    offsets = start + np.concatenate([[0], np.cumsum([len(x) for x in samples], dtype=np.int64)])
    if offsets[-1] >= 1 << 32:
        raise MixforgeError(f"an MDS shard of {offsets[-1]:,} bytes is over MDS's 4 GiB offset limit: lower --shard-tokens")
    return np.uint32(len(samples)).tobytes() + offsets.astype(np.uint32).tobytes() + config + b"".join(samples)


def write_mds_index(folder: Path, shards: list[dict], dtype: np.dtype) -> Path:
    """`index.json` of one MDS folder, as MDSWriter writes it: one entry per shard, from its
    basename (relative to the folder), samples, bytes and sha256 (already known to the manifest)."""
    entries = [{**mds_config(dtype), "samples": s["samples"], "zip_data": None,
                "raw_data": {"basename": s["basename"], "bytes": s["bytes"], "hashes": {"sha256": s["sha256"]}}}
               for s in shards]
    path = Path(folder) / "index.json"
    path.write_text(json.dumps({"shards": entries, "version": 2}, sort_keys=True))
    return path


def read_mds_shard(path: Path) -> list[dict]:
    """Every sample of an MDS shard written by `_mds_shard`, decoded by the MDS layout."""
    raw = Path(path).read_bytes()
    n = int(np.frombuffer(raw, np.uint32, 1)[0])
    offsets = np.frombuffer(raw, np.uint32, n + 1, 4).astype(np.int64)
    if offsets[-1] != len(raw):
        raise ValueError(f"{path}: its offsets end at byte {offsets[-1]}, the file has {len(raw)}")
    config = json.loads(raw[4 + 4 * (n + 1) : offsets[0]])
    dtype = np.dtype(config["column_encodings"][-1].split(":")[1])
    out = []
    for a in offsets[:-1]:
        sizes = np.frombuffer(raw, np.uint32, len(MDS_COLUMNS), a)
        pos, cols = a + 4 * len(MDS_COLUMNS), {}
        for name, size in zip(MDS_COLUMNS, sizes):
            cols[name] = raw[pos : pos + size]
            pos += int(size)
        code = cols["tokens"][0] & 3
        shape_dtype = {c: t for _, t, c in MDS_SHAPE_DTYPES}[code]
        width = np.dtype(shape_dtype).itemsize
        cols["tokens"] = np.frombuffer(cols["tokens"], dtype, offset=1 + width)
        out.append({k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in cols.items()})
    return out


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


def _token_count(path: Path, dtype: np.dtype) -> int:
    """Tokens in a raw token file; a size that is no whole number of tokens is a damaged file."""
    size = Path(path).stat().st_size
    if size % dtype.itemsize:
        raise ValueError(f"{path.name}: {size} bytes is not a whole number of {dtype.name} tokens")
    return size // dtype.itemsize


def count_shard(fmt: str, files: list[Path], dtype: np.dtype) -> tuple[int, int]:
    """(documents, tokens) of a shard, re-derived from its files; -1 where the format does not
    hold the figure (jsonl has no tokens, a numpy memmap no document boundaries)."""
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
        return -1, _token_count(first, dtype)
    if fmt == "mds":
        samples = read_mds_shard(first)
        return len(samples), sum(len(s["tokens"]) for s in samples)
    if fmt == "datatrove":
        ends = np.frombuffer(Path(f"{first}.index").read_bytes(), "<u8")
        tokens = _token_count(first, dtype)
        if len(ends) and int(ends[-1]) != tokens:
            raise ValueError(f"{first}.index ends at token {int(ends[-1])}, the file holds {tokens}")
        return len(ends), tokens
    if fmt == "megatron":
        idx = read_megatron_index(first.with_suffix(".idx"))
        tokens = _token_count(first.with_suffix(".bin"), idx["dtype"])
        if int(idx["lengths"].sum()) != tokens:
            raise ValueError(f"{first.with_suffix('.idx')} counts {int(idx['lengths'].sum())} tokens, the .bin holds {tokens}")
        return len(idx["lengths"]), tokens
    raise ValueError(f"unknown export format {fmt!r}")
