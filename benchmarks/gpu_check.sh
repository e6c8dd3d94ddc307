#!/usr/bin/env bash
# The GPU check of the trainer (issue 16), for a session that is lent a GPU machine.
#
#   benchmarks/gpu_check.sh prepare   # here (CPU machine, network to PyPI): fills .gpu/
#   benchmarks/gpu_check.sh           # there, with .gpu carried (device tool: carry [".gpu"])
#
# The GPU machine has Python 3.12 with torch (CUDA), sentence-transformers and transformers, and
# no network. `prepare` puts beside the working tree, in the git-ignored folder .gpu/, what it
# lacks: wheels of synthrank's other dependencies (cp312), SciFact (corpus, queries, qrels) and
# minilm stored in fp16 (its fp32 weights alone are over the 64 MiB a device call carries; the
# check casts them back to fp32 before training, so its nDCG@10 can differ from the fp32 model's
# in the fourth decimal).
#
# The check (under 5 minutes on an H200): 20 steps of ws2 on real SciFact train lists in bf16
# autocast on CUDA, the same 20 steps in fp32, their step times, and one evaluation of the bf16
# model on SciFact test. Output and a summary JSON go to $OUT (or ./gpu-check-out).
set -euo pipefail
cd "$(dirname "$0")/.."
HERE="$PWD"
GPU="$HERE/.gpu"

if [ "${1:-}" = prepare ]; then
  PY="${PYTHON:-.venv/bin/python}"
  DATA="${SYNTHRANK_DATA:-$(cd .. && pwd)/shared/data}"
  rm -rf "$GPU" && mkdir -p "$GPU/whl" "$GPU/data/beir"
  # Pure-Python or cp312 manylinux wheels of what the image lacks (see the device tool's KINDS.md).
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$GPU/whl" \
    "bm25s==0.2.*" "pytrec-eval-terrier==0.5.*" "datasets==4.*" "dill<0.4.1" "multiprocess<0.70.19"
  cp -r "$DATA/beir/scifact" "$GPU/data/beir/scifact"
  HF_HUB_OFFLINE=1 "$PY" - "$GPU/minilm" <<'PY'
import sys

import torch

from synthrank.evaluate.models import load_model

model = load_model("minilm")
model.to(torch.float16)
model.save_pretrained(sys.argv[1], safe_serialization=True)
PY
  du -sh "$GPU"
  echo "prepared $GPU; on the GPU machine run benchmarks/gpu_check.sh with .gpu carried"
  exit 0
fi

OUT="${OUT:-$HERE/gpu-check-out}"
STEPS="${STEPS:-20}"  # fewer to try the script on a CPU (bf16 needs AVX512-BF16 or AMX there)
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -d "$GPU/whl" ] && ! "$PY" -c "import bm25s, pytrec_eval, datasets" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-site "$GPU"/whl/*.whl
  export PYTHONPATH="/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SYNTHRANK_DATA="$GPU/data" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SYNTHRANK_CACHE="$OUT/cache"
SR=("$PY" -m synthrank.cli)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" \
  || echo "no nvidia-smi" | tee "$OUT/gpu.txt"
"$PY" - "$GPU/minilm" "$OUT/minilm-fp32" <<'PY'
import sys

import torch
from sentence_transformers import SentenceTransformer

print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
model = SentenceTransformer(sys.argv[1], device="cpu")
model.to(torch.float32)
model.save_pretrained(sys.argv[2])
PY
DATA_SPEC="beir:scifact,split=train,relabel=1:3,bm25=2:1,random=1:0"
for precision in bf16 fp32; do
  flag=()
  [ "$precision" = bf16 ] && flag=(--bf16)
  "${SR[@]}" train --data "$DATA_SPEC" --base "$OUT/minilm-fp32" --loss ws2 --max-steps "$STEPS" \
    --out "$OUT/ws2-$precision" --quiet "${flag[@]}" 2>&1 | tee "$OUT/train-$precision.log"
done
"${SR[@]}" evaluate --model "$OUT/ws2-bf16" --dataset beir:scifact --split test \
  --output "$OUT/eval-bf16" --quiet 2>&1 | tee "$OUT/evaluate.log"
"$PY" - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = {p: json.loads((out / f"ws2-{p}" / "synthrank_train.json").read_text())
        for p in ("bf16", "fp32")}
summary = {
    "gpu": (out / "gpu.txt").read_text().strip(),
    "train_seconds": {p: r["timings"]["train"] for p, r in runs.items()},
    "bf16_over_fp32_time": runs["bf16"]["timings"]["train"] / runs["fp32"]["timings"]["train"],
    "mean_training_loss": {p: r["mean_training_loss"] for p, r in runs.items()},
    "scifact_test": json.loads((out / "eval-bf16" / "metrics.json").read_text())["metrics"],
}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
