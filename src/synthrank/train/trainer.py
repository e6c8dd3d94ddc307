"""Train a bi-encoder on graded groups with sentence-transformers' trainer.

The trainer is ``SentenceTransformerTrainer`` (a Hugging Face ``Trainer``), so
``torchrun --nproc_per_node N -m synthrank.cli train ...`` and ``accelerate launch`` scale it out;
the loss modules gather the global batch across processes. The output folder is a standard
sentence-transformers model with its model card, plus ``train_log.jsonl`` (one line per step:
loss, learning rate, time), ``synthrank_train.json`` (the full configuration and the data report)
and ``checkpoints/`` (for ``resume``, with ``run_settings.json``: the settings a resumed run must
share with the one that made the checkpoints).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthrank.errors import SettingError, SynthrankError
from synthrank.fileio import FolderLock, read_text, write_json_atomic
from synthrank.train.data import (
    GROUP_STRATEGIES,
    AssemblyReport,
    DataSources,
    GroupStrategy,
    SourceSpec,
    TrainingGroup,
    assemble_groups,
    parse_sources,
)
from synthrank.train.encoder_defaults import ENCODER_DEFAULTS, encoder_default
from synthrank.train.losses import TARGET_KINDS, TargetKind
from synthrank.train.modules import (
    LOSSES,
    TARGET_SCOPES,
    GroupLoss,
    ListwiseLoss,
    NonFiniteLossError,
)

if TYPE_CHECKING:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

PRECISIONS = ("fp32", "bf16", "fp16")


def check_hardware(config: TrainConfig) -> None:
    """Refuse, with what to do instead, the settings this machine cannot run: fp16 without a
    CUDA GPU (the trainer has no CPU half precision), bf16 on a GPU or CPU without bf16 (a CPU
    needs AVX512-BF16 or AMX, else it would emulate bf16 slower than fp32), DeepSpeed without a
    GPU, the package or the config file."""
    import torch

    cuda = torch.cuda.is_available()
    if config.precision == "fp16" and not cuda:
        raise SynthrankError(
            "fp16 needs a CUDA GPU (the trainer has no half precision on a CPU); use bf16 on a "
            "CPU with AVX512-BF16 or AMX, or fp32"
        )
    if config.precision == "bf16":
        supported = (
            torch.cuda.is_bf16_supported()
            if cuda
            else torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
        if not supported:
            where = "this GPU" if cuda else "this CPU (no AVX512-BF16 or AMX)"
            raise SynthrankError(f"bf16 is not supported on {where}; use fp32")
    if config.deepspeed is not None:
        if not cuda:
            raise SynthrankError("deepspeed needs CUDA GPUs; drop --deepspeed on this machine")
        if not Path(config.deepspeed).is_file():
            raise SynthrankError(f"--deepspeed {config.deepspeed}: file not found")
        try:
            import deepspeed  # noqa: F401
        except ImportError as exc:
            raise SynthrankError(
                "--deepspeed needs the deepspeed package: pip install deepspeed"
            ) from exc


@dataclass
class TrainConfig:
    data: list[SourceSpec]
    """The training sources, pooled by query (:meth:`SourceSpec.parse` reads
    ``DATASET[,split=S][,relabel=A:B][,bm25=N:LABEL][,random=N:LABEL][,teacher=FOLDER]``)."""
    out: Path
    """The output folder: a sentence-transformers model, its training log and checkpoints."""
    base_model: str = "minilm"
    """The encoder to fine-tune: an alias (``minilm``, ``mpnet``), a sentence-transformers
    folder or a Hugging Face name."""
    loss: str = "ws2"
    """``ws2`` (2-Wasserstein between score and target distributions, the paper's), ``w1``,
    ``kl`` (list-wise), or ``infonce`` (contrastive, binary labels)."""
    batch_size: int = 16
    """Queries per step per process (>= 1), each with its group of passages."""
    group_size: int = 4
    """Passages per query (>= 1); 1: (query, positive) pairs with in-batch negatives only
    (``infonce``)."""
    group_strategy: GroupStrategy = "one-per-level"
    """How a query's group is drawn from its passages: ``one-per-level`` (one passage of each
    level, highest first, then at random) or ``random`` (one top-level passage, then at
    random)."""
    binary_threshold: int | None = None
    """The binary view of the InfoNCE baseline: levels at or above it are positives (label 1),
    the others negatives, and a group is one positive and ``group_size - 1`` negatives; unset:
    the graded levels."""
    lr: float | None = None
    """Peak learning rate (> 0); unset (None):
    :data:`~synthrank.train.encoder_defaults.COSINE_LR` (1e-4) for encoders that end in a
    Normalize layer, else 1e-5 (the paper's)."""
    epochs: float = 1.0
    """Passes over the training queries (> 0; a fraction stops part-way)."""
    warmup: float = 0.05
    """Share of the steps, in [0, 1), over which the learning rate rises linearly to ``lr``;
    it then decays linearly to 0."""
    max_length: int = 256
    """Tokens per text (>= 1); longer texts are cut. The trained model keeps this length."""
    temperature: float | None = None
    """Score temperature (> 0): the loss sees score / temperature; unset:
    :data:`~synthrank.train.encoder_defaults.COSINE_TEMPERATURE` (0.05) for encoders that end
    in a Normalize layer, else 1.0 (the paper's)."""
    learn_temperature: bool = False
    """Learn the score temperature (in log space) from ``temperature``, at ``temperature_lr``;
    needs full-batch training (no ``mini_batch_size``)."""
    temperature_lr: float = 1e-2
    """Learning rate of the log score temperature when it is learned (the encoder's ``lr`` is
    far too small to move it within one short run)."""
    target: TargetKind = "softmax"
    """The list-wise target over a query's passages: ``softmax`` (softmax(labels / t) with t
    ``target_temperature``, as released) or ``gain`` (nDCG gains 2^label - 1, normalised)."""
    target_temperature: float | None = None
    """t of the softmax target (> 0); unset (None):
    :data:`~synthrank.train.encoder_defaults.COSINE_TARGET_TEMPERATURE` (0.25) for encoders
    that end in a Normalize layer, else 1.0 (the released value)."""
    target_scope: str = "batch"
    """``batch`` (as released): the target spreads over every passage of the batch; ``group``:
    other queries' passages get no target mass and act only as negatives."""
    teacher_weight: float | None = None
    """List-wise distillation: the share of the teacher's distribution in the target over each
    query's own passages (:func:`~synthrank.train.losses.teacher_target`; 1: the teacher alone,
    0.5: half teacher, half the grades' ``target``); unset (None): the grades alone. Needs
    every data source with ``teacher=`` scores, and ws2 or kl."""
    teacher_temperature: float = 0.05
    """t of the teacher's distribution softmax(score / t) (cosine scores lie close together)."""
    teacher_mask: float | None = None
    """InfoNCE with the teacher's false negatives masked (the de-noised InfoNCE baseline CADET
    compares its list-wise distillation with, arXiv 2505.19274): each query's positive is the
    teacher's best passage and its negatives the passages the teacher scores below this share
    of the positive's score, hardest first (NV-Retriever's positive-aware mining TopK-PercPos,
    0.95; arXiv 2407.15831); in (0, 1]. Other queries' passages stay in-batch negatives.
    Needs every data source with ``teacher=`` scores and loss infonce; unset: no mask."""
    mini_batch_size: int | None = None
    """Cached-gradient (GradCache) training: texts encoded at a time (>= 1), so that large
    batches fit in small memory (one process only); unset: the whole batch at once."""
    seed: int = 0
    """Random seed of the groups drawn, the data order and the weights' initialisation."""
    save_steps: int = 50
    """A checkpoint every this many steps (>= 1), from which an interrupted run resumes."""
    max_steps: int = -1
    """Stop after this many optimizer steps (>= 1); -1: run all ``epochs``."""
    precision: str = "fp32"
    """``fp32``, ``bf16`` (a GPU with bf16, or a CPU with AVX512-BF16 or AMX) or ``fp16`` (a GPU):
    the encoder runs under autocast; scores and the losses stay in float32 / float64."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% more time."""
    deepspeed: str | None = None
    """A DeepSpeed JSON config, passed to the trainer (GPU machines, ``pip install deepspeed``)."""
    dataloader_workers: int = 0
    """Processes that load training data (>= 0; 0: the main process)."""

    def validate(self) -> None:
        """Raise :class:`SettingError` naming the first setting to fix."""
        if self.loss not in LOSSES:
            raise SettingError(
                "loss", f"must be one of {', '.join(sorted(LOSSES))} (got {self.loss!r})"
            )
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise SettingError("mini_batch_size", f"must be positive (got {self.mini_batch_size})")
        for name in ("batch_size", "group_size", "max_length", "save_steps"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be a positive integer (got {getattr(self, name)})")
        if self.group_size == 1 and self.loss != "infonce":
            raise SettingError(
                "group_size",
                f"1 ((query, positive) pairs, in-batch negatives only) trains with infonce; "
                f"{self.loss} compares the grades of a list: use group_size >= 2",
            )
        positive = ["epochs", "lr", "temperature", "target_temperature"]
        if self.learn_temperature:
            positive.append("temperature_lr")
        for name in positive:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SettingError(name, f"must be positive (got {value})")
        if self.max_steps == 0 or self.max_steps < -1:
            raise SettingError(
                "max_steps", f"must be positive, or -1 for --epochs (got {self.max_steps})"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise SettingError(
                "warmup", f"is a fraction of the steps in [0, 1) (got {self.warmup})"
            )
        if self.learn_temperature and self.mini_batch_size is not None:
            raise SettingError(
                "learn_temperature", "needs full-batch training: drop mini_batch_size"
            )
        if not self.data:
            raise SettingError("data", "names no source: give at least one (--data)")
        self._validate_teacher()
        if self.dataloader_workers < 0:
            raise SettingError(
                "dataloader_workers", f"must be >= 0 (got {self.dataloader_workers})"
            )
        choices = {
            "precision": PRECISIONS,
            "target": TARGET_KINDS,
            "target_scope": TARGET_SCOPES,
            "group_strategy": GROUP_STRATEGIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SettingError(
                    name, f"must be one of {', '.join(allowed)} (got {getattr(self, name)!r})"
                )

    def _validate_teacher(self) -> None:
        if self.teacher_mask is not None:
            self._validate_teacher_mask()
        elif self.teacher_weight is not None:
            self._validate_teacher_weight()
        else:
            return
        if not all(spec.teacher for spec in self.data):
            raise SettingError(
                "data",
                "names a source without teacher=FOLDER: each needs the teacher's scores of its "
                "lists (synthrank score)",
            )

    def _validate_teacher_weight(self) -> None:
        assert self.teacher_weight is not None
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise SettingError(
                "teacher_weight", f"is a share in [0, 1] (got {self.teacher_weight})"
            )
        if not self.teacher_temperature > 0:
            raise SettingError(
                "teacher_temperature", f"must be positive (got {self.teacher_temperature})"
            )
        if self.loss not in ("ws2", "kl"):
            why = (
                "compares relevance levels, which a teacher's scores do not have"
                if self.loss == "w1"
                else "has one positive per query, not a distribution"
            )
            raise SettingError("loss", f"{self.loss} {why}: a teacher target trains ws2 or kl")
        if self.binary_threshold is not None:
            raise SettingError("binary_threshold", "is InfoNCE's binary view: drop it")

    def _validate_teacher_mask(self) -> None:
        assert self.teacher_mask is not None
        if not 0.0 < self.teacher_mask <= 1.0:
            raise SettingError("teacher_mask", f"is a share in (0, 1] (got {self.teacher_mask})")
        if self.teacher_weight is not None:
            raise SettingError(
                "teacher_mask",
                "and teacher_weight exclude each other: the mask picks InfoNCE's negatives, a "
                "teacher weight makes a list-wise target (ws2 or kl)",
            )
        if self.loss != "infonce":
            raise SettingError(
                "loss",
                f"{self.loss} with teacher_mask: the mask picks InfoNCE's negatives; a list-wise "
                "loss takes the teacher's scores as its target (teacher_weight)",
            )
        if self.binary_threshold is not None:
            raise SettingError(
                "binary_threshold", "picks the positive by grade; teacher_mask by the teacher"
            )


@dataclass
class TrainResult:
    out: Path
    steps: int
    final_loss: float | None
    """Mean training loss over every step, those before a ``resume`` included; None if not
    finite."""
    temperature: float
    """The score temperature at the end (the learned value when it is learned)."""
    report: AssemblyReport
    timings: dict[str, float] = field(default_factory=dict)
    initial_temperature: float | None = None

    @property
    def step_count(self) -> str:
        """``1 step``, ``38 steps``."""
        return f"{self.steps} step{'' if self.steps == 1 else 's'}"


def _with_encoder_defaults(config: TrainConfig, model: Any) -> TrainConfig:
    """``config`` with each :data:`~synthrank.train.encoder_defaults.ENCODER_DEFAULTS` setting
    left at None filled in for ``model``."""
    filled = {
        name: encoder_default(name, model)
        for name in ENCODER_DEFAULTS
        if getattr(config, name) is None
    }
    return replace(config, **filled)


def _check_one_batch(groups: int, batch_size: int, processes: int) -> int:
    """How many of ``groups`` each epoch leaves out (the last, incomplete global batch of
    ``batch_size`` per process); :class:`SynthrankError` if they fill no batch at all."""
    global_batch = batch_size * processes
    if groups < global_batch:
        per_process = (
            f" ({batch_size} per process x {processes} processes)" if processes > 1 else ""
        )
        fits = groups // processes
        advice = f"lower --batch-size to at most {fits}" if fits else "use fewer processes"
        raise SynthrankError(
            f"{groups} training groups do not fill one batch of {global_batch}{per_process}, so "
            f"no step would run: {advice} or add queries"
        )
    return groups % global_batch


def _mean_logged_loss(log_history: list[dict[str, Any]]) -> float | None:
    """Mean of the per-step losses in the trainer's log history, which a resumed run restores
    from its checkpoint: every step counts once, before and after an interruption (the
    trainer's own ``training_loss`` covers only the steps since it started)."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    if not losses:
        return None
    mean = sum(losses) / len(losses)
    return mean if math.isfinite(mean) else None


TRAINER_ARGUMENT_FIELDS: dict[str, str] = {
    "per_device_train_batch_size": "batch_size",
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "warmup_ratio": "warmup",
}
"""Hugging Face ``TrainingArguments`` names (the ``synthrank train`` flags) whose
:class:`TrainConfig` field is spelled shorter, for errors that point from one to the other."""


def unknown_setting_hint(key: str) -> str:
    """`` (the CLI's --learning-rate is 'lr' here)`` for a TrainingArguments name of a
    TrainConfig field, else an empty string."""
    field = TRAINER_ARGUMENT_FIELDS.get(key)
    if field is None:
        return ""
    return f" (the CLI's --{key.replace('_', '-')} is {field!r} here)"


DATASET_SETTINGS: tuple[str, ...] = (
    "base_model",
    "loss",
    "group_size",
    "group_strategy",
    "binary_threshold",
    "max_length",
    "temperature",
    "learn_temperature",
    "target",
    "target_temperature",
    "target_scope",
    "teacher_weight",
    "teacher_temperature",
    "teacher_mask",
    "mini_batch_size",
    "seed",
)
"""The :class:`TrainConfig` settings :func:`training_dataset` takes: those that shape the groups
and the loss. Batch size, learning rate, epochs and the rest are the trainer's arguments."""


@dataclass
class TrainingData:
    """What ``SentenceTransformerTrainer`` takes to train as ``synthrank train`` does
    (:func:`training_dataset`)."""

    dataset: Dataset
    """One row per training group: ``query`` (str), ``passage_0`` .. ``passage_{G-1}`` (str,
    G = ``group_size``, highest grade first, or the teacher's best first) and ``label`` (G
    floats: the grades, or the teacher target's weights over the group)."""
    loss: GroupLoss
    """The loss module of the ``loss`` setting, on :attr:`model`."""
    model: SentenceTransformer
    """The encoder the loss wraps: give the trainer this one."""
    groups: list[TrainingGroup]
    report: AssemblyReport
    """What became of every judged query of the sources."""


def training_dataset(
    data: DataSources | TrainConfig,
    model: str | SentenceTransformer | None = None,
    **settings: Any,
) -> TrainingData:
    """The training groups of ``data`` as the ``datasets.Dataset`` and the synthrank loss that
    ``sentence_transformers.SentenceTransformerTrainer`` takes, built as :func:`train` builds
    them (it trains on exactly these), for a notebook that drives the trainer itself.

    ``data``: data sources as ``synthrank train --data`` takes them (``"runs/gen/scifact"``,
    ``"beir:scifact,split=train,relabel=1:3,bm25=2:1"``, a ``Path``, a :class:`SourceSpec`, or
    a list of these; :class:`~synthrank.train.data.SourceSpec` parses them), or a
    :class:`TrainConfig` whose data and settings are used. ``model``: the encoder to train, a
    loaded ``SentenceTransformer`` or what :func:`~synthrank.evaluate.models.load_model` takes
    (``"minilm"``, a folder), loaded at ``max_length`` tokens; None: ``base_model``.
    ``settings``: any of :data:`DATASET_SETTINGS`, with :class:`TrainConfig`'s names and defaults
    (``loss="kl"``, ``group_size=8``, ``target_temperature=0.5``); a temperature left at None
    is the encoder's (:func:`~synthrank.train.encoder_defaults.encoder_default`: 0.05 score,
    0.25 target for an encoder that normalises its embeddings).

    Groups follow :func:`~synthrank.train.data.assemble_groups` (SyCL, arXiv 2503.23239: one
    passage per relevance level, then random ones), with teacher targets mixed in when
    ``teacher_weight`` is set (:func:`with_teacher_targets`). Train with
    ``dataloader_drop_last=True`` as :func:`train` does: the list-wise losses compare the
    passages of the whole batch and every step should see ``batch_size`` groups.

    Raises :class:`SettingError` naming a setting that is not one of :data:`DATASET_SETTINGS`
    or whose value is wrong, and :class:`SynthrankError` for a source that does not parse or
    read, or data that form no group (with the reasons).
    """
    from datasets import Dataset

    from synthrank.evaluate.models import load_model

    unknown = sorted(set(settings) - set(DATASET_SETTINGS))
    if unknown:
        raise SettingError(
            unknown[0],
            f"is not a setting of the training data: give it to the trainer "
            f"(SentenceTransformerTrainingArguments); the data take {', '.join(DATASET_SETTINGS)}",
        )
    if isinstance(data, TrainConfig):
        config = replace(data, **settings)
    else:
        # The output folder is the trainer's business: no folder is read or written here.
        config = TrainConfig(data=parse_sources(data), out=Path("."), **settings)
    config.validate()
    if model is None or isinstance(model, str):
        model = load_model(model or config.base_model, max_length=config.max_length)
    config = _with_encoder_defaults(config, model)
    groups, report = assemble_groups(
        config.data,
        config.group_size,
        strategy=config.group_strategy,
        binary_threshold=config.binary_threshold,
        teacher_mask=config.teacher_mask,
        seed=config.seed,
    )
    teacher = config.teacher_weight is not None
    if teacher:
        groups = with_teacher_targets(groups, config)
    columns: dict[str, list] = {"query": [g.query for g in groups]}
    for j in range(config.group_size):
        columns[f"passage_{j}"] = [g.passages[j] for g in groups]
    columns["label"] = [list(g.labels) for g in groups]
    loss_class = LOSSES[config.loss]
    loss: GroupLoss
    if issubclass(loss_class, ListwiseLoss):
        loss = loss_class(
            model,
            config.temperature,
            "given" if teacher else config.target,
            config.target_temperature,
            # Other queries' passages have no teacher score: the target stays in each group.
            "group" if teacher else config.target_scope,
            config.mini_batch_size,
            config.learn_temperature,
        )
    else:
        loss = loss_class(
            model, config.temperature, config.mini_batch_size, config.learn_temperature
        )
    return TrainingData(Dataset.from_dict(columns), loss, model, groups, report)


def _log_callback(path: Path, resumed_step: int):
    from transformers import TrainerCallback

    if path.is_file() and int(os.environ.get("RANK", "0")) == 0:
        kept = [
            line
            for line in read_text(path).splitlines()
            if line.strip() and json.loads(line)["step"] <= resumed_step
        ]
        path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    started = time.time()

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            record = {
                "step": state.global_step,
                "epoch": logs.get("epoch", state.epoch),
                "loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "seconds": round(time.time() - started, 3),
            }
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    return JsonlLog()


def _warmup_argument(share: float) -> dict[str, float]:
    """transformers 5 takes the warmup share as a float ``warmup_steps``; 4 as ``warmup_ratio``."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": share}
    return {"warmup_ratio": share}


LOSS_STATE = "synthrank_loss.json"


def _load_loss_state(loss: Any, checkpoint: Path) -> None:
    """Restore the learned temperature saved beside a checkpoint (the trainer saves only the
    encoder and the optimizer)."""
    import torch

    path = checkpoint / LOSS_STATE
    if not path.is_file():
        raise SynthrankError(
            f"{checkpoint} has no learned temperature ({LOSS_STATE}): it was trained without "
            "--learn-temperature; resume with the settings it was started with"
        )
    state = json.loads(read_text(path))
    with torch.no_grad():
        loss.log_temperature.fill_(state["log_temperature"])


def _loss_state_callback(loss: Any):
    """Writes the learned temperature into each checkpoint folder, for ``--resume``."""
    from transformers import TrainerCallback

    class LossState(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                value = float(loss.log_temperature.detach())
                write_json_atomic(folder / LOSS_STATE, {"log_temperature": value})

    return LossState()


def _save_interval_callback():
    """Makes a resumed run save every ``save_steps`` of its own: the trainer restores the
    interval of the checkpoint it resumes from (with a warning), though ``save_steps`` is one
    of :data:`CHANGEABLE_ON_RESUME`."""
    from transformers import TrainerCallback

    class SaveInterval(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            state.save_steps = args.save_steps

    return SaveInterval()


def _checkpointing_argument() -> str:
    """The training argument that turns activation (gradient) checkpointing on: transformers 5
    renamed ``gradient_checkpointing`` to ``activation_checkpointing``."""
    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else ("gradient_checkpointing")
    )


TRAINER_STATE = "trainer_state.json"
"""What the trainer writes last into a checkpoint folder: a folder without it, readable, was cut
short while it was saved (a kill, an out-of-memory, a full disk)."""

RUN_SETTINGS = "run_settings.json"
"""In ``checkpoints/``: the settings that define the run its checkpoints belong to, written
before the first step and compared by ``resume`` with its own."""

INCOMPLETE = "incomplete"
"""The folder of ``checkpoints/`` that incomplete checkpoints are moved to (out of the trainer's
sight, kept for a look): ``checkpoints/incomplete/checkpoint-N``."""

CHANGEABLE_ON_RESUME = (
    "epochs",
    "max_steps",
    "save_steps",
    "mini_batch_size",
    "gradient_checkpointing",
    "dataloader_workers",
)
"""The settings a resumed run may change: its length (extending ``max_steps`` or ``epochs`` as
Hugging Face trainer users do; the learning-rate schedule stretches from the resumed step on),
how often it saves, and the memory and speed settings that compute the same steps (cached
gradients equal full-batch ones; activation checkpointing recomputes the same activations).
Every other setting, and the content of the training groups, defines the run."""


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("checkpoint-"))


def checkpoint_folders(checkpoints: Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``checkpoints``, complete or not, by step."""
    found = [
        p
        for p in checkpoints.glob("checkpoint-*")
        if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()
    ]
    return sorted(found, key=_step)


def _incompleteness(checkpoint: Path, *, learned_temperature: bool = False) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None: it is complete). The trainer writes
    its state last, and the learned temperature (:data:`LOSS_STATE`) comes after it."""
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE}"
    try:
        json.loads(read_text(state))
    except (OSError, ValueError):
        return f"{TRAINER_STATE} unreadable"
    if learned_temperature and not (checkpoint / LOSS_STATE).is_file():
        return f"no {LOSS_STATE}"
    return None


def last_checkpoint(checkpoints: Path, *, learned_temperature: bool = False) -> Path | None:
    """The complete checkpoint folder with the highest step, if any."""
    complete = [
        p
        for p in checkpoint_folders(checkpoints)
        if _incompleteness(p, learned_temperature=learned_temperature) is None
    ]
    return complete[-1] if complete else None


def _raise_if_disk_full(exc: Exception, folder: Path) -> None:
    """A write that failed for want of space or permission while saving (an OSError, or
    safetensors' own error, which is none) as one :class:`SynthrankError` naming ``folder``."""
    from synthrank.fileio import WRITE_ERRNOS, write_error

    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        reason = write_error(exc)
    elif type(exc).__name__ == "SafetensorError" and "os error" in str(exc):
        reason = str(exc).rsplit("I/O error: ", 1)[-1]
    else:
        return
    good = last_checkpoint(folder if folder.name == "checkpoints" else folder / "checkpoints")
    raise SynthrankError(
        f"cannot save in {folder}: {reason}; complete checkpoints are kept (last: "
        f"{good.name if good else 'none'}): free space and run the same command with --resume"
    ) from exc


def with_teacher_targets(groups: list[TrainingGroup], config: TrainConfig) -> list[TrainingGroup]:
    """``groups`` with their labels replaced by the target over each group's passages that
    mixes the teacher's scores and the grades (:func:`~synthrank.train.losses.teacher_target`,
    at ``config.teacher_weight``; the grades' part is ``config.target`` at its temperature)."""
    import torch

    from synthrank.train.losses import teacher_target

    assert config.teacher_weight is not None and config.target_temperature is not None
    grades = torch.tensor([list(g.labels) for g in groups], dtype=torch.float64)
    scores = torch.tensor([list(g.teacher_scores) for g in groups], dtype=torch.float64)
    target = teacher_target(
        grades,
        scores,
        weight=config.teacher_weight,
        teacher_temperature=config.teacher_temperature,
        kind=config.target,
        temperature=config.target_temperature,
    )
    return [replace(g, labels=tuple(row)) for g, row in zip(groups, target.tolist(), strict=True)]


def _groups_digest(groups: list[TrainingGroup]) -> str:
    """The identity of the training data's content: a hash of every group's query, passages,
    labels and teacher scores, in training order."""
    rows = [[g.query, list(g.passages), list(g.labels), list(g.teacher_scores)] for g in groups]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def _source_text(spec: SourceSpec) -> str:
    """``spec`` as a ``--data`` string."""
    parts = [spec.dataset, f"split={spec.split}"]
    if spec.relabel:
        parts.append("relabel=" + ";".join(f"{a}:{b}" for a, b in spec.relabel.items()))
    if spec.bm25_negatives:
        parts.append(f"bm25={spec.bm25_negatives}:{spec.bm25_label}")
    if spec.random_negatives:
        parts.append(f"random={spec.random_negatives}:{spec.random_label}")
    if spec.teacher:
        parts.append(f"teacher={spec.teacher}")
    return ",".join(parts)


def run_settings(config: TrainConfig, groups: list[TrainingGroup]) -> dict[str, Any]:
    """The settings that define a run (all but ``out``, :data:`CHANGEABLE_ON_RESUME` and an
    unused ``temperature_lr``, with the encoder defaults filled in), as JSON values: the loss
    first, then the data (its sources and the hash of the groups they gave), then the rest in
    :class:`TrainConfig` order."""
    settings: dict[str, Any] = {"base_model": config.base_model, "loss": config.loss}
    settings["data"] = {
        "sources": [_source_text(spec) for spec in config.data],
        "groups_sha256": _groups_digest(groups),
    }
    skipped = {"data", "out", *settings, *CHANGEABLE_ON_RESUME}
    if not config.learn_temperature:
        skipped.add("temperature_lr")
    for f in fields(TrainConfig):
        if f.name not in skipped:
            settings[f.name] = getattr(config, f.name)
    return json.loads(json.dumps(settings))


def _setting_text(key: str, value: Any, other: Any) -> str:
    if key == "data":
        text = " + ".join(value["sources"])
        if value["sources"] == other["sources"]:
            text += f" (groups sha256 {value['groups_sha256'][:12]})"
        return f"data {text}"
    return f"{key} {'unset' if value is None else value}"


def check_same_run(checkpoints: Path, settings: dict[str, Any]) -> bool:
    """Whether the checkpoints in ``checkpoints`` were made with ``settings`` (False: they
    have no record of theirs, as made by an older synthrank); a one-line
    :class:`SynthrankError` naming every setting that differs, the first first, when they were
    not. The data differ when their groups do, whatever their sources are called."""
    path = checkpoints / RUN_SETTINGS
    if not path.is_file():
        return False
    recorded = json.loads(read_text(path))

    def differs(key: str) -> bool:
        if key == "data":
            return recorded["data"]["groups_sha256"] != settings["data"]["groups_sha256"]
        return recorded.get(key) != settings[key]

    changed = [key for key in settings if differs(key)]
    if changed:
        before = ", ".join(_setting_text(k, recorded.get(k), settings[k]) for k in changed)
        now = ", ".join(_setting_text(k, settings[k], recorded.get(k)) for k in changed)
        raise SynthrankError(
            f"checkpoints in {checkpoints.parent} were made with {before}; now {now}: run "
            "without --resume, or with the same settings"
        )
    return True


def _resume_point(
    checkpoints: Path,
    settings: dict[str, Any],
    *,
    resume: bool,
    learned_temperature: bool,
    log: Callable[[str], None],
) -> Path | None:
    """The checkpoint to continue from (None: start at step 0), ``checkpoints`` made ready.

    Resuming checks the checkpoints' settings (:func:`check_same_run`), moves incomplete
    checkpoints to ``checkpoints/incomplete/`` and continues from the last complete one, or
    from step 0 when none is left. Starting over removes an earlier run's checkpoints, which
    the trainer would otherwise mix with this run's. Either way, this run's settings are
    recorded before its first checkpoint."""
    folders = checkpoint_folders(checkpoints)
    main_process = int(os.environ.get("RANK", "0")) == 0
    resume_from = None
    if resume:
        if not folders:
            raise SynthrankError(f"--resume: no checkpoint in {checkpoints}; run without --resume")
        if not check_same_run(checkpoints, settings) and main_process:
            log(
                f"checkpoints in {checkpoints.parent} have no record of their settings "
                f"({RUN_SETTINGS}: made by an older synthrank): resuming without checking them"
            )
        reasons = {p: _incompleteness(p, learned_temperature=learned_temperature) for p in folders}
        resume_from = last_checkpoint(checkpoints, learned_temperature=learned_temperature)
        incomplete = [p for p, reason in reasons.items() if reason is not None]
        if incomplete and main_process:
            aside = checkpoints / INCOMPLETE
            aside.mkdir(exist_ok=True)
            for folder in incomplete:
                shutil.rmtree(aside / folder.name, ignore_errors=True)
                folder.rename(aside / folder.name)
            what = "; ".join(f"{p.name} is incomplete ({reasons[p]})" for p in incomplete)
            then = (
                f"resuming from {resume_from.name}"
                if resume_from is not None
                else "no complete checkpoint is left: starting from step 0"
            )
            log(f"{what}: set aside in {aside}, {then}")
    elif folders and main_process:
        for folder in folders:
            shutil.rmtree(folder)
        names = ", ".join(p.name for p in folders)
        log(f"starting over: removed {names} of an earlier run from {checkpoints}")
    if resume_from is None and main_process:
        write_json_atomic(checkpoints / RUN_SETTINGS, settings)
    return resume_from


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Assemble groups from ``config.data``, train ``config.base_model`` with ``config.loss``,
    save a sentence-transformers folder in ``config.out``. With ``resume``, continue from the
    last complete checkpoint in ``config.out/checkpoints``, which must have been made with the
    same settings but those of :data:`CHANGEABLE_ON_RESUME`; else start over.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects; ``log`` gets the lines
    that say what became of the checkpoints already there. A second training into the same
    ``config.out`` is refused while this one runs (:class:`~synthrank.fileio.FolderLock`; under
    torchrun, rank 0 holds it)."""
    config.validate()
    check_hardware(config)
    with contextlib.ExitStack() as held:
        if int(os.environ.get("RANK", "0")) == 0:
            held.enter_context(FolderLock(config.out))
        return _train(config, resume, progress, callbacks, log)


def _train(
    config: TrainConfig,
    resume: bool,
    progress: bool,
    callbacks: list | None,
    log: Callable[[str], None],
) -> TrainResult:
    import torch
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from synthrank.evaluate.models import load_model

    timings: dict[str, float] = {}
    model = load_model(config.base_model, max_length=config.max_length)
    config = _with_encoder_defaults(config, model)
    tick = time.perf_counter()
    training = training_dataset(config, model)
    timings["assemble_data"] = time.perf_counter() - tick
    groups, report, loss = training.groups, training.report, training.loss
    report.dropped_per_epoch = _check_one_batch(
        len(groups), config.batch_size, int(os.environ.get("WORLD_SIZE", "1"))
    )
    temperature = config.temperature

    out = Path(config.out)
    checkpoints = out / "checkpoints"
    resume_from = _resume_point(
        checkpoints,
        run_settings(config, groups),
        resume=resume,
        learned_temperature=config.learn_temperature,
        log=log,
    )
    resumed_step = _step(resume_from) if resume_from else 0
    out.mkdir(parents=True, exist_ok=True)
    extra_args: dict[str, Any] = {}
    if config.learn_temperature:
        extra_args["learning_rate_mapping"] = {r"^log_temperature$": config.temperature_lr}
        if resume_from is not None:
            _load_loss_state(loss, resume_from)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        **_warmup_argument(config.warmup),
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        dataloader_drop_last=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        disable_tqdm=not progress,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        **{_checkpointing_argument(): config.gradient_checkpointing},
        deepspeed=config.deepspeed,
        dataloader_num_workers=config.dataloader_workers,
        **extra_args,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=training.dataset,
        loss=loss,
        callbacks=[
            _log_callback(out / "train_log.jsonl", resumed_step),
            *([_loss_state_callback(loss)] if config.learn_temperature else []),
            *([_save_interval_callback()] if resume_from is not None else []),
            *(callbacks or []),
        ],
    )
    if not progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    tick = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteLossError as exc:
        good = last_checkpoint(checkpoints, learned_temperature=config.learn_temperature)
        raise SynthrankError(
            f"training stopped at step {trainer.state.global_step + 1}: {exc}; "
            f"last good checkpoint: {good or 'none'}; lower --lr or raise --temperature"
        ) from exc
    except Exception as exc:
        _raise_if_disk_full(exc, checkpoints)
        raise
    timings["train"] = time.perf_counter() - tick
    try:
        trainer.save_model(str(out))
    except Exception as exc:
        _raise_if_disk_full(exc, out)
        raise
    result = TrainResult(
        out,
        trainer.state.global_step,
        _mean_logged_loss(trainer.state.log_history),
        loss.temperature_value,
        report,
        timings,
        initial_temperature=temperature,
    )
    if trainer.is_world_process_zero():
        _write_summary(config, result)
    return result


def _scores_named(config: TrainConfig) -> str:
    """Each source's teacher-scores folder with the teacher its ``meta.json`` names."""
    from synthrank.train.teacher import scores_meta

    named = []
    for spec in config.data:
        teacher = scores_meta(Path(str(spec.teacher))).get("teacher")
        named.append(f"{spec.teacher}" + (f" by {teacher}" if teacher else ""))
    return ", ".join(named)


def _group_rule(config: TrainConfig) -> str:
    """How each query's group was picked (:func:`~synthrank.train.data.assemble_groups`)."""
    if config.teacher_mask is not None:
        return "the teacher's best passage and its hardest negatives below the mask"
    if all(spec.teacher for spec in config.data):
        return "the teacher's best passage, one of each other grade, then at random"
    if config.binary_threshold is not None:
        return f"binary at level >= {config.binary_threshold}"
    return config.group_strategy


def _write_summary(config: TrainConfig, result: TrainResult) -> None:
    settings = asdict(config)
    settings["out"] = str(config.out)
    settings["temperature"] = result.temperature
    settings["initial_temperature"] = result.initial_temperature
    summary = {
        "config": settings,
        "steps": result.steps,
        "mean_training_loss": result.final_loss,
        "data": {
            "queries": result.report.queries,
            "used": result.report.used,
            "skipped": dict(result.report.skipped),
            "dropped_per_epoch": result.report.dropped_per_epoch,
        },
        "timings": result.timings,
    }
    (config.out / "synthrank_train.json").write_text(json.dumps(summary, indent=2) + "\n")
    card = config.out / "README.md"
    lines = [
        "",
        "## Trained with synthrank",
        "",
        f"- loss: `{config.loss}` (score temperature {result.temperature:.4g}"
        + (f", learned from {result.initial_temperature}" if config.learn_temperature else "")
        + (
            f", target `{config.target}` at temperature {config.target_temperature}, "
            f"scope {config.target_scope})"
            if config.loss != "infonce"
            else ")"
        ),
        *(
            [
                f"- teacher target: {config.teacher_weight:g} x softmax(teacher score / "
                f"{config.teacher_temperature:g}) + {1 - config.teacher_weight:g} x the grades' "
                f"target, over each query's own passages (scores: {_scores_named(config)})"
            ]
            if config.teacher_weight is not None
            else []
        ),
        *(
            [
                f"- teacher mask: the positive is the teacher's best passage, the negatives those "
                f"it scores below {config.teacher_mask:g} x the positive's score, hardest first "
                f"(scores: {_scores_named(config)})"
            ]
            if config.teacher_mask is not None
            else []
        ),
        f"- base model: `{config.base_model}`, max length {config.max_length}",
        f"- data: {', '.join(s.dataset + ' (' + s.split + ')' for s in config.data)}; "
        f"{result.report.used} of {result.report.queries} queries, groups of {config.group_size} "
        f"({_group_rule(config)})",
        f"- batch {config.batch_size}, lr {config.lr}, epochs {config.epochs}, warmup "
        f"{config.warmup}, seed {config.seed}, {result.step_count}",
        f"- precision {config.precision}"
        + (", gradient checkpointing" if config.gradient_checkpointing else "")
        + (f", DeepSpeed config {config.deepspeed}" if config.deepspeed else ""),
        "",
    ]
    with card.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
