"""Tokenizers and token shards for proxy training.

A proxy run reads one flat token file per component: `<out>/<component>.bin` (every document's
tokens followed by an EOS token) and `<out>/<component>.json` (counts, dtype, tokenizer hash).
The tokenizer is a local `tokenizer.json` the user names, or, when they name none, a byte-level
BPE trained here on a seeded sample of the corpus (`train_default_tokenizer`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mixforge.errors import ConfigError, InputError, LedgerError, MixforgeError
from mixforge.workspace import Workspace, atomic_write_bytes, atomic_write_json, atomic_write_npy

EOS = "<|endoftext|>"
# EOS candidates for tokenizers the user brings (GPT-2 style, Llama/T5 style, BERT style).
EOS_CANDIDATES = [EOS, "</s>", "<eos>", "[SEP]"]
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENCODE_CHARS = 1_000_000  # characters per encode call (see TokenShardWriter.add)


def _disable_cut(tok):
    """Switch off truncation and padding: a tokenizer.json saved with them (MiniLM's cuts at 128
    tokens) would silently drop most of every document."""
    tok.no_truncation()
    tok.no_padding()
    return tok


def load_tokenizer(path: str | Path):
    """A local tokenizer.json, with truncation and padding off. ConfigError when it does not load."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tokenizer file {path}: not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception with serde's message
        raise ConfigError(f"tokenizer file {path} does not load as a tokenizers tokenizer.json: {e}") from None
    return _disable_cut(tok)


def train_default_tokenizer(texts: Iterable[str], path: str | Path, vocab_size: int = 8192, seed: int = 0,
                            sample_docs: int = 20_000):
    """The default tokenizer when the user names none: byte-level BPE (GPT-2 style, so any text
    round-trips exactly) with `<|endoftext|>` as its only special token, trained on a seeded
    sample of `sample_docs` texts and saved atomically to `path`. Returns the tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = list(texts)
    if not texts:
        raise MixforgeError("cannot train a tokenizer: no texts")
    if len(texts) > sample_docs:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=sample_docs, replace=False))
        texts = [texts[i] for i in keep]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    atomic_write_bytes(Path(path), tok.to_str().encode("utf-8"))
    return tok


def tokenizer_identity(tok_or_path) -> dict:
    """What identifies a tokenizer in a run row: name, path, vocab size and the sha256 of its
    tokenizer.json (the file's bytes for a path; the serialised JSON for a loaded tokenizer)."""
    if isinstance(tok_or_path, (str, Path)):
        path = Path(tok_or_path)
        tok = load_tokenizer(path)
        data = path.read_bytes()
        name = path.parent.name if path.name == "tokenizer.json" and path.parent.name else path.stem
        where = str(path.resolve())
    else:
        tok = tok_or_path
        data = tok.to_str().encode("utf-8")
        name, where = "in-memory", None
    return {"name": name, "path": where, "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "sha256": hashlib.sha256(data).hexdigest()}


def eos_id(tok) -> int:
    """The token appended after each document."""
    for token in EOS_CANDIDATES:
        tid = tok.token_to_id(token)
        if tid is not None:
            return tid
    raise ConfigError(f"the tokenizer has no end-of-text token (looked for {', '.join(EOS_CANDIDATES)})")


def token_dtype(vocab_size: int, fmt: str | None = None) -> np.dtype:
    """2 bytes when every token id fits, else 4: int32 for Megatron (its only 4-byte dtype code),
    uint32 for the workspace's shards and the other formats."""
    if vocab_size <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.int32) if fmt == "megatron" else np.dtype(np.uint32)


class TokenShardWriter:
    """Streams (component, text) batches into `<out>/<component>.bin` + `<component>.json` +
    `<component>.lengths.npy` (each document's tokens, EOS included, in order).

    Each component's tokens and lengths stream into temp files in `out_dir`, renamed into place
    only by `close()`, after every document was encoded, so a kill leaves the previous shards (or
    none). Memory holds one batch.

    `append_from`: a folder of shards written with the same tokenizer, to extend. Each is copied
    into its temp file first and never written to (it may be a hard link to a published shard, and
    a resumed run appends to it again); `close()` also reports the shards nothing was added to."""

    def __init__(self, tokenizer, out_dir: str | Path, tokenizer_path: str | None = None, append_from: Path | None = None):
        """`tokenizer_path`: what the shards' metadata names as the tokenizer's path (the tokens
        stage gives its workspace-relative path; the default is the file's absolute path)."""
        self.tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else _disable_cut(tokenizer)
        self.identity = tokenizer_identity(tokenizer) | ({"path": tokenizer_path} if tokenizer_path else {})
        self.eos = eos_id(self.tok)
        self.dtype = token_dtype(self.identity["vocab_size"])
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, tuple[list[str], list]] = {}  # component -> ([tokens temp, lengths temp], open files)
        self.stats: dict[str, dict] = {}
        self.append_from = append_from

    def _open(self, comp: str) -> None:
        if not SAFE_NAME.match(comp):
            raise InputError(f"component name {comp!r} cannot be a file name (letters, digits, _ . - only)")
        paths, handles = [], []
        for kind in ("bin", "lengths"):
            fd, tmp = tempfile.mkstemp(dir=self.out, prefix=f".{comp}.{kind}.", suffix=".tmp")
            paths.append(tmp)
            handles.append(os.fdopen(fd, "wb"))
        self.files[comp] = (paths, handles)
        self.stats[comp] = {"documents": 0, "tokens": 0}
        if self.append_from and (self.append_from / f"{comp}.bin").exists():
            self._append(self.append_from, comp)

    def _existing(self, comp: str, folder: Path | None = None) -> dict:
        """The metadata of a shard in `folder` (default: the one appended to); its tokenizer must be this one."""
        folder = folder or self.append_from
        meta = json.loads((folder / f"{comp}.json").read_text())
        if meta["tokenizer_sha256"] != self.identity["sha256"]:
            raise LedgerError(f"{folder / comp}.bin was written with another tokenizer ({meta['tokenizer_sha256'][:12]}, "
                              f"now {self.identity['sha256'][:12]}): rerun the build with --force")
        return meta

    def _append(self, folder: Path, comp: str) -> None:
        """A closed shard's tokens and lengths in `folder` appended to component `comp`'s open files."""
        meta = self._existing(comp, folder)
        tokens_file, lengths_file = self.files[comp][1]
        with open(folder / f"{comp}.bin", "rb") as src:
            shutil.copyfileobj(src, tokens_file, 1 << 22)
        lengths_file.write(np.load(folder / f"{comp}.lengths.npy").astype(np.uint32).tobytes())
        self.stats[comp]["documents"] += meta["documents"]
        self.stats[comp]["tokens"] += meta["tokens"]

    def add(self, batch: list[tuple[str, str]]) -> list[int]:
        """Encode and append a batch; returns each document's length in tokens (EOS included).
        Encoded in pieces of about ENCODE_CHARS characters: an Encoding costs ~70 bytes per token,
        so a whole shard of long documents at once would cost hundreds of MB."""
        sizes: list[int] = []
        start = 0
        while start < len(batch):
            end, held = start, 0
            while end < len(batch) and (end == start or held + len(batch[end][1] or "") <= ENCODE_CHARS):
                held += len(batch[end][1] or "")
                end += 1
            sizes += self._add(batch[start:end])
            start = end
        return sizes

    def _add(self, batch: list[tuple[str, str]]) -> list[int]:
        # encode_batch_fast (no offsets) runs on all cores; add_special_tokens=False so BERT-like tokenizers add no [CLS].
        encodings = self.tok.encode_batch_fast([text or "" for _, text in batch], add_special_tokens=False)
        per_comp: dict[str, tuple[list[int], list[int]]] = {}
        sizes = []
        for (comp, _), enc in zip(batch, encodings):
            comp = str(comp)
            if comp not in self.files:
                self._open(comp)
            ids, lengths = per_comp.setdefault(comp, ([], []))
            ids.extend(enc.ids)
            ids.append(self.eos)
            lengths.append(len(enc.ids) + 1)
            sizes.append(len(enc.ids) + 1)
        for comp, (ids, lengths) in per_comp.items():
            tokens_file, lengths_file = self.files[comp][1]
            tokens_file.write(np.asarray(ids, dtype=self.dtype).tobytes())
            lengths_file.write(np.asarray(lengths, dtype=np.uint32).tobytes())
            self.stats[comp]["documents"] += len(lengths)
            self.stats[comp]["tokens"] += len(ids)
        return sizes

    def append_shards(self, folder: Path) -> None:
        """Append the shards another writer closed in `folder` (one prune shard's, tokenized by a
        Ray task with the same tokenizer), as if their documents had been added here."""
        for meta_path in sorted(folder.glob("*.json")):
            comp = meta_path.stem
            if comp not in self.files:
                self._open(comp)
            self._append(folder, comp)

    def close(self) -> dict:
        """Publish every component's files; returns {component: metadata}."""
        result = {}
        for comp in sorted(self.files):
            (tokens_tmp, lengths_tmp), handles = self.files[comp]
            for f in handles:
                f.flush()
                os.fsync(f.fileno())
                f.close()
            atomic_write_npy(self.out / f"{comp}.lengths.npy", np.fromfile(lengths_tmp, dtype=np.uint32))
            Path(lengths_tmp).unlink()
            os.replace(tokens_tmp, self.out / f"{comp}.bin")
            meta = {"component": comp, "tokens": self.stats[comp]["tokens"], "documents": self.stats[comp]["documents"],
                    "dtype": self.dtype.name, "eos_id": self.eos, "tokenizer_sha256": self.identity["sha256"],
                    "tokenizer": self.identity}
            atomic_write_json(self.out / f"{comp}.json", meta)
            result[comp] = meta
        if self.append_from:  # shards this run added nothing to stay as they are (and are in out_dir)
            for path in sorted(self.append_from.glob("*.bin")):
                if path.stem not in result:
                    result[path.stem] = self._existing(path.stem)
        self.files = {}
        return dict(sorted(result.items()))

    def abort(self) -> None:
        for paths, handles in self.files.values():
            for f in handles:
                f.close()
            for tmp in paths:
                Path(tmp).unlink(missing_ok=True)
        self.files = {}


def tokenize_components(docs: Iterable[tuple[str, str]], tokenizer, out_dir: str | Path,
                        batch_size: int = 1024, tokenizer_path: str | None = None) -> dict:
    """Tokenize (component, text) pairs into token shards (see `TokenShardWriter`). `tokenizer`
    is a Tokenizer or a tokenizer.json path. Returns {component: metadata}."""
    writer = TokenShardWriter(tokenizer, out_dir, tokenizer_path)
    try:
        batch: list[tuple[str, str]] = []
        for pair in docs:
            batch.append(pair)
            if len(batch) >= batch_size:
                writer.add(batch)
                batch = []
        if batch:
            writer.add(batch)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def workspace_frames(ws: Workspace | str | Path, names: list[str] | None = None):
    """Every kept document as polars frames (id, text, source, component), one prune shard at a
    time, so the corpus never sits in memory whole: each prune shard joined with its
    components/<shard>.parquet. `names`: only these prune shards."""
    import polars as pl

    from mixforge.ledger import parquet_files
    from mixforge.pipelines.outputs import component_file

    ws = ws if isinstance(ws, Workspace) else Workspace(Path(ws))
    shards = parquet_files(ws.docs_dir("prune"))
    if not shards:
        raise MixforgeError(f"no documents under {ws.docs_dir('prune')}: run the prune stage (mixforge build) first")
    wanted = None if names is None else set(names)
    for shard in shards if wanted is None else [s for s in shards if s.name in wanted]:
        comp_path = component_file(ws, shard)
        if not comp_path.exists():
            raise MixforgeError(f"{comp_path} not found: run the components stage (mixforge build) first")
        docs = pl.read_parquet(shard, columns=["id", "text", "source"])
        components = pl.read_parquet(comp_path, columns=["id", "component"])
        joined = docs.join(components, on="id", how="inner", maintain_order="left")
        if joined.height != docs.height:  # a document without its component (or with two) must not vanish quietly
            missing = docs.join(joined.select("id"), on="id", how="anti")["id"].head(5).to_list()
            raise LedgerError(f"{shard}: {docs.height} kept documents but {joined.height} with a component in "
                              f"{comp_path}; missing ids (first 5): {missing}. Rerun the build with --force.")
        yield joined


def workspace_docs(ws: Workspace | str | Path) -> Iterable[tuple[str, str]]:
    """(component, text) for every kept document."""
    for frame in workspace_frames(ws):
        yield from zip(frame["component"].to_list(), frame["text"].to_list())


def tokenize_workspace(ws: Workspace | str | Path, tokenizer, out_dir: str | Path, batch_size: int = 1024) -> dict:
    """Token shards for a workspace's components, written into `out_dir`."""
    return tokenize_components(workspace_docs(ws), tokenizer, out_dir, batch_size=batch_size)
