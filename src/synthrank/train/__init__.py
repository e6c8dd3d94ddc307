"""The train stage: list-wise (Wasserstein, KL) and contrastive (InfoNCE) training of bi-encoders
on graded groups, on sentence-transformers' trainer."""

from __future__ import annotations

from synthrank.train.data import AssemblyReport, SourceSpec, TrainingGroup, assemble_groups
from synthrank.train.losses import (
    expand_group_labels,
    gaussian_w2_squared,
    infonce_loss,
    kl_loss,
    target_distribution,
    w1_loss,
    ws2_loss,
)
from synthrank.train.modules import LOSSES, GroupLoss, InfoNCELoss, KLLoss, W1Loss, WS2Loss
from synthrank.train.trainer import TrainConfig, TrainingData, TrainResult, train, training_dataset

__all__ = [
    "LOSSES",
    "AssemblyReport",
    "GroupLoss",
    "InfoNCELoss",
    "KLLoss",
    "SourceSpec",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "TrainingGroup",
    "W1Loss",
    "WS2Loss",
    "assemble_groups",
    "expand_group_labels",
    "gaussian_w2_squared",
    "infonce_loss",
    "kl_loss",
    "target_distribution",
    "train",
    "training_dataset",
    "w1_loss",
    "ws2_loss",
]
