"""Source readers: datatrove's readers, made lossless.

datatrove's readers skip records without text silently and stop reading a JSONL file at the
first invalid UTF-8 byte (a warning, then the rest of the file is gone). mixforge must count
every record, so:
- `RecordAdapter` turns every record into a Document: good ones normalised, bad ones
  (missing/empty/non-string text, missing label) kept with `reason`/`detail` metadata;
- `LenientJsonlReader` reads JSONL line by line in binary and reports a bad line (invalid UTF-8,
  invalid JSON, not an object) with its file and line number instead of losing the file's tail;
- `TextFileReader` reads a folder of .txt files (one document per file), which datatrove lacks;
- both honour a byte order mark: UTF-8's is dropped (it would spoil the first record), UTF-16
  is transcoded to UTF-8;
- `WholeFileParquetReader` also reads a Parquet file compressed whole (data.parquet.gz/.zst),
  which datatrove's ParquetReader cannot (Parquet needs to seek);
- all decompress by the file's magic bytes, not its name (gzip data named .jsonl is read as
  gzip), and a compressed file cut short becomes one `malformed/truncated_file` record naming
  the bytes read and the records recovered (fsspec's zstd reader ends such a file silently).
"""

from __future__ import annotations

import codecs
import itertools
import json
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import zstandard

from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.readers.base import BaseDiskReader

MALFORMED = "malformed"
MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"PAR1": "parquet"}
CHUNK = 1 << 16  # compressed bytes read at a time (zlib expands at most ~1000x)
SPOOL = 64 << 20  # a decompressed whole-file Parquet is held in memory up to this size, then on disk


@dataclass
class RecordAdapter:
    """Maps one raw record to mixforge's normalised document (a datatrove reader `adapter`).

    Document id: `<source key>/<file relative to the source>:<record number>` (1-based): stable
    across runs and unique within a workspace. The source's own id is kept as `source_id`.
    """

    source_key: str
    label: str | None
    label_field: str | None
    text_field: str
    id_field: str | None
    display_path: str  # file path shown in messages

    def doc_id(self, position: int | str) -> str:
        return f"{self.source_key}:{position}"

    def __call__(self, reader, data: dict, path: str, id_in_file) -> dict:
        if isinstance(id_in_file, str):  # HF reader: "<rank>/<row>"
            id_in_file = int(id_in_file.rsplit("/", 1)[-1])
        position = id_in_file + 1
        where = f"{self.display_path}:{position}"
        meta = {"origin": where, "source": self.label, "source_id": None}
        if self.id_field and data.get(self.id_field) is not None:
            meta["source_id"] = str(data[self.id_field])
        if self.label_field is not None:
            meta["source"] = data.get(self.label_field)
        text = data.get(self.text_field)
        problem = None
        if self.text_field not in data:
            problem = ("missing_text_field", f"no field {self.text_field!r} (fields: {sorted(data)})")
        elif not isinstance(text, str):
            problem = ("text_not_string", f"field {self.text_field!r} is {type(text).__name__}, not a string")
        elif not text.strip():
            problem = ("empty_text", f"field {self.text_field!r} is empty or whitespace only")
        elif self.label_field is not None and meta["source"] in (None, ""):
            problem = ("missing_label_field", f"no label in field {self.label_field!r}")
        if problem:
            return malformed_record(self.doc_id(position), where, problem[0], problem[1], _dump(data), meta)
        meta["source"] = str(meta["source"])
        return {"id": self.doc_id(position), "text": text, "metadata": meta}


def malformed_record(doc_id: str, where: str, kind: str, message: str, raw: str, meta: dict | None = None) -> dict:
    """A bad record as a document: its raw content is kept as text so nothing is lost."""
    meta = dict(meta or {"origin": where, "source": None, "source_id": None})
    meta["origin"] = where
    meta["source"] = None if meta.get("source") is None else str(meta["source"])
    meta.update(reason=f"{MALFORMED}/{kind}", detail=f"{where}: {message}", kept_id=None)
    # datatrove drops documents whose text is empty; a placeholder keeps the record countable
    return {"id": doc_id, "text": raw or "<empty>", "metadata": meta}


def _dump(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, default=repr)


class LenientJsonlReader(JsonlReader):
    """datatrove's JsonlReader, but every line is accounted for (see module docstring)."""

    name = "📖 Lenient JSONL"

    def read_file(self, filepath: str):
        import orjson

        adapter: RecordAdapter = self.adapter.__func__
        lines = kept = 0
        with self.data_folder.open(filepath, "rb", compression=None) as f:
            try:
                encoding, chunks = utf8_stream(decompressed_chunks(f))
                for raw in complete_lines(chunks):
                    li, lines = lines, lines + 1
                    if not raw.strip():
                        continue  # blank lines separate nothing and hold no record
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        yield self._bad(adapter, li, "invalid_utf8", invalid_text(encoding, e), raw.decode("utf-8", "replace"))
                        continue
                    try:
                        data = orjson.loads(raw)
                    except orjson.JSONDecodeError as e:
                        yield self._bad(adapter, li, "invalid_json", f"invalid JSON: {e}", raw.decode())
                        continue
                    if not isinstance(data, dict):
                        yield self._bad(adapter, li, "not_an_object", f"expected a JSON object, got {type(data).__name__}", raw.decode())
                        continue
                    document = self.get_document_from_dict(data, filepath, li)
                    if document:
                        kept += "reason" not in document.metadata
                        yield document
            except TruncatedFile as e:
                yield truncated_document(adapter, lines + 1, e, f"{kept} complete record(s) before the cut kept (lines 1-{lines})")

    def _bad(self, adapter: RecordAdapter, li: int, kind: str, message: str, raw: str) -> Document:
        where = f"{adapter.display_path}:{li + 1}"
        record = malformed_record(adapter.doc_id(li + 1), where, kind, message, raw)
        return Document(**record)


class TextFileReader(BaseDiskReader):
    """One document per text file; the record number is the file itself (position 1)."""

    name = "📖 Text files"

    def read_file(self, filepath: str):
        adapter: RecordAdapter = self.adapter.__func__
        with self.data_folder.open(filepath, "rb", compression=None) as f:
            chunks: list[bytes] = []
            try:
                encoding, stream = utf8_stream(decompressed_chunks(f))
                chunks.extend(stream)
            except TruncatedFile as e:
                e.tail = b"".join(chunks)
                # a cut text file is one document with its end missing: removed whole, not kept
                yield truncated_document(adapter, 1, e, "the text before the cut is kept under removed/")
                return
        raw = b"".join(chunks)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            where = f"{adapter.display_path}:1"
            record = malformed_record(
                adapter.doc_id(1), where, "invalid_utf8", invalid_text(encoding, e), raw.decode("utf-8", "replace")
            )
            yield Document(**record)
            return
        document = self.get_document_from_dict({adapter.text_field: text}, filepath, 0)
        if document:
            yield document


class WholeFileParquetReader(ParquetReader):
    """datatrove's ParquetReader, also for a Parquet file compressed whole with gzip or zstd: it is
    decompressed to a spooled temporary file first (memory up to SPOOL bytes, then disk)."""

    name = "📒 Parquet"

    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb", compression=None) as f:
            codec = sniff(f)[0]
        if codec not in ("gzip", "zstd"):
            yield from super().read_file(filepath)
            return
        import pyarrow.parquet as pq

        adapter: RecordAdapter = self.adapter.__func__
        with self.data_folder.open(filepath, "rb", compression=None) as f, tempfile.SpooledTemporaryFile(SPOOL) as plain:
            try:
                for chunk in decompressed_chunks(f):
                    plain.write(chunk)
            except TruncatedFile as e:
                yield truncated_document(adapter, 1, e, "Parquet is unreadable without its end, so no record is kept")
                return
            plain.seek(0)
            with pq.ParquetFile(plain) as pqf:
                li = 0
                for batch in pqf.iter_batches(batch_size=self.batch_size):
                    for record in batch.to_pylist():
                        document = self.get_document_from_dict(record, filepath, li)
                        if document:
                            yield document
                            li += 1


class TruncatedFile(Exception):
    """A compressed file that ends inside a gzip member or zstd frame."""

    def __init__(self, codec: str, compressed: int, decompressed: int, tail: bytes = b""):
        super().__init__(f"{codec} stream ends early")
        self.codec, self.compressed, self.decompressed, self.tail = codec, compressed, decompressed, tail


def sniff(f: BinaryIO) -> tuple[str | None, bytes]:
    """(format the first bytes prove: gzip, zstd, parquet or None; the bytes read)."""
    head = f.read(4)
    return next((fmt for magic, fmt in MAGIC.items() if head.startswith(magic)), None), head


def sniff_path(path: Path) -> str | None:
    with open(path, "rb") as f:
        return sniff(f)[0]


def _decompressor(codec: str):
    return zlib.decompressobj(wbits=31) if codec == "gzip" else zstandard.ZstdDecompressor().decompressobj()


def decompressed_chunks(f: BinaryIO) -> Iterator[bytes]:
    """The file's content, decompressed when its magic bytes say gzip or zstd (several members or
    frames in a row are read on). Hand-written over zlib/zstandard decompress objects because their
    `eof` is the only way to tell a complete stream from one cut short: raises TruncatedFile then."""
    codec, head = sniff(f)
    if codec not in ("gzip", "zstd"):
        yield head
        yield from iter(lambda: f.read(CHUNK), b"")
        return
    d, read, out, data = _decompressor(codec), len(head), 0, head
    while data:
        while data:  # one block can end a member or frame and start the next
            if d is None:
                d = _decompressor(codec)
            piece = d.decompress(data)
            out += len(piece)
            if piece:
                yield piece
            data, d = (d.unused_data, None) if d.eof else (b"", d)
        data = f.read(CHUNK)
        read += len(data)
    if d is not None:  # a member or frame was started and never finished
        raise TruncatedFile(codec, read, out)


BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
NOT_A_CHARACTER = "\udcff"  # stands for bytes that are no UTF-16: a lone surrogate, which is no valid UTF-8 either
codecs.register_error("mixforge-mark", lambda e: (NOT_A_CHARACTER, e.end))


def utf8_stream(chunks: Iterator[bytes]) -> tuple[str, Iterator[bytes]]:
    """(encoding, the content as UTF-8). A byte order mark says the encoding and is no part of the
    first record: UTF-8's is dropped, UTF-16 (either order) is transcoded. Bytes that are not
    UTF-16 become a lone surrogate, so the UTF-8 check of their line or file fails and counts it
    (never a silent U+FFFD)."""
    head = b""
    for chunk in chunks:  # enough bytes to see a BOM (a compressed file's first piece may be short)
        head += chunk
        if len(head) >= 3:
            break
    bom, encoding = next(((b, e) for b, e in BOMS if head.startswith(b)), (b"", "utf-8"))
    head = head[len(bom):]
    if encoding == "utf-8":
        return encoding, itertools.chain([head], chunks)
    decoder = codecs.getincrementaldecoder(encoding)(errors="mixforge-mark")

    def transcoded() -> Iterator[bytes]:
        for chunk in itertools.chain([head], chunks):
            yield decoder.decode(chunk).encode("utf-8", "surrogatepass")
        yield decoder.decode(b"", final=True).encode("utf-8", "surrogatepass")

    return encoding, transcoded()


def invalid_text(encoding: str, e: UnicodeDecodeError) -> str:
    if encoding == "utf-8":
        return f"invalid UTF-8 at byte {e.start}"
    return f"invalid {encoding.upper()} (bytes that are no character, at byte {e.start} of the text as UTF-8)"


def complete_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a file's content (`decompressed_chunks`), without their newline. A cut file's
    incomplete last line is not yielded: it travels in TruncatedFile.tail."""
    rest = b""
    try:
        for chunk in chunks:
            *lines, rest = (rest + chunk).split(b"\n")
            yield from lines
    except TruncatedFile as e:
        e.tail = rest
        raise
    if rest:
        yield rest


def truncated_document(adapter: RecordAdapter, position: int, e: TruncatedFile, recovered: str) -> Document:
    """The lost tail of a cut compressed file, as one malformed record with the figures."""
    where = f"{adapter.display_path}:{position}"
    message = (
        f"truncated {e.codec} file: all {e.compressed} compressed bytes read, decompression stopped at "
        f"{e.decompressed} bytes inside an unfinished {'member' if e.codec == 'gzip' else 'frame'}; {recovered}, the rest is lost"
    )
    tail = e.tail.decode("utf-8", "replace")
    return Document(**malformed_record(adapter.doc_id("truncated"), where, "truncated_file", message, tail))


JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TXT_SUFFIXES = (".txt", ".md", ".rst")
SUPPORTED = ".jsonl/.json/.ndjson, .parquet, .txt/.md/.rst (each also .gz or .zst)"


def format_of(path: Path) -> str | None:
    """A file's format: parquet by its magic bytes, else by its name with .gz/.zst taken off
    (compression itself is found from the content when reading); None when neither tells."""
    if sniff_path(path) == "parquet":
        return "parquet"
    return format_by_name(path.name)


def format_by_name(name: str) -> str | None:
    """A file's format by its name alone (.gz/.zst taken off), None when the name does not tell."""
    name = name.lower().removesuffix(".gz").removesuffix(".zst").removesuffix(".zstd")
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TXT_SUFFIXES):
        return "txt"
    return None


def source_files(path: Path, fmt: str) -> list[tuple[Path, str | None]]:
    """The files of one source, sorted, each with the format it is read with. A named file is
    read as `fmt` (auto: its own format, else jsonl). A folder (every file under it except hidden
    ones such as .git/ or .cache/) or a glob mixes formats freely: each file is read with its own;
    a file of no supported format, or not of the `fmt` asked for, gets None (reported at ingest)."""
    if path.is_file():
        return [(path, fmt if fmt != "auto" else format_of(path) or "jsonl")]
    if path.is_dir():
        files = [f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)]
    else:
        files = [f for f in path.parent.glob(path.name) if f.is_file()]
    found = [(f, format_of(f)) for f in sorted(files)]
    return [(f, own if fmt in ("auto", own) else None) for f, own in found]


def is_hf_disk(path: Path) -> bool:
    """A folder written by datasets' save_to_disk (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json"))
