"""Why cross-query negatives fail on SciFact (README, "Lists that teach"): how many of the
planned-xq level-1 passages (the passage of another query's list that BM25 ranks highest for a
claim) were written for a claim that cites the same SciFact abstract (SciFact train qrels).

    synthrank import results/lists-that-teach/planned-scifact-train.jsonl.gz \
        --out runs/gen/planned300
    python results/lists-that-teach/xq_siblings.py runs/gen/planned300

Measured on the 300 claims: 146 of 300 neighbours come from a claim citing the same abstract;
the neighbours' own grades: 228 level 3, 50 level 2, 15 level 1, 7 level 0.
"""

import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

from synthrank.data import read_qrels
from synthrank.train.data import SourceSpec, read_lists

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gen/planned300")
pool = read_lists([SourceSpec.parse(f"{folder},relabel=1:0,bm25=1:1")], random.Random(0))
ids = {}
for line in (folder / "corpus.jsonl").open():
    document = json.loads(line)
    ids[document["text"].strip()] = document["_id"]  # passage ids are QUERY-GRADE-INDEX
data = Path(os.environ.get("SYNTHRANK_DATA", "../shared/data"))
cited = read_qrels(data / "beir" / "scifact" / "qrels" / "train.tsv")
siblings = others = 0
grades: Counter = Counter()
for (query, _), entries in pool.items():
    for text, label in entries:
        passage = ids.get(text.strip())
        if label != 1 or passage is None or passage.split("-")[0] == query:
            continue
        source, grade = passage.split("-")[:2]
        grades[grade] += 1
        if set(cited.get(query, {})) & set(cited.get(source, {})):
            siblings += 1
        else:
            others += 1
print(f"{siblings} of {siblings + others} cross-query neighbours were written for a claim citing")
print(f"the same abstract; their own grades: {dict(sorted(grades.items(), reverse=True))}")
