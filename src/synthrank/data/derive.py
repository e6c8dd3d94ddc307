"""Datasets derived from another one (a corpus sample, a held-out dev split), which keep the
scoring profile of their source.

A derived BEIR folder carries ``synthrank-dataset.json`` naming the dataset it came from
(``{"source": "beir:arguana"}``): the evaluation reads its profile (own-id rule, relevance
level) through that name, so a sample of ArguAna is scored as ArguAna is, whatever the folder is
called.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

from synthrank.data.beir import BeirDataset, Qrels, write_corpus, write_qrels, write_queries
from synthrank.errors import SynthrankError
from synthrank.fileio import read_text, require_writable_dir, write_json_atomic

SOURCE_FILE = "synthrank-dataset.json"


def dataset_source(dataset: BeirDataset) -> str:
    """The name a dataset's scoring profile is looked up by: the ``source`` recorded in a
    derived folder (followed through chains of derivations), else the dataset's own name."""
    marker = dataset.root / SOURCE_FILE
    if not marker.is_file():
        return dataset.name
    try:
        source = json.loads(read_text(marker))["source"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SynthrankError(f'{marker}: expected a JSON object with a "source" ({exc})') from exc
    return str(source)


def mark_derived(out: Path, source: BeirDataset, **details: object) -> None:
    """Record in ``out`` that it was derived from ``source`` (and how, in ``details``)."""
    write_json_atomic(out / SOURCE_FILE, {"source": dataset_source(source), **details})


def corpus_sample_ids(
    corpus_ids: Iterable[str], qrels: Qrels, others: int, seed: int = 0
) -> set[str]:
    """The documents of a corpus sample: every id of ``corpus_ids`` that ``qrels`` judges, plus
    ``others`` of the rest (all of them when fewer) drawn at random with ``seed`` from the sorted
    ids, so the draw does not depend on file order. Scores on a sample are higher than on the
    whole corpus: compare models on the same sample only."""
    corpus_ids = set(corpus_ids)
    judged = {d for judged in qrels.values() for d in judged if d in corpus_ids}
    rest = sorted(corpus_ids - judged)
    return judged | set(random.Random(seed).sample(rest, min(others, len(rest))))


def holdout_ids(query_ids: list[str], n: int, seed: int = 0) -> set[str]:
    """``n`` of ``query_ids`` drawn at random with ``seed`` (from the sorted ids, so the draw does
    not depend on file order); ValueError when there are not more than ``n`` ids."""
    if not 0 < n < len(query_ids):
        raise ValueError(f"cannot hold out {n} of {len(query_ids)} queries")
    return set(random.Random(seed).sample(sorted(query_ids), n))


def split_holdout(
    source: BeirDataset, split: str, n: int, out: Path, *, seed: int = 0, name: str = "dev"
) -> dict[str, int]:
    """A copy of ``source`` whose ``split`` judgments are divided: ``n`` queries drawn with
    ``seed`` go to ``qrels/<name>.tsv``, the others stay in ``qrels/<split>.tsv``. Used to tune on
    a dev split carved from training data (for SciFact: 200 of the 809 train queries, seed 0), so
    that the test set is read only once per finished setting."""
    qrels = source.qrels(split)
    try:
        held = holdout_ids(list(qrels), n, seed)
    except ValueError as exc:
        raise SynthrankError(f"{source.name}, split {split}: {exc}") from exc
    require_writable_dir(out)
    write_corpus(out / "corpus.jsonl", source.corpus().values())
    write_queries(out / "queries.jsonl", source.queries().values())
    write_qrels(out / "qrels" / f"{split}.tsv", {q: j for q, j in qrels.items() if q not in held})
    write_qrels(out / "qrels" / f"{name}.tsv", {q: j for q, j in qrels.items() if q in held})
    mark_derived(out, source, split=split, holdout=n, seed=seed, holdout_split=name)
    return {split: len(qrels) - n, name: n}
