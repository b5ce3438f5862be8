"""The MDS baseline a user would write, run with the readers' Python (.venv-readers, where
mosaicml-streaming installs): read the kept Parquet documents (their source label stands in for the component), tokenize them with the same
tokenizer.json, write them with MosaicML's MDSWriter (the columns mixforge writes). Times itself,
so the interpreter's start and torch's import are not counted. Called by bench_export.py.

    python bench/mds_writer_baseline.py PARQUET_DIR TOKENIZER_JSON OUT_DIR REPEAT EOS_ID
"""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from streaming import MDSWriter
from tokenizers import Tokenizer


def run(parquet_dir: Path, tokenizer_path: Path, out: Path, eos: int) -> int:
    shutil.rmtree(out, ignore_errors=True)
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    columns = {"component": "str", "id": "str", "text": "str", "tokens": "ndarray:uint16"}
    tokens = 0
    with MDSWriter(out=str(out), columns=columns, hashes=["sha256"], size_limit=None) as writer:
        for f in sorted(parquet_dir.rglob("*.parquet")):
            table = pq.read_table(f, columns=["id", "text", "source"]).to_pylist()
            texts = [r["text"] for r in table]
            for row, enc in zip(table, tok.encode_batch(texts, add_special_tokens=False)):
                ids = np.array([*enc.ids, eos], dtype=np.uint16)
                tokens += len(ids)
                writer.write({"component": row["source"], "id": row["id"],
                              "text": row["text"], "tokens": ids})
    return tokens


if __name__ == "__main__":
    parquet_dir, tokenizer_path, out = map(Path, sys.argv[1:4])
    repeat, eos = int(sys.argv[4]), int(sys.argv[5])
    times, tokens = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        tokens = run(parquet_dir, tokenizer_path, out, eos)
        times.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps({"times": times, "tokens": tokens}))
