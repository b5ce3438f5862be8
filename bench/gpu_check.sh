#!/usr/bin/env bash
# The GPU figures in one call of under 8 minutes on a machine with one H100/H200:
#   1. installs the carried wheels (.whl/, see BENCHMARKS.md "GPU check") and mixforge into /tmp/site,
#   2. embedding docs/s at 256 tokens: mixforge's Encoder (fp16, length-sorted blocks) vs plain
#      SentenceTransformer.encode on the same GPU (bench_embed.py),
#   3. faiss k-means on GPU, 1M x 384, k=1000, vs faiss on CPU on a sample (bench_kmeans.py),
#   4. N proxies trained together (train_many) vs one by one, tiny and small presets, with MFU
#      counting the output layer (bench_proxy.py),
# and writes $OUT/gpu_check.json (every result line) plus each benchmark's log.
#
#   bench/gpu_check.sh          # on the GPU machine
#   bench/gpu_check.sh --tiny   # CPU dry run with tiny sizes (tests/project/test_gpu_check.py runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
[[ "${1:-}" == "--tiny" ]] && TINY=1
OUT=${OUT:-bench/out/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1

if [[ $TINY == 0 ]]; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  $PY -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . >/dev/null
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  EMBED=(--docs 4000 --max-tokens 256)  # int8 is a CPU path: bench_embed skips it on CUDA
  KMEANS=(--n 1000000 --dim 384 --k 1000)
  PROXY=(--presets tiny,small --n 4,8)
  LIMIT=150
else
  EMBED=(--docs 16 --max-tokens 32 --no-static --no-int8)
  KMEANS=(--n 2000 --dim 16 --k 8)
  PROXY=(--presets tiny --n 2 --steps 2 --seq 16 --batch 2 --vocab 512)
  LIMIT=300
fi

RESULTS=bench/out/results.jsonl
mkdir -p bench/out
START=$(wc -l < "$RESULTS" 2>/dev/null || echo 0)
status=0
run() {  # name, then the benchmark's command line: a failure is recorded and the next one still runs
  local name=$1; shift
  echo "== $name"
  if ! timeout "$LIMIT" "$PY" "$@" >"$OUT/$name.log" 2>&1; then
    echo "$name failed (log: $OUT/$name.log)"; tail -5 "$OUT/$name.log"; status=1
  fi
  grep -v "^\s*$" "$OUT/$name.log" | tail -4
}
run embed bench/bench_embed.py "${EMBED[@]}"
run kmeans bench/bench_kmeans.py "${KMEANS[@]}"
run proxy bench/bench_proxy.py "${PROXY[@]}"

tail -n +"$((START + 1))" "$RESULTS" | $PY -c "import json, sys; rows = [json.loads(l) for l in sys.stdin if l.strip()]; json.dump({'tiny': $TINY == 1, 'results': rows}, open('$OUT/gpu_check.json', 'w'), indent=1); print(len(rows), 'results in $OUT/gpu_check.json')"
exit $status
