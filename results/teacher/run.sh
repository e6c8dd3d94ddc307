#!/usr/bin/env bash
# The teacher (EmbeddingGemma-300M) and the base student (all-MiniLM-L6-v2) on the dev sets the
# teacher experiments choose settings on: SciFact dev (200 of SciFact's train claims, drawn with
# seed 0), NFCorpus dev (its official dev qrels) and ArguAna dev (half of its test queries).
# Run from the project root after `make test` (or `make demo`) and `synthrank install
# embeddinggemma`; it resumes (finished evaluations are skipped; embeddings are cached per text).
set -euo pipefail
S=${S:-.venv/bin/synthrank}
OUT=results/teacher
[ -f runs/data/scifact-dev/qrels/dev.tsv ] ||
    "$S" holdout beir:scifact --split train -n 200 --seed 0 --out runs/data/scifact-dev
for model in minilm embeddinggemma; do
    for target in "runs/data/scifact-dev dev scifact-dev" "beir:nfcorpus dev nfcorpus-dev" \
        "beir:arguana dev arguana-dev"; do
        read -r dataset split name <<<"$target"
        folder="$OUT/$model/$name"
        [ -f "$folder/metrics.json" ] && continue
        "$S" evaluate --model "$model" --dataset "$dataset" --split "$split" --max-length 256 \
            --out "$folder"
        rm -f "$folder/run.trec"   # rankings stay local: metrics.json has the per-query values
    done
done
