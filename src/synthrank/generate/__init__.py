"""The generate stage: real queries in, graded synthetic passages out, as a BEIR folder.

>>> from synthrank.generate import GenerateJob, generate
>>> generate(GenerateJob("beir:scifact", Path("runs/gen"), split="train", limit=10))

See :mod:`synthrank.generate.config` for levels and strategies, :mod:`.backends` for engines,
:mod:`.store` for the crash-safe output folder, :mod:`.inspect` for the dataset check,
:mod:`.doc2query` for the other direction: queries written for the documents of a corpus.
"""

from __future__ import annotations

from synthrank.generate.backends import BACKENDS, BackendSpec, make_backend
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
from synthrank.generate.models import GGUF_MODELS, resolve_gguf
from synthrank.generate.runner import (
    GenerateJob,
    GenerateResult,
    generate,
    load_queries,
    parse_shard,
)

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
