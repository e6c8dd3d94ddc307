"""Training groups from BEIR folders: one query, G passages, G graded labels.

A source is a BEIR folder with judged queries (synthetic from the generate stage, or real), read
with per-source label transforms and optional negatives:

    beir:scifact,split=train,relabel=1:3,bm25=2:1,random=1:0

means: SciFact's train qrels, grade 1 relabelled 3, two BM25 hard negatives per query labelled 1
(judged documents excluded), one random document labelled 0. Sources whose queries share id and
text are merged into one list per query (the paper's "synthetic + real").

Negative grades (TREC qrels mark spam or harmful documents -1 or -2) that ``relabel`` leaves
alone are read as 0, as trec_eval gives them no gain in nDCG; labels given in a spec must be >= 0.

``teacher=FOLDER`` names teacher scores (``synthrank score``, :mod:`synthrank.train.teacher`) of
this dataset's lists: each query's list is then the pairs the teacher scored (its judged
passages, or BM25's top N of the corpus), graded by the qrels where judged (0 elsewhere), each
with the teacher's score for list-wise distillation (``TrainConfig.teacher_weight``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from synthrank.data import resolve_dataset
from synthrank.errors import SynthrankError
from synthrank.fileio import warn

GroupStrategy = Literal["one-per-level", "random"]
GROUP_STRATEGIES: tuple[str, ...] = ("one-per-level", "random")


def _label(text: str) -> int:
    """A label given in a source spec: a grade >= 0 (ValueError otherwise)."""
    label = int(text)
    if label < 0:
        raise ValueError(f"labels are grades >= 0, got {label}")
    return label


@dataclass(frozen=True)
class SourceSpec:
    dataset: str
    split: str = "train"
    relabel: dict[int, int] = field(default_factory=dict)
    bm25_negatives: int = 0
    bm25_label: int = 1
    random_negatives: int = 0
    random_label: int = 0
    teacher: str | None = None
    """A teacher-scores folder of this dataset's lists (see the module docstring)."""

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """Read ``DATASET[,split=S][,relabel=A:B[;C:D]][,bm25=N:LABEL][,random=N:LABEL]
        [,teacher=FOLDER]``."""
        dataset, *options = [part.strip() for part in text.split(",")]
        values: dict = {"dataset": dataset}
        for option in options:
            key, _, value = option.partition("=")
            try:
                if key == "split":
                    values["split"] = value
                elif key == "relabel":
                    pairs = (pair.split(":") for pair in value.split(";"))
                    values["relabel"] = {int(a): _label(b) for a, b in pairs}
                elif key in ("bm25", "random"):
                    count, _, label = value.partition(":")
                    values[f"{key}_negatives"] = int(count)
                    if label:
                        values[f"{key}_label"] = _label(label)
                elif key == "teacher":
                    if not value:
                        raise ValueError("teacher= needs the folder of synthrank score")
                    values["teacher"] = value
                else:
                    raise ValueError(f"unknown option {key!r}")
            except ValueError as exc:
                raise SynthrankError(
                    f"data source {text!r}: option {option!r} is invalid ({exc}); expected "
                    "split=NAME, relabel=FROM:TO[;FROM:TO], bm25=COUNT:LABEL, random=COUNT:LABEL, "
                    "teacher=FOLDER"
                ) from exc
        spec = cls(**values)
        if spec.teacher and (spec.bm25_negatives or spec.random_negatives):
            raise SynthrankError(
                f"data source {text!r}: with teacher= a list is the pairs the teacher scored; "
                "bm25= and random= would add passages it has no score for (score BM25 lists "
                "with synthrank score --bm25-top N instead)"
            )
        return spec


DataSources = str | Path | SourceSpec | Sequence[str | Path | SourceSpec]
"""Training data as a user names it: a source string as ``--data`` takes it
(``"runs/gen/scifact"``, ``"beir:scifact,split=train,bm25=2:1"``), a folder, a
:class:`SourceSpec`, or a list of these."""


def parse_sources(data: DataSources) -> list[SourceSpec]:
    """``data`` as a list of :class:`SourceSpec` (strings through :meth:`SourceSpec.parse`, a
    ``Path`` as the folder it names, split ``train``). :class:`SynthrankError` for a source
    string that does not parse."""
    specs = []
    for item in [data] if isinstance(data, str | Path | SourceSpec) else data:
        if isinstance(item, SourceSpec):
            specs.append(item)
        elif isinstance(item, Path):
            # A folder, whatever its name holds (a comma would start options in a string).
            specs.append(SourceSpec(str(item)))
        else:
            specs.append(SourceSpec.parse(item))
    return specs


@dataclass(frozen=True)
class TrainingGroup:
    query_id: str
    query: str
    passages: tuple[str, ...]
    labels: tuple[float, ...]
    """The passages' grades, or (teacher targets) the target's weights over them."""
    teacher_scores: tuple[float, ...] = ()
    """The teacher's score of each passage, when the sources have teacher scores."""


@dataclass
class AssemblyReport:
    """What became of every judged query: used in a group, or skipped and why.
    ``dropped_per_epoch``: groups that each epoch leaves out because they do not fill a last
    batch (set by the trainer, which knows the batch size). ``warnings``: what reading the
    sources found in their files (ids read without surrounding whitespace, judged ids missing
    from the corpus)."""

    queries: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    sources: list[str] = field(default_factory=list)
    dropped_per_epoch: int = 0
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.used} of {self.queries} queries form training groups"]
        out += [f"  skipped {count}: {reason}" for reason, count in self.skipped.most_common()]
        if self.dropped_per_epoch:
            out.append(
                f"  left out of each epoch {self.dropped_per_epoch}: the last, incomplete batch"
            )
        out += [f"  warning: {warning}" for warning in self.warnings]
        return out


def _bm25_negatives(
    doc_ids: list[str], texts: list[str], queries: list[str], exclude: list[set[str]], k: int
) -> list[list[str]]:
    from synthrank.data.bm25 import bm25_search

    hits, _ = bm25_search(texts, queries, k + max((len(e) for e in exclude), default=0))
    result = []
    for row, excluded in zip(hits, exclude, strict=True):
        chosen = [doc_ids[i] for i in row if doc_ids[i] not in excluded]
        result.append(chosen[:k])
    return result


Pool = dict[tuple[str, str], list[tuple[str, int]]]
"""(query id, query text) -> [(passage text, label)]."""
TeacherScores = dict[tuple[str, str], float]
"""(query id, passage text) -> the teacher's score of that pair."""


def _read_teacher_source(
    spec: SourceSpec, root: Path, split, pool: Pool, teacher: TeacherScores
) -> None:
    from synthrank.train.teacher import check_scored_content, read_scores

    assert spec.teacher is not None
    check_scored_content(Path(spec.teacher), root)
    scored: dict[str, list[tuple[str, float]]] = {}
    for (query_id, doc_id), score in read_scores(Path(spec.teacher)).items():
        if query_id in split.queries and doc_id in split.corpus:
            scored.setdefault(query_id, []).append((doc_id, score))
    if not scored:
        raise SynthrankError(
            f"data source {spec.dataset}: {spec.teacher} scores none of split {spec.split}'s "
            "queries; score this dataset's lists (synthrank score)"
        )
    for query_id in sorted(scored):
        query = split.queries[query_id].text
        entries = pool.setdefault((query_id, query), [])
        for doc_id, score in sorted(scored[query_id]):
            grade = split.qrels.get(query_id, {}).get(doc_id, 0)
            text = split.corpus[doc_id].full_text()
            entries.append((text, max(0, spec.relabel.get(grade, grade))))
            teacher[(query_id, text)] = score


def _read_source(
    spec: SourceSpec,
    rng: random.Random,
    pool: Pool,
    warnings: list[str] | None,
    teacher: TeacherScores,
) -> None:
    dataset = resolve_dataset(spec.dataset)
    split = dataset.load_split(spec.split)
    for warning in split.warnings:
        warn(warning, warnings)
    if spec.teacher:
        _read_teacher_source(spec, dataset.root, split, pool, teacher)
        return
    corpus_ids = list(split.corpus)
    query_ids = list(split.queries)
    judged = [{d for d in split.qrels[q] if d in split.corpus} for q in query_ids]
    bm25 = (
        _bm25_negatives(
            corpus_ids,
            [split.corpus[d].full_text() for d in corpus_ids],
            [split.queries[q].text for q in query_ids],
            judged,
            spec.bm25_negatives,
        )
        if spec.bm25_negatives
        else [[] for _ in query_ids]
    )
    for query_id, seen, hard in zip(query_ids, judged, bm25, strict=True):
        entries = pool.setdefault((query_id, split.queries[query_id].text), [])
        for doc_id in sorted(seen):
            grade = split.qrels[query_id][doc_id]
            label = spec.relabel.get(grade, grade)
            entries.append((split.corpus[doc_id].full_text(), max(0, label)))
        entries += [(split.corpus[d].full_text(), spec.bm25_label) for d in hard]
        taken = seen | set(hard)
        for _ in range(spec.random_negatives):
            for _attempt in range(20):
                doc_id = corpus_ids[rng.randrange(len(corpus_ids))]
                if doc_id not in taken:
                    taken.add(doc_id)
                    entries.append((split.corpus[doc_id].full_text(), spec.random_label))
                    break


def read_lists(
    sources: list[SourceSpec],
    rng: random.Random,
    *,
    warnings: list[str] | None = None,
    teacher: TeacherScores | None = None,
) -> Pool:
    """Every judged query's whole list, pooled over ``sources``: (query id, query text) ->
    [(passage text, label)], before groups are picked (what ``synthrank inspect`` measures).
    What reading a source's files found is appended to ``warnings``, or without it issued as
    :class:`~synthrank.fileio.SynthrankWarning`; the teacher scores of sources that have them
    go into ``teacher``."""
    pool: Pool = {}
    scores: TeacherScores = {} if teacher is None else teacher
    for spec in sources:
        _read_source(spec, rng, pool, warnings, scores)
    return pool


def _pick_teacher_group(
    entries: list[tuple[str, int]],
    size: int,
    scores: dict[str, float],
    rng: random.Random,
) -> tuple[list[tuple[str, int]] | None, str]:
    """The teacher's best passage, one passage of each other grade present (highest first),
    then passages at random; in the teacher's order."""
    unique = list(dict.fromkeys(entries))
    if len(unique) < size:
        return None, f"fewer than {size} passages"
    rng.shuffle(unique)
    best = max(unique, key=lambda e: scores[e[0]])
    chosen = [best]
    for level in sorted({label for _, label in unique}, reverse=True):
        if len(chosen) < size and level not in {label for _, label in chosen}:
            chosen.append(next(e for e in unique if e[1] == level))
    chosen += [e for e in unique if e not in chosen][: size - len(chosen)]
    return sorted(chosen, key=lambda e: -scores[e[0]]), ""


def _pick_masked_group(
    entries: list[tuple[str, int]], size: int, scores: dict[str, float], ratio: float
) -> tuple[list[tuple[str, int]] | None, str]:
    """The teacher's best passage as the positive (label 1), then the ``size - 1`` passages it
    scores highest below ``ratio`` x the positive's score as negatives (label 0): positive-aware
    hard negatives (NV-Retriever's TopK-PercPos, arXiv 2407.15831), the passages above the
    cut being likely false negatives. The cut is ``s - (1 - ratio) x |s|`` for the positive's
    score ``s``: ``ratio x s`` for a positive score, still below ``s`` for a negative one (a
    dot-product teacher's). Ties go by passage text, so the group does not depend on the order
    the lists were read in."""
    ranked = sorted(dict.fromkeys(text for text, _ in entries), key=lambda t: (-scores[t], t))
    if len(ranked) < size:
        return None, f"fewer than {size} passages"
    best = scores[ranked[0]]
    positive, cut = ranked[0], best - (1.0 - ratio) * abs(best)
    negatives = [text for text in ranked[1:] if scores[text] < cut][: size - 1]
    if len(negatives) < size - 1:
        return None, f"fewer than {size - 1} passages the teacher scores below {ratio:g} x its best"
    return [(positive, 1)] + [(text, 0) for text in negatives], ""


def _pick_group(
    entries: list[tuple[str, int]], size: int, strategy: GroupStrategy, rng: random.Random
) -> tuple[list[tuple[str, int]] | None, str]:
    unique = list(dict.fromkeys(entries))
    top = max(label for _, label in unique)
    if top <= 0:
        return None, "no passage above level 0"
    if len(unique) < size:
        return None, f"fewer than {size} passages"
    rng.shuffle(unique)
    if strategy == "one-per-level":
        chosen = []
        for level in sorted({label for _, label in unique}, reverse=True):
            chosen.append(next(e for e in unique if e[1] == level))
        chosen = chosen[:size]
    else:
        chosen = [next(e for e in unique if e[1] == top)]
    rest = [e for e in unique if e not in chosen]
    chosen += rest[: size - len(chosen)]
    return sorted(chosen, key=lambda e: -e[1]), ""


def _pick_binary_group(
    entries: list[tuple[str, int]], size: int, threshold: int, rng: random.Random
) -> tuple[list[tuple[str, int]] | None, str]:
    unique = list(dict.fromkeys(entries))
    positives = [text for text, label in unique if label >= threshold]
    negatives = [text for text, label in unique if label < threshold]
    if not positives:
        return None, f"no passage at level >= {threshold}"
    if len(negatives) < size - 1:
        return None, f"fewer than {size - 1} passages below level {threshold}"
    return [(rng.choice(positives), 1)] + [(t, 0) for t in rng.sample(negatives, size - 1)], ""


def assemble_groups(
    sources: list[SourceSpec],
    group_size: int = 4,
    *,
    strategy: GroupStrategy = "one-per-level",
    binary_threshold: int | None = None,
    teacher_mask: float | None = None,
    seed: int = 0,
) -> tuple[list[TrainingGroup], AssemblyReport]:
    """One group of ``group_size`` passages per query, pooled over ``sources``.

    ``one-per-level`` takes one passage of each level present, highest first, then fills the
    group at random; ``random`` takes one top-level passage and fills at random. With
    ``binary_threshold`` (the InfoNCE baseline's binary view), labels become 1 at or above it and
    0 below, and a group is one positive and ``group_size - 1`` negatives. A group of 1 is the
    query's top passage alone: (query, positive) pairs, whose only negatives are the other
    queries' passages in the batch (in-batch negatives). With ``teacher_mask`` (sources with
    teacher scores; InfoNCE with the teacher's false negatives masked), a group is the
    teacher's best passage and the passages it scores below ``teacher_mask`` x that one's score,
    hardest first (:func:`_pick_masked_group`); the grades are not read.
    """
    if group_size < 1:
        raise SynthrankError(f"group size must be at least 1 (got {group_size})")
    if strategy not in GROUP_STRATEGIES:
        raise SynthrankError(f"unknown group strategy {strategy!r}; one of {GROUP_STRATEGIES}")
    rng = random.Random(seed)
    warnings: list[str] = []
    teacher: TeacherScores = {}
    pool = read_lists(sources, rng, warnings=warnings, teacher=teacher)
    with_teacher = [bool(s.teacher) for s in sources]
    if any(with_teacher) and not all(with_teacher):
        raise SynthrankError(
            "every data source needs teacher= when one has it: a target mixing teacher scores "
            "needs a score for every passage"
        )
    if teacher_mask is not None and not all(with_teacher):
        raise SynthrankError("teacher_mask needs teacher scores: give every source teacher=")
    report = AssemblyReport(
        queries=len(pool), sources=[s.dataset for s in sources], warnings=warnings
    )
    groups = []
    for (query_id, query), entries in pool.items():
        own = {text: teacher[(query_id, text)] for text, _ in entries} if teacher else {}
        if teacher and teacher_mask is not None:
            chosen, reason = _pick_masked_group(entries, group_size, own, teacher_mask)
        elif teacher:
            chosen, reason = _pick_teacher_group(entries, group_size, own, rng)
        elif binary_threshold is None:
            chosen, reason = _pick_group(entries, group_size, strategy, rng)
        else:
            chosen, reason = _pick_binary_group(entries, group_size, binary_threshold, rng)
        if chosen is None:
            report.skipped[reason] += 1
            continue
        report.used += 1
        groups.append(
            TrainingGroup(
                query_id,
                query,
                tuple(t for t, _ in chosen),
                tuple(label for _, label in chosen),
                tuple(own[t] for t, _ in chosen) if teacher else (),
            )
        )
    if not groups:
        raise SynthrankError(
            "no training groups: "
            + "; ".join(line.strip() for line in report.lines()[1:])
            + f" (group size {group_size})"
        )
    return groups, report
