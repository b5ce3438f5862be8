"""The export's manifest.json: its schema (`mixforge/schemas/manifest-v1.json`), reading it, and what
it tells each trainer (config fragments and the files of `trainer/`)."""

from __future__ import annotations

import json
from pathlib import Path


import mixforge
from mixforge.errors import InputError, MixforgeError
from mixforge.pipelines.export.snippets import trainer_snippets
from mixforge.pipelines.export.formats import (TEXT_FORMATS)


SCHEMA = Path(mixforge.__file__).resolve().parent / "schemas" / "manifest-v1.json"  # shipped in the package


def validate_manifest(manifest: dict) -> None:
    import jsonschema

    try:
        jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InputError(f"manifest field {where}: {e.message}") from None


def read_manifest(folder: Path) -> dict:
    """The parsed manifest.json of an export folder; MixforgeError when there is none to read."""
    path = Path(folder) / "manifest.json"
    if not Path(folder).is_dir():
        raise MixforgeError(f"{folder}: no such export folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MixforgeError(f"{path} not found: {folder} is not an export") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MixforgeError(f"{path} cannot be read: {e}") from None
    except json.JSONDecodeError as e:
        raise MixforgeError(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # a number of over 4,300 digits; nesting deeper than Python recurses
        raise MixforgeError(f"{path}: not valid JSON for mixforge ({str(e)[:120]})") from None


def trainer_fragments(m: dict) -> dict:
    """How each trainer consumes this export: token shares for samplers of token blocks (Megatron,
    nanotron, OLMo-core, litgpt, torchtitan), per-document probabilities for samplers of documents
    (`interleave_datasets`, MosaicML Streams). Reference mode has one part per component,
    materialised mode one part, "mixed"."""
    per_part: dict[str, list[str]] = {}
    part_tokens: dict[str, int] = {}
    for s in m["shards"]:
        per_part.setdefault(s["component"] or "mixed", []).append(s["path"])
        part_tokens[s["component"] or "mixed"] = part_tokens.get(s["component"] or "mixed", 0) + s["tokens"]
    comps = m["components"]
    shares = {p: comps[p]["share"] if p in comps else 1.0 for p in per_part}
    doc_probs = {p: comps[p]["document_probability"] if p in comps else 1.0 for p in per_part}
    out: dict = {}
    if m["format"] == "megatron":  # each prefix weighs its part's share times its part of that part's tokens
        pairs = [f"{shares[part] * sh['tokens'] / part_tokens[part]:.6f} {sh['path']}"
                 for sh, part in ((sh, sh["component"] or "mixed") for sh in m["shards"])]
        out["megatron_data_path"] = "--data-path " + " ".join(pairs)
    if m["format"] == "datatrove":
        out["nanotron_dataset_weights"] = shares
    if m["format"] == "numpy":
        out["olmo_core_source_mixture"] = {"sources": [{"name": p, "target_ratio": shares[p], "paths": [f + ".npy" for f in paths]}
                                                       for p, paths in per_part.items()], "dtype": m["token_dtype"]}
    if m["format"] in TEXT_FORMATS:
        ext = ".parquet" if m["format"] == "parquet" else ".jsonl.zst"
        out["hf_interleave_probabilities"] = doc_probs
        out["hf_data_files"] = {p: [f + ext for f in paths] for p, paths in per_part.items()}
    if m["format"] == "mds":
        out["mosaicml_streams"] = [{"local": str(Path(paths[0]).parent), "proportion": doc_probs[p]}
                                   for p, paths in per_part.items()]
    out["snippets"] = trainer_snippets(m, per_part, shares, doc_probs)
    return out


def trainer_files(m: dict) -> dict[str, str]:
    """The files of `trainer/` (relative path -> text), rendered from the manifest's fragments."""
    t = m["trainer"]
    files = {}
    if "megatron_data_path" in t:
        files["megatron_data_path.txt"] = t["megatron_data_path"] + "\n"
    for key in ("nanotron_dataset_weights", "olmo_core_source_mixture", "hf_interleave_probabilities", "mosaicml_streams"):
        if key in t:
            files[f"{key}.json"] = json.dumps(t[key], indent=2, sort_keys=True, default=str) + "\n"
    return files | t["snippets"]


def named_files(manifest: dict) -> set[str]:
    """Every file an export's manifest names, as paths relative to the export: its shards' files,
    index files, manifest.json, README.md, mixture.png and the trainer/ files its fragments give."""
    named = {f["path"] for s in manifest["shards"] for f in s["files"]} | {f["path"] for f in manifest.get("index_files", [])}
    named |= {"manifest.json", "README.md", "mixture.png"}
    try:
        named |= {f"trainer/{name}" for name in trainer_files(manifest)}
    except (KeyError, TypeError, AttributeError):  # no trainer fragments in this manifest: trainer/ files are not its own
        pass
    return named
