"""synthrank: train dense retrievers on LLM-generated graded ranking data.

The names in :data:`__all__` are the Python front door: one function per pipeline stage
(:func:`generate_lists`, :func:`train_model`, :func:`evaluate_model`, :func:`score_lists`,
:func:`run_experiment`), the pieces that plug synthrank into sentence-transformers' own trainer
(:func:`training_dataset`, the loss modules, :class:`GradedIREvaluator`), and the settings they
take. They are imported on first use, so ``import synthrank`` loads no torch.

Stages live in sub-packages named after them: ``data`` (the BEIR on-disk format), ``generate``
(graded passages from an LLM), ``train`` (losses and the trainer), ``evaluate`` (retrieval
metrics on real benchmarks), ``experiment`` (one config for the whole pipeline), ``report``.
The CLI in ``synthrank.cli`` is a thin layer over them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "BackendSpec": "synthrank.generate",
    "BeirDataset": "synthrank.data",
    "EvalResult": "synthrank.evaluate",
    "GenerationConfig": "synthrank.generate",
    "GradedIREvaluator": "synthrank.evaluate.st_evaluator",
    "InfoNCELoss": "synthrank.train.modules",
    "KLLoss": "synthrank.train.modules",
    "SettingError": "synthrank.errors",
    "SourceSpec": "synthrank.train.data",
    "SynthrankError": "synthrank.errors",
    "TrainConfig": "synthrank.train.trainer",
    "TrainResult": "synthrank.train.trainer",
    "TrainingData": "synthrank.train.trainer",
    "W1Loss": "synthrank.train.modules",
    "WS2Loss": "synthrank.train.modules",
    "evaluate_model": "synthrank.api",
    "generate_lists": "synthrank.api",
    "load_beir": "synthrank.api",
    "load_model": "synthrank.evaluate.models",
    "run_experiment": "synthrank.api",
    "score_lists": "synthrank.train.teacher",
    "train_model": "synthrank.api",
    "training_dataset": "synthrank.train.trainer",
}
"""Public name -> the module that defines it (imported when the name is first used)."""

__all__ = [
    "BackendSpec",
    "BeirDataset",
    "EvalResult",
    "GenerationConfig",
    "GradedIREvaluator",
    "InfoNCELoss",
    "KLLoss",
    "SettingError",
    "SourceSpec",
    "SynthrankError",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "W1Loss",
    "WS2Loss",
    "evaluate_model",
    "generate_lists",
    "load_beir",
    "load_model",
    "run_experiment",
    "score_lists",
    "train_model",
    "training_dataset",
]

if TYPE_CHECKING:
    from synthrank.api import (
        evaluate_model,
        generate_lists,
        load_beir,
        run_experiment,
        train_model,
    )
    from synthrank.data import BeirDataset
    from synthrank.errors import SettingError, SynthrankError
    from synthrank.evaluate import EvalResult
    from synthrank.evaluate.models import load_model
    from synthrank.evaluate.st_evaluator import GradedIREvaluator
    from synthrank.generate import BackendSpec, GenerationConfig
    from synthrank.train.data import SourceSpec
    from synthrank.train.modules import InfoNCELoss, KLLoss, W1Loss, WS2Loss
    from synthrank.train.teacher import score_lists
    from synthrank.train.trainer import TrainConfig, TrainingData, TrainResult, training_dataset


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'synthrank' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
