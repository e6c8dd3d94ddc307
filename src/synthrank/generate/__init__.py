"""The generate stage: real queries in, graded synthetic passages out, as a BEIR folder.

>>> from synthrank.generate import GenerateJob, generate
>>> generate(GenerateJob("beir:scifact", Path("runs/gen"), split="train", limit=10))

The jobs, one file each, stand on :mod:`synthrank.llm` (backends, scheduler, journal store):
:mod:`.passages` (graded passages for queries), :mod:`.doc2query` (queries for the documents of
a corpus), :mod:`.graded` (real lists graded by an LLM), :mod:`.judge`, :mod:`.inspect` (the
dataset check), :mod:`.merge` and :mod:`.publish` (shards and published lists);
:mod:`synthrank.generate.config` holds levels and strategies, :mod:`.prompts` and
:mod:`.validate` what the passage jobs ask and keep.
"""

from __future__ import annotations

from synthrank.generate.config import (
    DEFAULT_LEVELS,
    LEVEL_PRESETS,
    STRATEGIES,
    GenerationConfig,
    Level,
    config_from_dict,
)
from synthrank.generate.doc2query import (
    QueryGenConfig,
    QueryGenJob,
    QueryGenResult,
    filter_queries,
    generate_queries,
)
from synthrank.generate.inspect import format_report, inspect_dataset
from synthrank.generate.merge import merge
from synthrank.generate.passages import GenerateJob, GenerateResult, generate
from synthrank.llm.backends import BACKENDS, BackendSpec, make_backend
from synthrank.llm.jobs import load_queries, parse_shard
from synthrank.llm.models import GGUF_MODELS, resolve_gguf

__all__ = [
    "BACKENDS",
    "DEFAULT_LEVELS",
    "GGUF_MODELS",
    "LEVEL_PRESETS",
    "STRATEGIES",
    "BackendSpec",
    "GenerateJob",
    "GenerateResult",
    "GenerationConfig",
    "Level",
    "QueryGenConfig",
    "QueryGenJob",
    "QueryGenResult",
    "config_from_dict",
    "filter_queries",
    "format_report",
    "generate",
    "generate_queries",
    "inspect_dataset",
    "load_queries",
    "make_backend",
    "merge",
    "parse_shard",
    "resolve_gguf",
]
