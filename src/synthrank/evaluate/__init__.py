"""The evaluate stage: encode a corpus, search it, and score the run with trec_eval measures."""

from __future__ import annotations

from synthrank.evaluate.metrics import MEASURES, Run, cut_run, mean_measures, per_query_measures
from synthrank.evaluate.models import MODEL_ALIASES, load_model
from synthrank.evaluate.runner import (
    DATASET_PROFILES,
    DatasetProfile,
    EvalResult,
    evaluate,
    load_metrics,
)
from synthrank.evaluate.search import exact_search, faiss_search, search
from synthrank.evaluate.significance import (
    Comparison,
    compare_per_query,
    paired_randomization_test,
    paired_t_test,
)

__all__ = [
    "DATASET_PROFILES",
    "MEASURES",
    "MODEL_ALIASES",
    "Comparison",
    "DatasetProfile",
    "EvalResult",
    "Run",
    "compare_per_query",
    "cut_run",
    "evaluate",
    "exact_search",
    "faiss_search",
    "load_metrics",
    "load_model",
    "mean_measures",
    "paired_randomization_test",
    "paired_t_test",
    "per_query_measures",
    "search",
]
