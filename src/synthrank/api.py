"""The front door: one function per pipeline stage, taking what the CLI takes (dataset sources
such as ``"beir:scifact"`` or a folder, model names such as ``"minilm"``), each a thin layer over
its stage's API. ``import synthrank`` exposes them lazily (``synthrank.train_model``...).

>>> import synthrank
>>> trained = synthrank.train_model("runs/gen/scifact", "runs/ws2-scifact")
>>> synthrank.evaluate_model(trained.out, "beir:scifact").metrics["nDCG@10"]
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthrank.errors import SettingError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from synthrank.data import BeirDataset
    from synthrank.evaluate import EvalResult
    from synthrank.experiment import Experiment, Stage
    from synthrank.generate import BackendSpec, GenerateResult, GenerationConfig
    from synthrank.train import TrainResult
    from synthrank.train.data import DataSources


def load_beir(source: str | Path) -> BeirDataset:
    """The BEIR dataset ``source`` names: a folder holding ``corpus.jsonl``, ``queries.jsonl``
    and ``qrels/<split>.tsv`` (a synthetic one from :func:`generate_lists` too), or
    ``beir:NAME``, looked up under ``$SYNTHRANK_DATA/beir/NAME``, then the cache, then
    downloaded from the official BEIR location and checked against BEIR's MD5
    (:func:`synthrank.data.resolve_dataset`). Reading is lazy: ``.load_split("test")`` gives
    the split's corpus, queries and graded qrels.

    :class:`~synthrank.errors.SynthrankError` for a folder that is not a BEIR folder, an unknown
    name, or a download that fails its checksum."""
    from synthrank.data import resolve_dataset

    return resolve_dataset(source)


def generate_lists(
    queries: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    backend: BackendSpec | None = None,
    config: GenerationConfig | None = None,
    progress: bool = True,
) -> GenerateResult:
    """Write graded synthetic passages for real queries into the BEIR folder ``out``, as
    ``synthrank generate`` does (SyCL, arXiv 2503.23239: an LLM writes passages at relevance
    levels 3 "perfectly relevant" to 0 "irrelevant" for each query; ``qrels/train.tsv`` grades
    them). A run that stops resumes where it stopped when called again.

    ``queries``: a BEIR dataset (``beir:scifact``, a folder; with ``split``, its queries judged
    in that split) or a ``.jsonl`` / ``.tsv`` query file; ``limit``: the first N of them.
    ``model``: the LLM (a packaged GGUF name such as ``smollm2-135m``, or the model a server
    serves), overriding ``backend.model``; ``backend``: the engine
    (:class:`~synthrank.generate.BackendSpec`; default llama-cpp in-process); ``config``: levels,
    passages per level, lengths, sampling (:class:`~synthrank.generate.GenerationConfig`).

    Returns a :class:`~synthrank.generate.GenerateResult` (``counts``: passages per level,
    failed validations, calls; ``unfinished``: ids whose calls failed, left for the next run).
    :class:`~synthrank.errors.SynthrankError` for no queries, an invalid setting (naming it),
    an engine that cannot start, or a folder another process writes."""
    from synthrank.generate import BackendSpec, GenerateJob, GenerationConfig, generate

    backend = backend or BackendSpec()
    if model is not None:
        backend = replace(backend, model=model)
    job = GenerateJob(
        queries=str(queries),
        out=Path(out),
        split=split,
        limit=limit,
        config=config or GenerationConfig(),
        backend=backend,
    )
    return generate(job, progress=progress)


def train_model(
    data: DataSources,
    out: str | Path,
    *,
    base_model: str = "minilm",
    loss: str = "ws2",
    resume: bool = False,
    progress: bool = True,
    **settings: Any,
) -> TrainResult:
    """Train ``base_model`` on graded ``data`` with ``loss`` and save a sentence-transformers
    folder in ``out``, as ``synthrank train`` does (:func:`synthrank.train.train`).

    ``data``: sources as ``--data`` takes them: a graded folder (``"runs/gen/scifact"``), a
    dataset with options (``"beir:scifact,split=train,relabel=1:3,bm25=2:1"``), a ``Path``, or a
    list of them (merged per query). ``base_model``: ``minilm``, ``mpnet``, a folder or a
    Hugging Face name. ``loss``: ``ws2`` (SyCL's batch 2-Wasserstein), ``w1`` (per-query
    Wasserstein-1 over levels), ``kl`` (ListNet) or ``infonce``. ``settings``: any other
    :class:`~synthrank.train.TrainConfig` field (``batch_size=16``, ``epochs=1.0``,
    ``max_steps=-1``, ``seed=0``...); the learning rate and the temperatures left unset follow
    the encoder (1e-4, 0.05, 0.25 for a normalised one such as minilm). ``resume``: continue from
    the last checkpoint in ``out/checkpoints``.

    Returns a :class:`~synthrank.train.TrainResult` (``out``, ``steps``, mean ``final_loss``, the
    final score ``temperature``, the data ``report``). :class:`~synthrank.errors.SettingError`
    naming a setting that does not exist or is wrong; :class:`~synthrank.errors.SynthrankError`
    for data that form no batch, a machine that cannot run the precision, a full disk."""
    from synthrank.train import TrainConfig, train
    from synthrank.train.data import parse_sources
    from synthrank.train.trainer import unknown_setting_hint

    known = {f.name for f in fields(TrainConfig)} - {"data", "out", "base_model", "loss"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SettingError(
            unknown[0],
            f"is not a training setting{unknown_setting_hint(unknown[0])}; "
            f"known: {', '.join(sorted(known))}",
        )
    config = TrainConfig(
        data=parse_sources(data), out=Path(out), base_model=base_model, loss=loss, **settings
    )
    return train(config, resume=resume, progress=progress)


def evaluate_model(
    model: str | Path | SentenceTransformer,
    dataset: str | Path | BeirDataset,
    split: str = "test",
    *,
    output: str | Path | None = None,
    progress: bool = True,
    **options: Any,
) -> EvalResult:
    """nDCG@10 (graded), RR@10, R@100, AP@100 and P@10 of ``model`` on ``split`` of ``dataset``,
    as ``synthrank evaluate`` computes them (:func:`synthrank.evaluate.evaluate`: exact search
    over the whole corpus, trec_eval's measures through pytrec_eval).

    ``model``: ``minilm``, a trained folder (``TrainResult.out``), a Hugging Face name or a
    loaded ``SentenceTransformer``; ``dataset``: ``beir:NAME`` or a BEIR folder; ``output``: a
    folder to write ``metrics.json`` and ``run.trec`` into. ``options``: ``max_length``,
    ``batch_size``, ``top_k`` (100), ``relevance_level`` and ``ignore_identical_ids`` (default:
    the dataset's profile, TREC DL counts grade >= 2), ``search_method``, ``cache_dir``,
    ``runtime``, ``devices`` (``"cuda:0,cuda:1"``), ``corpus_sample`` and ``seed`` (every judged
    document plus that many others: quicker, scores higher than on the whole corpus).

    Returns an :class:`~synthrank.evaluate.EvalResult`: ``metrics`` (measure -> mean over
    queries, in [0, 1]), ``per_query``, the ``run``, ``timings`` in seconds.
    :class:`~synthrank.errors.SynthrankError` for a model or dataset that cannot be loaded, a
    split without judged queries, an output folder that cannot be written."""
    from synthrank.evaluate import evaluate

    if isinstance(model, Path):
        model = str(model)
    return evaluate(model, dataset, split, output=output, progress=progress, **options)


def run_experiment(
    experiment: str | Path | Experiment,
    out: str | Path,
    *,
    dry_run: bool = False,
    progress: bool = True,
    only: tuple[str, ...] = (),
) -> list[Stage]:
    """Run an experiment file (generate, judge, train, evaluate, report) into ``out``, as
    ``synthrank run`` does (:func:`synthrank.experiment.run_experiment`): stages already
    complete for the same settings are skipped, an interrupted one resumes. ``experiment``: a
    TOML file (``examples/quickstart.toml``) or a loaded
    :class:`~synthrank.experiment.Experiment`; ``only``: just those models and what they need.

    Returns the planned stages. :class:`~synthrank.errors.SynthrankError` naming file, table
    and key for a wrong experiment file, or the stage that failed."""
    from synthrank import experiment as stage

    if not isinstance(experiment, stage.Experiment):
        experiment = stage.load_experiment(experiment)
    return stage.run_experiment(
        experiment, Path(out), dry_run=dry_run, progress=progress, only=only
    )
