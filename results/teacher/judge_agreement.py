"""The teacher as judge of the synthetic levels: the encoder judge's rule of `synthrank judge`
(synthrank.generate.judge.agreeing_chain: within a query, the largest set of passages whose
teacher scores fall as the intended grade falls agrees, the rest disagree) applied to the
published teacher scores, per level, for the 809 claims and for the 609 outside SciFact dev.
Run from the project root: .venv/bin/python results/teacher/judge_agreement.py
With ``--qrels FILE`` it writes instead the qrels of the 609 claims' passages the teacher agrees
with (their intended grades; the training lists of the filtered row of train.sh)."""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from synthrank.generate.judge import agreeing_chain

SCORES = Path("results/teacher/scores-synthetic")


def rows():
    path = SCORES / "scores.jsonl"
    opener = open if path.is_file() else gzip.open
    with opener(path if path.is_file() else SCORES / "scores.jsonl.gz", "rt") as handle:
        yield from (json.loads(line) for line in handle)


def judged(keep: set[str] | None):
    """(query id, passage id, intended grade, whether the teacher agrees) of every scored pair."""
    lists = defaultdict(list)
    for row in rows():
        if keep is None or row["query_id"] in keep:
            lists[row["query_id"]].append((row["doc_id"], row["grade"], row["score"]))
    for query_id, items in lists.items():
        chain = agreeing_chain([g for _, g, _ in items], [s for _, _, s in items])
        for i, (doc_id, grade, _) in enumerate(items):
            yield query_id, doc_id, grade, i in chain


def agreement(keep: set[str] | None) -> dict[int, tuple[int, int]]:
    agree, total = Counter(), Counter()
    for _, _, grade, agrees in judged(keep):
        total[grade] += 1
        agree[grade] += agrees
    return {g: (agree[g], total[g]) for g in sorted(total, reverse=True)}


def main() -> None:
    train = Path("runs/data/scifact-dev/qrels/train.tsv")
    keep = (
        {r["query-id"] for r in csv.DictReader(train.open(), delimiter="\t")}
        if train.is_file()
        else None
    )
    if sys.argv[1:2] == ["--qrels"]:
        with open(sys.argv[2], "w", encoding="utf-8") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            out.writelines(f"{q}\t{d}\t{g}\n" for q, d, g, agrees in judged(keep) if agrees)
        return
    for name, subset in (("all 809 claims", None), ("609 claims outside SciFact dev", keep)):
        if name.startswith("609") and subset is None:
            continue
        result = agreement(subset)
        n = sum(t for _, t in result.values())
        a = sum(x for x, _ in result.values())
        levels = ", ".join(f"{g}: {x / t:.1%}" for g, (x, t) in result.items())
        print(f"{name}: {a / n:.1%} of {n} passages agree ({levels})")


if __name__ == "__main__":
    main()
