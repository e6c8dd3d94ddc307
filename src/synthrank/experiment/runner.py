"""Run an experiment: generate -> (judge) -> split -> evaluate the base model and score the
held-out synthetic lists -> for each run: train, evaluate, score held-out lists -> report. Queries
for documents (doc2query) and LLM-graded real lists (graded), where the config has them, run
right before the first training that reads them.

Each stage writes into a folder named by its name and a hash of the settings it depends on
(``train/ws2-3f9a...``), and marks it complete with ``stage.json`` when done. A stage whose
folder is complete is skipped; an interrupted one resumes (generation continues its journal,
training its last checkpoint); a changed config gets a new folder, so no result is overwritten.
``stage.json`` also records the content of the files the stage read (datasets, query files,
models given by path; :mod:`synthrank.experiment.identity`) and of the stages it needs: a
finished stage whose inputs changed since (data fixed in place, a relative path that now names
other data) is run again, its earlier folder moved to ``.changed/`` in the run folder.
``experiment.json`` in the run folder lists the stages of the current config for the report.
A finished stage whose outputs are gone (a run folder copied without its model weights and data
copies) still counts as done; it is rebuilt only when a stage still to run needs those outputs
(:func:`stages_to_rebuild`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthrank.data import BeirDataset, Document, Query, write_corpus, write_qrels, write_queries
from synthrank.data.derive import corpus_sample_ids, mark_derived
from synthrank.data.resolve import resolve_dataset
from synthrank.errors import SynthrankError
from synthrank.experiment import identity
from synthrank.experiment.config import (
    DOC2QUERY,
    GRADED,
    STAGE_DATA,
    SYNTHETIC,
    Experiment,
    TrainRun,
    data_name,
    digest,
    plain,
)
from synthrank.fileio import FolderLock, group_name, slug, write_json_atomic
from synthrank.fingerprint import fingerprints
from synthrank.generate.prompts import stable_hash
from synthrank.llm.store import JOURNAL, read_journal

STAGE_FILE = "stage.json"
ATTEMPTS_FILE = "attempts.json"
"""The time of a stage's unfinished attempts, added to ``stage.json``'s seconds when it ends."""
MODEL_WEIGHTS = "model.safetensors"
REBUILD_DIR = ".rebuild"
RECORD_BYTES = 1 << 20
"""Files up to this size in a rebuilt stage's folder are its record, put back after the rebuild."""
DATA_OUTPUTS = ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv")
"""What training reads from a data stage's folder (a corpus may be a link to the dataset's)."""
PLAN_FILE = "experiment.json"
CHANGED_DIR = ".changed"
"""Where a finished stage's folder goes when its inputs changed and it runs again."""


@dataclass(eq=False)
class Stage:
    """One step of a run; stages compare by identity."""

    kind: str
    name: str
    folder: Path
    action: Callable[[], None]
    inputs: dict[str, Any]
    model: str | None = None
    dataset: str | None = None
    outputs: tuple[str, ...] = ()
    """Files of the folder that later stages read (a model's weights, a data folder's corpus):
    a finished folder copied without them (another machine, a published run) still counts as
    done, and is rebuilt only when a stage still to run needs them."""
    needs: tuple[Stage, ...] = ()
    """The earlier stages whose outputs this one reads."""
    reads: Callable[[], dict[str, Path]] = dict
    """The files from outside the run folder it reads, by label (:mod:`.identity`)."""

    @property
    def complete(self) -> bool:
        return (self.folder / STAGE_FILE).is_file()

    @property
    def key(self) -> str:
        """The stage's folder as ``kind-folder/name``: how ``stage.json`` names its needs."""
        return f"{self.folder.parent.name}/{self.folder.name}"

    def record(self) -> dict[str, Any]:
        """Its ``stage.json`` (empty when there is none or it cannot be read)."""
        try:
            found = json.loads((self.folder / STAGE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def content(self) -> dict[str, Any]:
        """What ``stage.json`` records of its inputs' content now: ``reads`` (each file's path
        and SHA-256), ``needs`` (each needed stage's recorded content digest) and ``content``,
        the digest of both (:func:`.identity.content_id`)."""
        reads = fingerprints(self.reads())
        needs = {n.key: n.record().get("content", "") for n in self.needs}
        return {"reads": reads, "needs": needs, "content": identity.content_id(reads, needs)}

    def missing_outputs(self) -> list[str]:
        return [name for name in self.outputs if not (self.folder / name).is_file()]

    def state(self, changed: dict[Stage, str] | None = None) -> str:
        if changed and self in changed:
            return "changed"
        if self.complete:
            return "done"
        return "resume" if self.folder.exists() and any(self.folder.iterdir()) else "to do"


def split_heldout(source: Path, out: Path, share: float, seed: int = 0) -> dict[str, int]:
    """A BEIR folder of the generated lists with ``qrels/train.tsv`` and ``qrels/heldout.tsv``:
    a deterministic ``share`` of the queries (at least one when share > 0 and there are two or
    more) is held out of training."""
    records = read_journal(source)
    if not records:
        raise SynthrankError(f"{source}: no generated queries to train on")
    ranked = sorted(records, key=lambda r: stable_hash(seed, r.query_id))
    n_heldout = 0 if share == 0 or len(records) < 2 else max(1, math.floor(share * len(records)))
    heldout = {r.query_id for r in ranked[:n_heldout]}
    out.mkdir(parents=True, exist_ok=True)
    write_corpus(
        out / "corpus.jsonl", (Document(p.id, p.text) for r in records for p in r.passages)
    )
    write_queries(out / "queries.jsonl", (Query(r.query_id, r.query) for r in records))
    for split, keep in (("train", False), ("heldout", True)):
        qrels = {
            r.query_id: {p.id: p.grade for p in r.passages}
            for r in records
            if (r.query_id in heldout) == keep and r.passages
        }
        write_qrels(out / "qrels" / f"{split}.tsv", qrels)
    return {"train": len(records) - n_heldout, "heldout": n_heldout}


def sample_corpus(dataset: str, split: str, out: Path, others: int, seed: int = 0) -> dict:
    """A copy of ``dataset`` with every document judged in ``split`` plus ``others`` random
    documents: evaluation on a smaller corpus (scores are higher than on the full corpus). The
    copy keeps the dataset's scoring profile (own-id rule, relevance level). What reading the
    dataset found (ids read without surrounding whitespace, judged ids missing from the corpus)
    is issued as :class:`~synthrank.fileio.SynthrankWarning` and returned in ``warnings``."""
    from synthrank.fileio import warn

    source = resolve_dataset(dataset)
    data = source.load_split(split)
    for warning in data.warnings:
        warn(warning, None)
    kept = corpus_sample_ids(data.corpus, data.qrels, others, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_corpus(out / "corpus.jsonl", (doc for d, doc in data.corpus.items() if d in kept))
    write_queries(out / "queries.jsonl", data.queries.values())
    write_qrels(out / "qrels" / f"{split}.tsv", data.qrels)
    mark_derived(out, source, split=split, corpus_sample=others, seed=seed)
    return {
        "documents": len(kept),
        "of": len(data.corpus),
        "judged": len({d for judged in data.qrels.values() for d in judged if d in kept}),
        "warnings": data.warnings,
    }


def heldout_scores(model_spec: str, data: Path, max_length: int | None) -> dict[str, list[float]]:
    """The model's query-passage score for every held-out synthetic pair, grouped by grade."""
    from synthrank.evaluate.encode import grouped_scores
    from synthrank.evaluate.models import load_model

    dataset = BeirDataset(data, str(data))
    qrels = dataset.qrels("heldout")
    if not qrels:
        return {}
    queries, corpus = dataset.queries(), dataset.corpus()
    model = load_model(model_spec, max_length=max_length)
    judged = [list(qrels[q].items()) for q in qrels]
    values = grouped_scores(
        model,
        [queries[q].text for q in qrels],
        [[corpus[d].full_text() for d, _ in pairs] for pairs in judged],
        cosine=(model.similarity_fn_name or "cosine") == "cosine",
        progress=False,
    )
    scores: dict[str, list[float]] = {}
    for pairs, row in zip(judged, values, strict=True):
        for (_, grade), value in zip(pairs, row, strict=True):
            scores.setdefault(str(grade), []).append(value)
    return dict(sorted(scores.items(), reverse=True))


def plan_stages(experiment: Experiment, root: Path, *, progress: bool = True) -> list[Stage]:
    """The stages of ``experiment`` under ``root`` (``runs/<name>``), in order."""
    from synthrank.evaluate import evaluate
    from synthrank.generate import GenerateJob, generate
    from synthrank.generate.judge import judge_dataset
    from synthrank.llm.jobs import parse_shard
    from synthrank.train import train
    from synthrank.train.trainer import checkpoint_folders

    stages: list[Stage] = []
    data_stages: dict[str, Stage] = {}
    """Each stage data name (config.STAGE_DATA) -> the stage that makes it."""
    split_stage: Stage | None = None
    folders: dict[str, Path] = {}
    """Each stage data name (config.STAGE_DATA) -> the folder runs train on."""
    folder_inputs: dict[str, Any] = {}
    q = experiment.queries
    split_dir = split_inputs = None
    if q is not None:
        gen_inputs = {
            # Lists reused from a published file are the lists this job would make (same model
            # and settings, checked): the folder does not depend on where they came from.
            "queries": {k: v for k, v in plain(q).items() if k != "reuse"},
            "generation": experiment.generation,
            "model": experiment.backend.model,
        }
        gen_dir = root / "generate" / f"synthetic-{digest(gen_inputs)}"

        def run_generate() -> None:
            from synthrank.report.build import write_examples

            job = GenerateJob(
                q.source,
                gen_dir,
                split=q.split,
                limit=q.limit,
                shard=parse_shard(q.shard) if q.shard else None,
                config=experiment.generation,
                backend=experiment.backend,
                reuse=tuple(Path(path) for path in q.reuse),
                # A finished stage rebuilt for its journal: the lists its records describe,
                # from the reuse files; new LLM calls would write others.
                reuse_only=(gen_dir / STAGE_FILE).is_file(),
            )
            result = generate(job, progress=progress)
            _check_finished(result, "queries")
            write_examples(gen_dir)

        stages.append(
            Stage(
                "generate",
                "synthetic",
                gen_dir,
                run_generate,
                gen_inputs,
                outputs=(JOURNAL,),
                reads=lambda: {
                    **identity.query_source_reads(q.source, q.split),
                    **identity.model_reads(experiment.backend.model, label="generator"),
                },
            )
        )
        data_source, data_inputs = gen_dir, gen_inputs
        if experiment.judge is not None:
            judge_inputs = {"data": data_inputs, "judge": experiment.judge}
            judged_dir = root / "judge" / f"judged-{digest(judge_inputs)}"

            def run_judge(source: Path = data_source, out: Path = judged_dir) -> None:
                shutil.rmtree(out, ignore_errors=True)
                judge_dataset(source, out, experiment.judge, progress=progress)

            stages.append(
                Stage(
                    "judge",
                    "judged",
                    judged_dir,
                    run_judge,
                    judge_inputs,
                    outputs=(JOURNAL,),
                    needs=(stages[-1],),
                    reads=lambda: identity.model_reads(experiment.judge.encoder, label="judge"),
                )
            )
            data_source, data_inputs = judged_dir, judge_inputs
        split_inputs = {"data": data_inputs, "heldout": q.heldout}
        split_dir = root / "data" / f"split-{digest(split_inputs)}"
        stages.append(
            Stage(
                "split",
                "train/heldout",
                split_dir,
                lambda source=data_source: split_heldout(source, split_dir, q.heldout),
                split_inputs,
                outputs=(*DATA_OUTPUTS, "qrels/heldout.tsv"),
                needs=(stages[-1],),
            )
        )
        split_stage = data_stages[SYNTHETIC] = stages[-1]
        folders[SYNTHETIC], folder_inputs[SYNTHETIC] = split_dir, split_inputs
        stages.append(_difficulty_stage(experiment, root, split_dir, split_inputs, progress))
        stages[-1].needs = (split_stage,)
    if experiment.doc2query is not None:
        stages.append(_doc2query_stage(experiment, root, progress))
        data_stages[DOC2QUERY] = stages[-1]
        folders[DOC2QUERY], folder_inputs[DOC2QUERY] = stages[-1].folder, stages[-1].inputs
    if experiment.graded is not None:
        stages.append(_graded_stage(experiment, root, progress))
        data_stages[GRADED] = stages[-1]
        folders[GRADED], folder_inputs[GRADED] = stages[-1].folder, stages[-1].inputs
    ev = experiment.evaluation
    targets: list[tuple[str, str | Path, str, tuple[Stage, ...]]] = []
    for dataset in ev.datasets:
        if ev.corpus_sample is None:
            targets.append((dataset, dataset, dataset, ()))
            continue
        sample_inputs = {
            "dataset": dataset,
            "split": ev.split_of(dataset),
            "sample": ev.corpus_sample,
        }
        sample_dir = root / "eval-data" / f"{slug(dataset)}-{digest(sample_inputs, ev.seed)}"
        stages.append(
            Stage(
                "sample",
                dataset,
                sample_dir,
                lambda d=dataset, s=sample_dir: sample_corpus(
                    d, ev.split_of(d), s, ev.corpus_sample, ev.seed
                ),
                sample_inputs,
                outputs=("corpus.jsonl", "queries.jsonl"),
                reads=lambda d=dataset: identity.dataset_reads(d, ev.split_of(d)),
            )
        )
        targets.append((dataset, sample_dir, f"{dataset} (corpus sample)", (stages[-1],)))

    def model_stages(
        model_name: str, model_spec: str, model_inputs: Any, trained: tuple[Stage, ...] = ()
    ) -> list[Stage]:
        """Each model's evaluations and held-out scores, right after the model exists: the
        first results come early, and an interrupted run has whole models done."""
        found = []
        # A trained model is a stage's output (its content is that stage's); the base model
        # may be a folder read from outside.
        model_read = {} if trained else identity.model_reads(model_spec)
        for dataset, target, eval_name, sampled in targets:
            inputs = {"model": model_inputs, "dataset": dataset, "evaluate": ev}
            folder = root / "eval" / slug(dataset) / f"{slug(model_name)}-{digest(inputs)}"

            def run_eval(
                spec=model_spec, name=model_name, target=target, folder=folder, dataset=dataset
            ) -> None:
                evaluate(
                    spec,
                    target,
                    ev.split_of(dataset),
                    max_length=ev.max_length,
                    batch_size=ev.batch_size,
                    progress=progress,
                    name=name,
                    runtime=ev.runtime,
                    devices=ev.devices,
                    output=folder,
                )

            found.append(
                Stage(
                    "evaluate",
                    f"{model_name} on {eval_name}",
                    folder,
                    run_eval,
                    inputs,
                    model=model_name,
                    dataset=eval_name,
                    needs=trained + sampled,
                    reads=lambda d=dataset, sampled=sampled: {
                        **model_read,
                        **({} if sampled else identity.dataset_reads(d, ev.split_of(d))),
                    },
                )
            )
        if q is not None and q.heldout > 0:
            inputs = {"model": model_inputs, "data": split_inputs, "max_length": ev.max_length}
            folder = root / "heldout" / f"{slug(model_name)}-{digest(inputs)}"

            def run_heldout(spec=model_spec, folder=folder) -> None:
                scores = heldout_scores(spec, split_dir, ev.max_length)
                write_json_atomic(folder / "scores.json", scores)

            needs = trained + ((split_stage,) if split_stage else ())
            found.append(
                Stage(
                    "heldout",
                    model_name,
                    folder,
                    run_heldout,
                    inputs,
                    model=model_name,
                    needs=needs,
                    reads=lambda: model_read,
                )
            )
        return found

    stages += model_stages("base", experiment.base_model, experiment.base_model)
    for run in seed_major(experiment.runs):
        run_inputs = {"run": run, "base": experiment.base_model}
        for name in run.stage_data():
            run_inputs["data" if name == SYNTHETIC else name] = folder_inputs[name]
        folder = root / "train" / f"{slug(run.name)}-{digest(run_inputs)}"
        config = run.config(folder, experiment.base_model, folders)

        def run_train(config=config) -> None:
            resume = bool(checkpoint_folders(config.out / "checkpoints"))
            train(config, resume=resume, progress=progress)

        stages.append(
            Stage(
                "train",
                run.name,
                folder,
                run_train,
                run_inputs,
                model=run.name,
                outputs=(MODEL_WEIGHTS,),
                needs=tuple(data_stages[name] for name in run.stage_data()),
                reads=lambda run=run: _train_reads(run, experiment.base_model),
            )
        )
        stages += model_stages(run.name, str(folder), run_inputs, (stages[-1],))
    # Queries for documents and graded lists (hours of LLM calls) run right before the first
    # training that reads them: the base model and the other models' results come first.
    for name in (DOC2QUERY, GRADED):
        if name in data_stages:
            stage = data_stages[name]
            stages.remove(stage)
            first = next((i for i, s in enumerate(stages) if stage in s.needs), len(stages))
            stages.insert(first, stage)
    return stages


def seed_major(runs: Sequence[TrainRun]) -> list[TrainRun]:
    """``runs`` with every [[train]] table's first seed first, then the second seeds, ...: an
    interrupted run has one seed of every model before any model has two."""
    seen: dict[str, int] = {}
    ranked = []
    for i, run in enumerate(runs):
        table = group_name(run.name)
        ranked.append((seen.get(table, 0), i, run))
        seen[table] = seen.get(table, 0) + 1
    return [run for _, _, run in sorted(ranked, key=lambda x: x[:2])]


def _difficulty_stage(
    experiment: Experiment, root: Path, data: Path, data_inputs: Any, progress: bool
) -> Stage:
    """How hard the synthetic training lists are for the untrained student (issue 14's
    measure, :func:`~synthrank.generate.inspect.misorder_rates`): levels the base model already
    orders hold little to learn."""
    from synthrank.generate import inspect_dataset

    inputs = {"data": data_inputs, "student": experiment.base_model}
    folder = root / "inspect" / f"lists-{digest(inputs)}"

    def run() -> None:
        report = inspect_dataset(
            data, split="train", encoder=experiment.base_model, progress=progress
        )
        write_json_atomic(folder / "inspect.json", report)

    return Stage(
        "inspect",
        "training lists under the base model",
        folder,
        run,
        inputs,
        reads=lambda: identity.model_reads(experiment.base_model),
    )


def _train_reads(run: TrainRun, base_model: str) -> dict[str, Path]:
    """What a training reads from outside the run: the base model when given by path, and each
    data source that is a dataset rather than a stage's output."""
    from synthrank.train import SourceSpec

    reads = identity.model_reads(base_model)
    for spec in run.data:
        if data_name(spec) not in STAGE_DATA:
            source = SourceSpec.parse(spec)
            reads.update(identity.dataset_reads(source.dataset, source.split, prefix="data "))
    return reads


def _check_finished(result: Any, items: str) -> None:
    if result.unfinished:
        raise SynthrankError(
            f"generation left {len(result.unfinished)} {items} unfinished (backend errors); "
            "run the experiment again to retry them"
        )


def _doc2query_stage(experiment: Experiment, root: Path, progress: bool) -> Stage:
    """Queries for documents, then the consistency filter when the config sets one."""
    from synthrank.generate.doc2query import QueryGenJob, filter_queries, generate_queries

    section = experiment.doc2query
    assert section is not None
    backend = section.backend or experiment.backend
    # Queries reused from a published file are the queries this job would write (same corpus,
    # model and settings, checked): naming the file does not change the stage.
    inputs = {
        "doc2query": {k: v for k, v in plain(section).items() if k != "reuse"},
        "backend": backend,
    }
    folder = root / "doc2query" / f"queries-{digest(inputs)}"

    def run() -> None:
        job = QueryGenJob(
            section.corpus,
            folder,
            section.docs_limit,
            config=section.config,
            backend=backend,
            reuse=tuple(Path(path) for path in section.reuse),
            # A finished stage rebuilt (its folder carried without the journal) takes its
            # queries from the reuse files only: new LLM calls would write others.
            reuse_only=(folder / STAGE_FILE).is_file(),
        )
        _check_finished(generate_queries(job, progress=progress), "documents")
        if section.filter_top_k is not None:
            filter_queries(folder, section.filter_top_k)

    def reads() -> dict[str, Path]:
        corpus = Path(section.corpus).expanduser()
        found = (
            {f"corpus {section.corpus}": corpus}
            if corpus.suffix == ".jsonl"
            else {
                k: v
                for k, v in identity.dataset_reads(section.corpus, None).items()
                if k.endswith("corpus.jsonl")
            }
        )
        return {**found, **identity.model_reads(backend.model, label="generator")}

    return Stage(
        "doc2query",
        "queries for documents",
        folder,
        run,
        inputs,
        outputs=DATA_OUTPUTS,
        reads=reads,
    )


def _graded_stage(experiment: Experiment, root: Path, progress: bool) -> Stage:
    """Real lists (BM25's top N of each query) graded by the LLM judge."""
    from synthrank.generate import make_backend
    from synthrank.generate.graded import grade_real_lists, judge_failure

    section = experiment.graded
    assert section is not None
    spec = section.backend or experiment.backend
    inputs = {"graded": section, "backend": spec}
    folder = root / "graded" / f"graded-{digest(inputs)}"

    def run() -> None:
        backend = make_backend(spec)
        try:
            meta = grade_real_lists(section.job(folder), backend, progress=progress)
        finally:
            backend.close()
        failure = judge_failure(meta)
        if failure:
            raise SynthrankError(f"{folder}: {failure}")

    return Stage(
        "graded",
        "real lists graded by the LLM",
        folder,
        run,
        inputs,
        outputs=DATA_OUTPUTS,
        reads=lambda: {
            **identity.dataset_reads(section.dataset, section.split),
            **identity.model_reads(spec.model, label="judge"),
        },
    )


def run_experiment(
    experiment: Experiment,
    root: Path,
    *,
    dry_run: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    only: Sequence[str] = (),
) -> list[Stage]:
    """Run the stages that are not complete, in order; with ``dry_run`` only print the plan;
    with ``only``, just the stages of those models and what they need (:func:`only_models`).
    A second ``synthrank run`` on the same folder is refused while this one runs
    (:class:`~synthrank.fileio.FolderLock`)."""
    stages = plan_stages(experiment, root, progress=progress)
    if only:
        stages = only_models(stages, only)
    if dry_run:
        _show_plan(experiment, root, stages, log)
        return stages
    with FolderLock(root):
        _recover_records(root, stages)
        _run_stages(experiment, root, stages, log, only)
    return stages


def _show_plan(
    experiment: Experiment, root: Path, stages: list[Stage], log: Callable[[str], None]
) -> tuple[dict[Stage, str], list[Stage]]:
    """Print each stage's state; return the changed stages (with why) and those to rebuild."""
    changed = changed_stages(stages)
    rebuild = stages_to_rebuild([s for s in stages if s not in changed])
    log(f"experiment {experiment.name}: {len(stages)} stages in {root}")
    for stage in stages:
        state = "rebuild" if stage in rebuild else stage.state(changed)
        log(f"  {stage.kind:<9} {stage.name:<40} {state:<7} {stage.folder}")
    for stage, why in changed.items():
        log(f"  changed: {stage.kind} {stage.name}: {why}")
    return changed, rebuild


def _run_stages(
    experiment: Experiment,
    root: Path,
    stages: list[Stage],
    log: Callable[[str], None],
    only: Sequence[str],
) -> None:
    changed, rebuild = _show_plan(experiment, root, stages, log)
    for stage, why in changed.items():
        moved = _set_aside(stage, root)
        log(f"{stage.kind}: {stage.name}: {why}; its earlier results are in {moved}")
    # --only in a folder with a plan keeps that plan (and so the report) whole.
    if not (only and (root / PLAN_FILE).is_file()):
        _write_plan(experiment, root, stages)
    for stage in stages:
        if stage in rebuild:
            log(f"{stage.kind}: {stage.name} (rebuilding {', '.join(stage.missing_outputs())})")
            _rebuild(stage, root)
            continue
        if stage.complete:
            record = stage.record()
            if "content" not in record:
                # Finished before stages recorded their inputs' content: recorded now.
                write_json_atomic(stage.folder / STAGE_FILE, {**record, **stage.content()})
            continue
        log(f"{stage.kind}: {stage.name}")
        stage.folder.mkdir(parents=True, exist_ok=True)
        spent = _read_attempts(stage.folder)
        started = time.perf_counter()
        try:
            stage.action()
        except BaseException:
            # An interrupted or failed attempt keeps its time: the stage, resumed, reports all
            # of its work, not only its last run.
            spent["seconds"] += time.perf_counter() - started
            spent["attempts"] += 1
            write_json_atomic(stage.folder / ATTEMPTS_FILE, spent)
            raise
        write_json_atomic(
            stage.folder / STAGE_FILE,
            {
                "kind": stage.kind,
                "name": stage.name,
                "inputs": plain(stage.inputs),
                "seconds": round(spent["seconds"] + time.perf_counter() - started, 1),
                "attempts": spent["attempts"] + 1,
                **stage.content(),
            },
        )
        (stage.folder / ATTEMPTS_FILE).unlink(missing_ok=True)


def changed_stages(stages: list[Stage]) -> dict[Stage, str]:
    """The finished stages whose inputs changed since they finished, each with why: a file it
    read holds other content now (:func:`.identity.changed_read`), a stage it needs changed
    too, or a stage it needs ran again since (its content digest differs from the one
    recorded). Stages finished before records held their inputs' content are not judged."""
    changed: dict[Stage, str] = {}
    for stage in stages:  # a stage's needs come before it in the plan
        if not stage.complete:
            continue
        record = stage.record()
        if "content" not in record:
            continue
        stale = next((n for n in stage.needs if n in changed), None)
        if stale is not None:
            changed[stage] = f"it reads the output of {stale.kind} {stale.name}, which changed"
            continue
        recorded = record.get("needs") or {}
        rerun = next(
            (
                n
                for n in stage.needs
                # "": the need had no content on record when this stage finished
                if n.complete and recorded.get(n.key, "") not in ("", n.record().get("content"))
            ),
            None,
        )
        if rerun is not None:
            changed[stage] = f"{rerun.kind} {rerun.name}, whose output it read, ran again since"
            continue
        why = identity.changed_read(record, fingerprints(stage.reads()))
        if why is not None:
            changed[stage] = why
    return changed


def _set_aside(stage: Stage, root: Path) -> Path:
    """Move a changed stage's folder to ``root/.changed/`` (nothing finished is deleted), so
    the stage runs again in its own folder; return where it went."""
    target = root / CHANGED_DIR / stage.folder.relative_to(root)
    content = stage.record().get("content", "old")
    moved = target.with_name(f"{target.name}.{content}")
    number = 1
    while moved.exists():
        number += 1
        moved = target.with_name(f"{target.name}.{content}.{number}")
    moved.parent.mkdir(parents=True, exist_ok=True)
    stage.folder.rename(moved)
    return moved


def _write_plan(experiment: Experiment, root: Path, stages: list[Stage]) -> None:
    write_json_atomic(
        root / PLAN_FILE,
        {
            "name": experiment.name,
            "config_file": str(experiment.source) if experiment.source else None,
            "experiment": experiment.to_dict(),
            "stages": [
                {
                    "kind": s.kind,
                    "name": s.name,
                    "folder": str(s.folder.relative_to(root)),
                    "model": s.model,
                    "dataset": s.dataset,
                }
                for s in stages
            ],
        },
    )


def only_models(stages: list[Stage], names: Sequence[str]) -> list[Stage]:
    """The stages of the models ``names`` (a [[train]] name covers each of its seeds, ``base``
    is the base model) and every stage they need, in plan order: one row trained and evaluated
    again, to check a published result. :class:`SynthrankError` for a name that is no model."""
    models = {s.model for s in stages if s.model}
    known = models | {group_name(m) for m in models}
    for name in names:
        if name not in known:
            raise SynthrankError(
                f"--only {name!r}: no such model in this experiment (models: "
                f"{', '.join(sorted(known))})"
            )
    chosen = set(names)
    keep = {s for s in stages if s.model and (s.model in chosen or group_name(s.model) in chosen)}
    stack = list(keep)
    while stack:
        for need in stack.pop().needs:
            if need not in keep:
                keep.add(need)
                stack.append(need)
    return [s for s in stages if s in keep]


def stages_to_rebuild(stages: list[Stage]) -> list[Stage]:
    """The finished stages whose outputs are gone (a run folder copied without model weights or
    data copies) and that a stage still to run needs, directly or through another rebuilt one.
    A finished stage nobody needs any more is left as it is: its results are what count."""
    rebuild: set[Stage] = set()
    for stage in reversed(stages):  # needs come earlier in the plan than what needs them
        if stage.complete and stage not in rebuild:
            continue
        rebuild |= {n for n in stage.needs if n.complete and n.missing_outputs()}
    return [s for s in stages if s in rebuild]


def _rebuild(stage: Stage, root: Path) -> None:
    """Run a finished stage again for its missing outputs. The files it had (its record: time,
    settings, logs) are put back as they were, whether the rebuild ends or not: they describe
    the run that finished it. They wait in ``root/.rebuild`` meanwhile, outside the folder (a
    stage may clear its folder first), where an interrupted rebuild leaves them for the next
    run to put back (:func:`_recover_records`)."""
    saved = root / REBUILD_DIR / stage.folder.relative_to(root)
    if not saved.is_dir():
        staging = saved.with_name(saved.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for path in stage.folder.rglob("*"):
            if path.is_file() and path.stat().st_size <= RECORD_BYTES:
                target = staging / path.relative_to(stage.folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        staging.mkdir(parents=True, exist_ok=True)
        staging.rename(saved)
    try:
        stage.action()
    finally:
        _put_back(saved, stage.folder, root)
    missing = stage.missing_outputs()
    if missing:
        raise SynthrankError(f"{stage.folder}: rebuilt, but {', '.join(missing)} is still missing")


def _put_back(saved: Path, folder: Path, root: Path) -> None:
    for path in saved.rglob("*"):
        if path.is_file():
            target = folder / path.relative_to(saved)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    shutil.rmtree(saved)
    for parent in saved.parents:  # the folders that held it, up to root/.rebuild, if empty
        if parent == root or any(parent.iterdir()):
            break
        parent.rmdir()


def _recover_records(root: Path, stages: list[Stage]) -> None:
    """Put back the records of stages whose rebuild was interrupted."""
    for stage in stages:
        saved = root / REBUILD_DIR / stage.folder.relative_to(root)
        if saved.is_dir():
            _put_back(saved, stage.folder, root)


def _read_attempts(folder: Path) -> dict[str, Any]:
    """The time and number of the earlier, unfinished attempts at a stage (none: zero)."""
    path = folder / ATTEMPTS_FILE
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            return {"seconds": float(found["seconds"]), "attempts": int(found["attempts"])}
        except (ValueError, KeyError, TypeError):
            pass  # a damaged record only costs the time it held
    return {"seconds": 0.0, "attempts": 0}
