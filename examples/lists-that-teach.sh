#!/usr/bin/env bash
# Issue 14's downstream check: do graded synthetic lists teach minilm anything, and does making
# them hard for the student help? Settings are read on dev sets only: SciFact dev (200 of the
# 809 train queries, held out of generation) and ArguAna dev (zero-shot). SciFact test is not
# read here. Every step skips what is already done, so the script resumes after an interruption.
#
#   bash examples/lists-that-teach.sh            # all steps
#   STEPS="inspect" bash examples/lists-that-teach.sh
#   MODELS="planned:ws2 planned-xq:infonce" STEPS="train evaluate" bash examples/lists-that-teach.sh
#
# Variants of the same generated lists (Qwen2.5-Coder-0.5B, examples/levels/planned.toml):
#   planned      levels 3/2/1/0 as generated (level 1: another topic of the field)
#   planned-xq   level 1 replaced by the passage of another query that BM25 ranks highest for
#                this query (cross-query hard negative); the generated level 1 becomes level 0
# and, for reference, real lists of the 609 train queries outside SciFact dev (judged positive
# at 3, two BM25 negatives at 1, one random passage at 0), as in the replication:
#   real
set -euo pipefail
cd "$(dirname "$0")/.."
export SYNTHRANK_DATA="${SYNTHRANK_DATA:-$(cd .. && pwd)/shared/data}" HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
SR=".venv/bin/synthrank"
ROOT="${ROOT:-runs/teach}"
DEV="runs/data/scifact-dev"
GEN="${GEN:-runs/gen/planned300}"
LIMIT="${LIMIT:-300}"
STEPS="${STEPS:-split generate inspect train evaluate table}"
declare -A DATA=(
  [planned]="$GEN"
  [planned-xq]="$GEN,relabel=1:0,bm25=1:1"
  [real]="$DEV,split=train,relabel=1:3,bm25=2:1,random=1:0"
)
has() { [[ " $STEPS " == *" $1 "* ]]; }

if has split && [ ! -f "$DEV/qrels/dev.tsv" ]; then
  $SR holdout beir:scifact --split train -n 200 --seed 0 --out "$DEV"
fi
if has generate; then
  $SR generate --queries "$DEV" --split train --limit "$LIMIT" --out "$GEN" \
    --config examples/levels/planned.toml --model qwen2.5-coder-0.5b --parallel 16 --quiet
fi
mkdir -p "$ROOT/inspect"
if has inspect; then
  # Calibration on real lists: SciFact dev's judged positives against their top-2 BM25 passages
  # from the whole corpus (the lists that taught minilm +0.10 nDCG@10 on SciFact test).
  [ -f "$ROOT/inspect/real-dev.json" ] || $SR inspect "$DEV,split=dev,relabel=1:3,bm25=2:1" \
    --judge mpnet --json --quiet > "$ROOT/inspect/real-dev.json"
  for name in "${!DATA[@]}"; do
    [ -f "$ROOT/inspect/$name.json" ] || $SR inspect "${DATA[$name]}" --judge mpnet --json --quiet \
      > "$ROOT/inspect/$name.json"
  done
fi
evaluate() {  # model-folder-or-alias name
  [ -f "$ROOT/eval/$2/scifact-dev/metrics.json" ] || $SR evaluate --model "$1" --dataset "$DEV" \
    --split dev --output "$ROOT/eval/$2/scifact-dev" --quiet
  [ -f "$ROOT/eval/$2/arguana-dev/metrics.json" ] || $SR evaluate --model "$1" \
    --dataset beir:arguana --split dev --output "$ROOT/eval/$2/arguana-dev" --quiet
}
if has evaluate; then evaluate minilm base; fi
# variant:loss pairs; the issue's three losses on both variants by default.
MODELS="${MODELS:-planned:ws2 planned:kl planned:infonce planned-xq:ws2 planned-xq:kl planned-xq:infonce}"
for pair in $MODELS; do
  name="${pair%%:*}" loss="${pair##*:}"
  model="$ROOT/models/$name-$loss"
  extra=()
  # The binary view (levels 2-3 positive), one positive and two negatives, as the replication.
  [ "$loss" = infonce ] && extra=(--binary-threshold 2 --group-size 3)
  if has train && [ ! -f "$model/synthrank_train.json" ]; then
    $SR train --data "${DATA[$name]}" --loss "$loss" --max-length 128 --out "$model" \
      --quiet "${extra[@]}"
  fi
  if has evaluate && [ -f "$model/synthrank_train.json" ]; then evaluate "$model" "$name-$loss"; fi
done
if has table; then
  ROOT="$ROOT" MODELS="$MODELS" .venv/bin/python - <<'PY'
"""The README table: measures of each variant's lists, then each model on the dev sets."""
import json
import os
from pathlib import Path

from synthrank.evaluate import load_metrics
from synthrank.evaluate.significance import compare_per_query

root = Path(os.environ["ROOT"])
print("| lists | queries | student (minilm) misorder, adjacent levels | mpnet judge agreement "
      "per level | completion tokens per kept passage |")
print("|---|---|---|---|---|")
for path in sorted((root / "inspect").glob("*.json")):
    report = json.loads(path.read_text())
    d, j = report["difficulty"], report.get("encoder_judge", {}).get("per_level", {})
    grades = sorted(report["passages_per_level"], key=int, reverse=True)
    pairs = " / ".join(
        f"{a}>{b} {d[f'{a}>{b}']['rate']:.1%}" for a, b in zip(grades, grades[1:])
    )
    agree = " / ".join(f"{g}: {v['rate']:.0%}" for g, v in j.items())
    cost = (report.get("cost_per_kept_passage") or {}).get("completion_tokens", "")
    print(
        f"| {path.stem} | {report['queries']} | {d['adjacent']['rate']:.1%} ({pairs}) | {agree} "
        f"| {cost} |"
    )
print()
print("| model | SciFact dev nDCG@10 | delta (p) | ArguAna dev nDCG@10 | delta (p) |")
print("|---|---|---|---|---|")
base = {ds: load_metrics(root / "eval" / "base" / ds) for ds in ("scifact-dev", "arguana-dev")}
names = ["base"] + [p.replace(":", "-") for p in os.environ["MODELS"].split()]
for name in names:
    cells = []
    for ds in ("scifact-dev", "arguana-dev"):
        path = root / "eval" / name / ds / "metrics.json"
        if not path.is_file():
            cells += ["", ""]
            continue
        run = load_metrics(path)
        (c,) = compare_per_query(base[ds]["per_query"], run["per_query"], ["nDCG@10"])
        cells += [f"{run['metrics']['nDCG@10']:.4f}", "" if name == "base" else f"{c.delta:+.4f} ({c.p_value:.2g})"]
    print(f"| {name} | " + " | ".join(cells) + " |")
PY
fi
