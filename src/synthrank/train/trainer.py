"""Train a bi-encoder on graded groups with sentence-transformers' trainer.

The trainer is ``SentenceTransformerTrainer`` (a Hugging Face ``Trainer``), so
``torchrun --nproc_per_node N -m synthrank.cli train ...`` and ``accelerate launch`` scale it out;
the loss modules gather the global batch across processes. The output folder is a standard
sentence-transformers model with its model card, plus ``train_log.jsonl`` (one line per step:
loss, learning rate, time), ``synthrank_train.json`` (the full configuration and the data report)
and ``checkpoints/`` (for ``resume``).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.fileio import read_text, write_json_atomic
from synthrank.train.data import (
    GROUP_STRATEGIES,
    AssemblyReport,
    GroupStrategy,
    SourceSpec,
    TrainingGroup,
    assemble_groups,
)
from synthrank.train.losses import TARGET_KINDS, TargetKind
from synthrank.train.modules import LOSSES, TARGET_SCOPES, ListwiseLoss, NonFiniteLossError

COSINE_TEMPERATURE = 0.05
"""Score temperature for encoders that normalise their embeddings (cosine scores in [-1, 1]),
where softmax(cos / 1.0) is nearly flat; the paper's 1.0 suits Contriever's dot products."""

COSINE_TARGET_TEMPERATURE = 0.25
"""Target temperature for normalised encoders. With cosine scores at temperature 0.05 the
released target softmax(labels) (t = 1) puts most of its mass on other queries' passages and
minilm collapsed on SciFact (nDCG@10 0.6451 -> 0.2881); with t = 0.25 ws2 reached 0.6846
(InfoNCE 0.6836) on the same lists (README, "List-wise targets")."""

COSINE_LR = 1e-4
"""Peak learning rate for normalised encoders. The paper's 1e-5 is for 500K queries; a one-epoch
fine-tune of minilm on SciFact's 809 train queries (50 steps) barely moves at it. nDCG@10 on
SciFact test at 2e-5 / 5e-5 / 1e-4: ws2 0.6846 / 0.6978 / 0.7126, w1 0.6778 / 0.6907 / 0.6934
(seed 1 at 1e-4: 0.7020, 0.6775; w1 at 2e-4: 0.6848); README, "List-wise targets"."""

ENCODER_DEFAULTS: dict[str, tuple[float, float]] = {
    "temperature": (COSINE_TEMPERATURE, 1.0),
    "target_temperature": (COSINE_TARGET_TEMPERATURE, 1.0),
    "lr": (COSINE_LR, 1e-5),
}
"""Settings left at None: (value for encoders that end in a Normalize layer, the paper's value
for dot-product encoders such as Contriever)."""


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
    out: Path
    base_model: str = "minilm"
    loss: str = "ws2"
    batch_size: int = 16
    group_size: int = 4
    group_strategy: GroupStrategy = "one-per-level"
    binary_threshold: int | None = None
    lr: float | None = None
    """Peak learning rate; None: :data:`COSINE_LR` for encoders that end in a Normalize layer,
    else 1e-5 (the paper's)."""
    epochs: float = 1.0
    warmup: float = 0.05
    max_length: int = 256
    temperature: float | None = None
    learn_temperature: bool = False
    temperature_lr: float = 1e-2
    """Learning rate of the log score temperature when it is learned (the encoder's ``lr`` is
    far too small to move it within one short run)."""
    target: TargetKind = "softmax"
    target_temperature: float | None = None
    """t of the softmax target; None: :data:`COSINE_TARGET_TEMPERATURE` for encoders that end
    in a Normalize layer, else 1.0 (the released value)."""
    target_scope: str = "batch"
    mini_batch_size: int | None = None
    seed: int = 0
    save_steps: int = 50
    max_steps: int = -1
    precision: str = "fp32"
    """``fp32``, ``bf16`` (a GPU with bf16, or a CPU with AVX512-BF16 or AMX) or ``fp16`` (a GPU):
    the encoder runs under autocast; scores and the losses stay in float32 / float64."""
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    """A DeepSpeed JSON config, passed to the trainer (GPU machines, ``pip install deepspeed``)."""
    dataloader_workers: int = 0

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise SynthrankError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise SynthrankError(f"mini_batch_size must be positive (got {self.mini_batch_size})")
        for name in ("batch_size", "group_size", "max_length", "save_steps"):
            if getattr(self, name) < 1:
                raise SynthrankError(
                    f"{name} must be a positive integer (got {getattr(self, name)})"
                )
        if self.group_size == 1 and self.loss != "infonce":
            raise SynthrankError(
                f"group_size 1 ((query, positive) pairs, in-batch negatives only) trains with "
                f"infonce; {self.loss} compares the grades of a list: use group_size >= 2"
            )
        if self.epochs <= 0:
            raise SynthrankError(f"epochs must be positive (got {self.epochs})")
        if not 0.0 <= self.warmup < 1.0:
            raise SynthrankError(f"warmup is a fraction of the steps in [0, 1) (got {self.warmup})")
        if (self.lr is not None and self.lr <= 0) or (
            self.temperature is not None and self.temperature <= 0
        ):
            raise SynthrankError("lr and temperature must be positive")
        if self.target_temperature is not None and self.target_temperature <= 0:
            raise SynthrankError(
                f"target_temperature must be positive (got {self.target_temperature})"
            )
        if self.learn_temperature and self.temperature_lr <= 0:
            raise SynthrankError(f"temperature_lr must be positive (got {self.temperature_lr})")
        if self.learn_temperature and self.mini_batch_size is not None:
            raise SynthrankError(
                "learn_temperature needs full-batch training: drop mini_batch_size"
            )
        if not self.data:
            raise SynthrankError("give at least one training data source (--data)")
        if self.dataloader_workers < 0:
            raise SynthrankError(f"dataloader_workers must be >= 0 (got {self.dataloader_workers})")
        choices = {
            "precision": PRECISIONS,
            "target": TARGET_KINDS,
            "target_scope": TARGET_SCOPES,
            "group_strategy": GROUP_STRATEGIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SynthrankError(
                    f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})"
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


def _ends_with_normalize(model: Any) -> bool:
    return type(list(model.children())[-1]).__name__ == "Normalize"


def _with_encoder_defaults(config: TrainConfig, *, normalized: bool) -> TrainConfig:
    """``config`` with each :data:`ENCODER_DEFAULTS` setting left at None filled in."""
    filled = {
        name: values[0 if normalized else 1]
        for name, values in ENCODER_DEFAULTS.items()
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


def _groups_to_dataset(groups: list[TrainingGroup], group_size: int):
    from datasets import Dataset

    columns: dict[str, list] = {"query": [g.query for g in groups]}
    for j in range(group_size):
        columns[f"passage_{j}"] = [g.passages[j] for g in groups]
    columns["label"] = [list(g.labels) for g in groups]
    return Dataset.from_dict(columns)


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


def _checkpointing_argument() -> str:
    """The training argument that turns activation (gradient) checkpointing on: transformers 5
    renamed ``gradient_checkpointing`` to ``activation_checkpointing``."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else ("gradient_checkpointing")
    )


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint folder with the highest step, if any."""
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """Assemble groups from ``config.data``, train ``config.base_model`` with ``config.loss``,
    save a sentence-transformers folder in ``config.out``. With ``resume``, continue from the
    last checkpoint in ``config.out/checkpoints`` (same config), else start over.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects."""
    config.validate()
    check_hardware(config)
    import torch
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from synthrank.evaluate.models import load_model

    timings: dict[str, float] = {}
    tick = time.perf_counter()
    groups, report = assemble_groups(
        config.data,
        config.group_size,
        strategy=config.group_strategy,
        binary_threshold=config.binary_threshold,
        seed=config.seed,
    )
    timings["assemble_data"] = time.perf_counter() - tick
    report.dropped_per_epoch = _check_one_batch(
        len(groups), config.batch_size, int(os.environ.get("WORLD_SIZE", "1"))
    )

    model = load_model(config.base_model, max_length=config.max_length)
    config = _with_encoder_defaults(config, normalized=_ends_with_normalize(model))
    temperature = config.temperature
    loss_class = LOSSES[config.loss]
    if issubclass(loss_class, ListwiseLoss):
        loss = loss_class(
            model,
            temperature,
            config.target,
            config.target_temperature,
            config.target_scope,
            config.mini_batch_size,
            config.learn_temperature,
        )
    else:
        loss = loss_class(model, temperature, config.mini_batch_size, config.learn_temperature)

    out = Path(config.out)
    checkpoints = out / "checkpoints"
    resume_from = last_checkpoint(checkpoints) if resume else None
    if resume and resume_from is None:
        raise SynthrankError(f"--resume: no checkpoint in {checkpoints}; run without --resume")
    resumed_step = int(resume_from.name.split("-")[-1]) if resume_from else 0
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
        train_dataset=_groups_to_dataset(groups, config.group_size),
        loss=loss,
        callbacks=[
            _log_callback(out / "train_log.jsonl", resumed_step),
            *([_loss_state_callback(loss)] if config.learn_temperature else []),
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
        good = last_checkpoint(checkpoints)
        raise SynthrankError(
            f"training stopped at step {trainer.state.global_step + 1}: {exc}; "
            f"last good checkpoint: {good or 'none'}; lower --lr or raise --temperature"
        ) from exc
    timings["train"] = time.perf_counter() - tick
    trainer.save_model(str(out))
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
        f"- base model: `{config.base_model}`, max length {config.max_length}",
        f"- data: {', '.join(s.dataset + ' (' + s.split + ')' for s in config.data)}; "
        f"{result.report.used} of {result.report.queries} queries, groups of {config.group_size} "
        f"({config.group_strategy}"
        + (f", binary at level >= {config.binary_threshold})" if config.binary_threshold else ")"),
        f"- batch {config.batch_size}, lr {config.lr}, epochs {config.epochs}, warmup "
        f"{config.warmup}, seed {config.seed}, {result.steps} steps",
        f"- precision {config.precision}"
        + (", gradient checkpointing" if config.gradient_checkpointing else "")
        + (f", DeepSpeed config {config.deepspeed}" if config.deepspeed else ""),
        "",
    ]
    with card.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
