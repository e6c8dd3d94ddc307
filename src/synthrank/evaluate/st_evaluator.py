"""Graded retrieval measures as a sentence-transformers evaluator, for evaluation during training.

sentence-transformers' ``InformationRetrievalEvaluator`` takes a set of relevant documents per
query, so its nDCG gives every relevant document the same gain; graded data (SyCL's levels 0-3,
TREC DL's 0-3) needs the graded nDCG that ``synthrank evaluate`` reports. This evaluator ranks
the corpus as :func:`~synthrank.evaluate.runner.evaluate` does
(:func:`~synthrank.evaluate.runner.retrieve`) and scores the run with trec_eval through
pytrec_eval (:func:`~synthrank.evaluate.metrics.per_query_measures`), so its numbers are those
of ``synthrank evaluate`` on the same queries, corpus and qrels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthrank.data import BeirDataset, resolve_dataset
from synthrank.errors import SynthrankError
from synthrank.evaluate.encode import ENCODE_BATCH_SIZE
from synthrank.evaluate.metrics import MEASURES, mean_measures, per_query_measures
from synthrank.evaluate.runner import profile_for, retrieve
from synthrank.evaluate.search import SEARCH_METHODS, SearchMethod

try:
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
except ImportError:  # sentence-transformers 5
    from sentence_transformers.evaluation import SentenceEvaluator

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TRAINING_MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100")
"""The measures reported by default: graded nDCG@10, MS MARCO's RR@10, R@100."""


def metric_key(measure: str) -> str:
    """The key of ``measure`` in the evaluator's results: ``nDCG@10`` -> ``ndcg@10``."""
    return measure.lower()


class GradedIREvaluator(SentenceEvaluator):
    """nDCG@10 with graded gains, RR@10 and R@100 of a bi-encoder on a fixed corpus.

    Measures (trec_eval's definitions, :mod:`synthrank.evaluate.metrics`; ``rel`` is the
    graded judgment, ``L`` = ``relevance_level``):

    - ``nDCG@10`` = DCG@10 / IDCG@10 with DCG@10 = sum_{i<=10} rel_i / log2(i + 1), over the
      ideal ordering of the query's judged documents (Järvelin & Kekäläinen, TOIS 2002);
    - ``RR@10`` = 1 / rank of the first document with rel >= L in the top 10, else 0;
    - ``R@100`` = share of the documents with rel >= L in the top 100;
    - also on request ``AP@100`` and ``P@10`` (any of
      :data:`~synthrank.evaluate.metrics.MEASURES`).

    Each is the mean over the queries that have judgments, in [0, 1], higher is better.

    Args:
        queries: query id -> query text.
        corpus: document id -> document text (title and text joined, as
            :meth:`~synthrank.data.Document.full_text` does for a BEIR corpus).
        qrels: query id -> {document id -> grade (int, 0 not relevant)}; queries without any
            judgment or without text are not scored.
        name: prefix of the result keys (``scifact-dev`` -> ``scifact-dev_ndcg@10``), as
            sentence-transformers' evaluators name theirs; the trainer adds ``eval_``.
        measures: which of :data:`~synthrank.evaluate.metrics.MEASURES` to report; the first
            is the :attr:`primary_metric` (used by ``metric_for_best_model`` and
            ``load_best_model_at_end``).
        relevance_level: the lowest grade binary measures (RR, R, P, AP) count as relevant
            (TREC DL: 2).
        ignore_identical_ids: leave a query's own id out of its ranking (ArguAna, Quora).
        top_k: documents ranked per query (R@100 and AP@100 need 100).
        batch_size: texts per encoding batch.
        search_method: ``exact``, or ``faiss-flat`` / ``faiss-hnsw`` for large corpora.
        show_progress_bar: show the encoding progress.

    Calling it with a model returns ``{key: value}`` for each measure (floats); keys are the
    measures in lower case after ``name`` and ``_``. :class:`SynthrankError` for a measure it does
    not know, no judged query with text, or a model that is neither cosine nor dot.

    Example::

        from synthrank import GradedIREvaluator, load_model
        evaluator = GradedIREvaluator.from_beir("beir:scifact", "test", name="scifact")
        print(evaluator(load_model("minilm")))  # {'scifact_ndcg@10': 0.645..., ...}
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        name: str = "",
        measures: Sequence[str] = TRAINING_MEASURES,
        relevance_level: int = 1,
        ignore_identical_ids: bool = False,
        top_k: int = 100,
        batch_size: int = ENCODE_BATCH_SIZE,
        search_method: SearchMethod = "exact",
        show_progress_bar: bool = False,
    ) -> None:
        super().__init__()
        unknown = [m for m in measures if m not in MEASURES]
        if unknown or not measures:
            raise SynthrankError(
                f"measure {unknown[0] if unknown else '(none)'} is not one of "
                f"{', '.join(MEASURES)}; give at least one of them"
            )
        if search_method not in SEARCH_METHODS:
            raise SynthrankError(
                f"search method {search_method!r} is not one of {', '.join(SEARCH_METHODS)}"
            )
        if top_k < 1:
            raise SynthrankError(f"top_k must be a positive integer (got {top_k})")
        self.qrels = {q: dict(judged) for q, judged in qrels.items() if judged}
        self.queries = {q: text for q, text in queries.items() if q in self.qrels}
        if not self.queries:
            raise SynthrankError(
                f"{name or 'evaluator'}: no query has both text and judgments "
                f"({len(queries)} queries, {len(qrels)} judged): give qrels keyed by query ids"
            )
        if not corpus:
            raise SynthrankError(f"{name or 'evaluator'}: the corpus is empty")
        self.corpus = dict(corpus)
        self.name = name
        self.measures = tuple(measures)
        self.relevance_level = relevance_level
        self.ignore_identical_ids = ignore_identical_ids
        self.top_k = top_k
        self.batch_size = batch_size
        self.search_method = search_method
        self.show_progress_bar = show_progress_bar
        self.primary_metric = metric_key(self.measures[0])
        self.greater_is_better = True

    @classmethod
    def from_beir(
        cls,
        dataset: str | Path | BeirDataset,
        split: str = "test",
        **options: Any,
    ) -> GradedIREvaluator:
        """The evaluator of ``split`` of a BEIR dataset: ``beir:NAME``, a folder (a synthetic
        one from ``synthrank generate`` too) or a :class:`~synthrank.data.BeirDataset`.
        ``relevance_level`` and ``ignore_identical_ids`` default to the dataset's
        :class:`~synthrank.evaluate.runner.DatasetProfile` (TREC DL counts grade >= 2; ArguAna
        and Quora drop a query's own id); ``name`` defaults to the dataset's folder name and
        the split (``scifact-test``); ``options`` are the constructor's.
        :class:`SynthrankError` for a dataset that cannot be found or read, or a split
        without judged queries."""
        data = dataset if isinstance(dataset, BeirDataset) else resolve_dataset(dataset)
        split_data = data.load_split(split)
        profile = profile_for(data)
        options.setdefault("relevance_level", profile.relevance_level)
        options.setdefault("ignore_identical_ids", profile.ignore_identical_ids)
        short = data.name.removeprefix("beir:").rstrip("/").split("/")[-1]
        options.setdefault("name", f"{short}-{split}")
        return cls(
            {q: query.text for q, query in split_data.queries.items()},
            {d: doc.full_text() for d, doc in split_data.corpus.items()},
            split_data.qrels,
            **options,
        )

    def per_query(self, model: SentenceTransformer) -> dict[str, dict[str, float]]:
        """Every measure of :data:`~synthrank.evaluate.metrics.MEASURES` for each scored query
        (query id -> {measure -> value})."""
        run = retrieve(
            model,
            self.queries,
            self.corpus,
            top_k=self.top_k,
            ignore_identical_ids=self.ignore_identical_ids,
            search_method=self.search_method,
            batch_size=self.batch_size,
            progress=self.show_progress_bar,
            name=self.name or type(model).__name__,
        )
        return per_query_measures(self.qrels, run, relevance_level=self.relevance_level)

    def __call__(
        self,
        model: SentenceTransformer,
        output_path: str | None = None,
        epoch: int = -1,
        steps: int = -1,
    ) -> dict[str, float]:
        """The mean of each of :attr:`measures` over the scored queries, keyed as the class
        docstring says. ``output_path``, ``epoch`` and ``steps`` are the trainer's; nothing is
        written to ``output_path``."""
        means = mean_measures(self.per_query(model), self.measures)
        metrics = self.prefix_name_to_metrics(
            {metric_key(m): value for m, value in means.items()}, self.name
        )
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "measures": list(self.measures),
            "relevance_level": self.relevance_level,
            "ignore_identical_ids": self.ignore_identical_ids,
            "top_k": self.top_k,
        }
