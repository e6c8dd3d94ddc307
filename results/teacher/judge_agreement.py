"""The teacher as judge of the synthetic levels: the encoder judge's rule of `synthrank judge`
(synthrank.generate.judge.agreeing_chain: within a query, the largest set of passages whose
teacher scores fall as the intended grade falls agrees, the rest disagree) applied to the
published teacher scores, per level, for the 809 claims and for the 609 outside SciFact dev.
Run from the project root: .venv/bin/python results/teacher/judge_agreement.py"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

from synthrank.generate.judge import agreeing_chain

SCORES = Path("results/teacher/scores-synthetic")


def rows():
    path = SCORES / "scores.jsonl"
    opener = open if path.is_file() else gzip.open
    with opener(path if path.is_file() else SCORES / "scores.jsonl.gz", "rt") as handle:
        yield from (json.loads(line) for line in handle)


def agreement(keep: set[str] | None) -> dict[int, tuple[int, int]]:
    lists = defaultdict(list)
    for row in rows():
        if keep is None or row["query_id"] in keep:
            lists[row["query_id"]].append((row["grade"], row["score"]))
    agree, total = Counter(), Counter()
    for items in lists.values():
        grades = [g for g, _ in items]
        chain = agreeing_chain(grades, [s for _, s in items])
        for i, grade in enumerate(grades):
            total[grade] += 1
            agree[grade] += i in chain
    return {g: (agree[g], total[g]) for g in sorted(total, reverse=True)}


def main() -> None:
    train = Path("runs/data/scifact-dev/qrels/train.tsv")
    keep = (
        {r["query-id"] for r in csv.DictReader(train.open(), delimiter="\t")}
        if train.is_file()
        else None
    )
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
