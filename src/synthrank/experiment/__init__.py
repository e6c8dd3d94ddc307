"""One config, the whole experiment: generate, judge, train, evaluate, report.

>>> from synthrank.experiment import load_experiment, run_experiment
>>> run_experiment(load_experiment("examples/quickstart.toml"), Path("runs/quickstart"))
"""

from __future__ import annotations

from synthrank.experiment.config import Experiment, load_experiment
from synthrank.experiment.runner import Stage, plan_stages, run_experiment

__all__ = ["Experiment", "Stage", "load_experiment", "plan_stages", "run_experiment"]
