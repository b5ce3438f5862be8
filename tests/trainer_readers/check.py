"""Reads a mixforge export with the trainers' own packages and prints what they saw as JSON.

Run by tests/pipelines/export/test_export_readers.py with the readers' Python (`.venv-readers`, built by
`make readers`): mosaicml-streaming, litdata (litgpt's loader) and torchtitan need a CUDA build
of torch beside torchvision, which cannot share the main CPU environment (ENVIRONMENT.md).

    check.py mds EXPORT            every sample of every Stream, and one mixed epoch
    check.py mdswriter OUT DOCS    DOCS (JSON lines) written by streaming's own MDSWriter
    check.py litgpt EXPORT WORK    the export's litgpt.py snippet: prepare, then blocks drawn
    check.py torchtitan EXPORT TOKENIZER_DIR   the export's torchtitan.py snippet, batches drawn
"""

import collections
import importlib
import json
import sys
from pathlib import Path


def snippet(export: Path, name: str):
    """The export's trainer/load_<name>.py, imported by name so that worker processes find it too."""
    sys.path.insert(0, str(export / "trainer"))
    return importlib.import_module(f"load_{name}")


def check_mds(export: Path) -> dict:
    from streaming import StreamingDataset

    mod = snippet(export, "mosaicml_streaming")
    streams = {}
    for folder in mod.STREAMS:  # each folder alone, read in order: every sample exactly once
        ds = StreamingDataset(local=str(export / folder), shuffle=False, batch_size=1)
        samples = [ds[i] for i in range(len(ds))]
        streams[folder] = {"samples": len(samples), "tokens": int(sum(len(s["tokens"]) for s in samples)),
                           "ids": [s["id"] for s in samples], "components": sorted({s["component"] for s in samples}),
                           "dtype": str(samples[0]["tokens"].dtype), "text_chars": sum(len(s["text"]) for s in samples)}
    mixed = mod.build(batch_size=1, shuffle=True)  # the snippet's Streams with their proportions
    drawn = collections.Counter(mixed[i]["component"] for i in range(len(mixed)))
    return {"streams": streams, "mixed_epoch": len(mixed), "mixed_components": dict(drawn)}


def write_mdswriter(out: Path, docs_path: Path) -> dict:
    import numpy as np
    from streaming import MDSWriter

    docs = [json.loads(line) for line in docs_path.read_text().splitlines()]
    dtype = docs[0]["dtype"]
    columns = {"component": "str", "id": "str", "text": "str", "tokens": f"ndarray:{dtype}"}
    with MDSWriter(out=str(out), columns=columns, hashes=["sha256"], size_limit=None) as writer:
        for d in docs:
            writer.write({"component": d["component"], "id": d["id"], "text": d["text"],
                          "tokens": np.asarray(d["tokens"], dtype=dtype)})
    return {"files": sorted(p.name for p in out.iterdir())}


def check_litgpt(export: Path, work: Path) -> dict:
    from litdata import StreamingDataset, TokensLoader

    mod = snippet(export, "litgpt")
    mod.prepare(work, num_workers=1, verbose=False)
    block = 33
    parts = {}
    for part in mod.WEIGHTS:  # all tokens of a part, as litdata stores them
        ds = StreamingDataset(input_dir=str(work / part), item_loader=TokensLoader(block_size=block), drop_last=True)
        parts[part] = {"blocks": len(ds), "first": ds[0].tolist()}
    combined = mod.build(work, block_size=block)
    drawn = [next(it) for it in [iter(combined)] for _ in range(20)]
    return {"parts": parts, "drawn_shapes": sorted({tuple(x.shape) for x in drawn}), "drawn_dtype": str(drawn[0].dtype)}


def check_torchtitan(export: Path, tokenizer_dir: Path) -> dict:
    from torchtitan.components.tokenizer import HuggingFaceTokenizer
    from torchtitan.hf_datasets.text_datasets import InterleavedHuggingFaceTextDataLoader

    mod = snippet(export, "torchtitan")
    config = mod.dataloader_config(infinite=False)
    tokenizer = HuggingFaceTokenizer(tokenizer_path=str(tokenizer_dir))
    loader = InterleavedHuggingFaceTextDataLoader(config, dp_world_size=1, dp_rank=0, tokenizer=tokenizer,
                                                  seq_len=64, local_batch_size=4)
    batches = [b for b, _ in zip(loader, range(5))]
    return {"sources": [s.dataset for s in config.sources], "weights": [s.weight for s in config.sources],
            "batches": len(batches), "input_shape": list(batches[0][0]["input"].shape),
            "label_shape": list(batches[0][1].shape), "max_token": int(max(b[0]["input"].max() for b in batches))}


if __name__ == "__main__":
    kind, args = sys.argv[1], [Path(a) for a in sys.argv[2:]]
    run = {"mds": check_mds, "mdswriter": write_mdswriter, "litgpt": check_litgpt, "torchtitan": check_torchtitan}[kind]
    print("RESULT " + json.dumps(run(*args)))
