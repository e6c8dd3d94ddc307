#!/usr/bin/env bash
# Teacher scores (EmbeddingGemma-300M, max length 256) on the lists the student trains on:
# the published synthetic lists of all 809 SciFact train claims (results/scifact-v2), and each
# SciFact train claim's top 8 BM25 abstracts outside SciFact dev (the 609 claims left after
# `synthrank holdout`); then the teacher as judge of the synthetic levels, calibrated first on
# real SciFact dev pairs (each dev claim's judged abstract against its top 2 BM25 abstracts).
# Run from the project root after `make test` and `synthrank install embeddinggemma`; every step
# resumes (embeddings are cached per text, so a passage is encoded once for all steps).
set -euo pipefail
S=${S:-.venv/bin/synthrank}
OUT=results/teacher
[ -f runs/data/scifact-dev/qrels/dev.tsv ] ||
    "$S" holdout beir:scifact --split train -n 200 --seed 0 --out runs/data/scifact-dev
[ -f runs/gen/v2/meta.json ] ||
    "$S" import results/scifact-v2/lists.jsonl.gz --out runs/gen/v2
[ -f "$OUT/scores-synthetic/meta.json" ] ||
    "$S" score --dataset runs/gen/v2 --split train --out "$OUT/scores-synthetic" --quiet
[ -f "$OUT/scores-bm25/meta.json" ] ||
    "$S" score --dataset runs/data/scifact-dev --split train --bm25-top 8 \
        --out "$OUT/scores-bm25" --quiet
[ -f "$OUT/judge/real-dev.json" ] || {
    mkdir -p "$OUT/judge"
    "$S" inspect "runs/data/scifact-dev,split=dev,relabel=1:3,bm25=2:1" --split dev \
        --judge-encoder embeddinggemma --no-encoder --json --quiet > "$OUT/judge/real-dev.json.part"
    mv "$OUT/judge/real-dev.json.part" "$OUT/judge/real-dev.json"
}
# The synthetic levels judged by the teacher: the encoder judge's rule on the scores above (an
# inspect with --judge-encoder would encode every passage again at the model's own max length).
.venv/bin/python results/teacher/judge_agreement.py > "$OUT/judge/synthetic.txt"
# Hard negatives mined by the teacher from the synthetic corpus: each of the 609 claims' own
# passages plus the teacher's 8 best passages written for the other 608 claims (passages of
# SciFact dev claims left out of the corpus too), all scored; no real text or label involved.
if [ ! -f runs/gen/v2-609-own/qrels/train.tsv ]; then
    mkdir -p runs/gen/v2-609-own/qrels
    .venv/bin/python - <<'PY'
import csv, json
keep = {r["query-id"] for r in csv.DictReader(open("runs/data/scifact-dev/qrels/train.tsv"), delimiter="\t")}
rows = [r for r in csv.DictReader(open("runs/gen/v2/qrels/train.tsv"), delimiter="\t") if r["query-id"] in keep]
docs = {r["corpus-id"] for r in rows}
out = "runs/gen/v2-609-own"
with open(f"{out}/corpus.jsonl", "w") as handle:
    handle.writelines(line for line in open("runs/gen/v2/corpus.jsonl") if json.loads(line)["_id"] in docs)
with open(f"{out}/queries.jsonl", "w") as handle:
    handle.writelines(line for line in open("runs/gen/v2/queries.jsonl") if json.loads(line)["_id"] in keep)
with open(f"{out}/qrels/train.tsv", "w") as handle:
    handle.write("query-id\tcorpus-id\tscore\n")
    handle.writelines(f"{r['query-id']}\t{r['corpus-id']}\t{r['score']}\n" for r in rows)
PY
fi
[ -f "$OUT/scores-mined/meta.json" ] || [ -f "$OUT/scores-mined/scores.jsonl.gz" ] ||
    "$S" score --dataset runs/gen/v2-609-own --split train --teacher-top 8 \
        --out "$OUT/scores-mined" --quiet
