"""Source readers: datatrove's readers, made lossless.

datatrove's readers skip records without text silently and stop reading a JSONL file at the
first invalid UTF-8 byte (a warning, then the rest of the file is gone). mixforge must count
every record, so:
- `RecordAdapter` turns every record into a Document: good ones normalised, bad ones
  (missing/empty/non-string text, missing label) kept with `reason`/`detail` metadata;
- `LenientJsonlReader` reads JSONL line by line in binary and reports a bad line (invalid UTF-8,
  invalid JSON, not an object) with its file and line number instead of losing the file's tail;
- `TextFileReader` reads a folder of .txt files (one document per file), which datatrove lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.readers.base import BaseDiskReader

MALFORMED = "malformed"


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
        # text mode with surrogateescape: works for every compression (zstd streams have no
        # binary readline) and keeps invalid bytes recoverable for the error report
        opened = self.data_folder.open(
            filepath, "rt", compression=self.compression, encoding="utf-8", errors="surrogateescape", newline="\n"
        )
        with opened as f:
            for li, line in enumerate(f):
                if not line.strip():
                    continue  # blank lines separate nothing and hold no record
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError as e:
                    raw = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    yield self._bad(adapter, li, "invalid_utf8", f"invalid UTF-8 at character {e.start}", raw)
                    continue
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    yield self._bad(adapter, li, "invalid_json", f"invalid JSON: {e}", line)
                    continue
                if not isinstance(data, dict):
                    yield self._bad(adapter, li, "not_an_object", f"expected a JSON object, got {type(data).__name__}", line)
                    continue
                document = self.get_document_from_dict(data, filepath, li)
                if document:
                    yield document

    def _bad(self, adapter: RecordAdapter, li: int, kind: str, message: str, raw: str) -> Document:
        where = f"{adapter.display_path}:{li + 1}"
        record = malformed_record(adapter.doc_id(li + 1), where, kind, message, raw)
        return Document(**record)


class TextFileReader(BaseDiskReader):
    """One document per text file; the record number is the file itself (position 1)."""

    name = "📖 Text files"

    def read_file(self, filepath: str):
        adapter: RecordAdapter = self.adapter.__func__
        with self.data_folder.open(filepath, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            where = f"{adapter.display_path}:1"
            record = malformed_record(
                adapter.doc_id(1), where, "invalid_utf8", f"invalid UTF-8 at byte {e.start}", raw.decode("utf-8", "replace")
            )
            yield Document(**record)
            return
        document = self.get_document_from_dict({adapter.text_field: text}, filepath, 0)
        if document:
            yield document


def source_files(path: Path, fmt: str) -> list[Path]:
    """The files of one source, sorted (a file, every matching file under a folder, or a glob)."""
    patterns = {"jsonl": ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.json", "*.ndjson"), "parquet": ("*.parquet",), "txt": ("*.txt", "*.md", "*.rst")}
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted({f for pat in patterns[fmt] for f in path.rglob(pat) if f.is_file()})
    return sorted(f for f in path.parent.glob(path.name) if f.is_file())


def detect_format(path: Path) -> str:
    """Guess a source's format from its name or contents."""
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return "hf_disk"
        names = [f.name for f in path.rglob("*") if f.is_file()]
        for fmt, suffixes in (("parquet", (".parquet",)), ("jsonl", (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json")), ("txt", (".txt", ".md", ".rst"))):
            if any(n.endswith(suffixes) for n in names):
                return fmt
        return "txt"
    name = path.name
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".txt", ".md", ".rst")):
        return "txt"
    return "jsonl"
