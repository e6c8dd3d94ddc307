"""Loss modules for sentence-transformers' trainer, one per loss of :mod:`synthrank.train.losses`.

Inputs follow the sentence-transformers contract: ``forward(sentence_features, labels)`` where
``sentence_features`` is ``[query, passage_1, ..., passage_G]`` (one tokenized batch per column)
and ``labels`` is ``[B, G]``, the graded level of each query's passages. Scores are dot products
of the model's embeddings (cosine for models that end in a Normalize layer, like MiniLM).

Under ``torchrun``/``accelerate`` the queries, passages and labels of every process are gathered,
so each loss call sees the global batch (other processes' passages are in-batch negatives too),
as the method trains. Gradients flow through this process's own embeddings; the loss is scaled
so that DDP's gradient averaging yields exactly the gradient of the global-batch loss.

A score or target temperature left at None is the encoder's default
(:func:`synthrank.train.encoder_defaults.encoder_default`: 0.05 and 0.25 for an encoder that
normalises its embeddings, the paper's 1.0 and 1.0 for a dot-product one), as ``synthrank train``
picks it.

A new loss is a subclass with a ``name``: it registers itself in :data:`LOSSES`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from synthrank.train import losses as F
from synthrank.train.encoder_defaults import encoder_default

LOSSES: dict[str, type[GroupLoss]] = {}
TARGET_SCOPES: tuple[str, ...] = ("batch", "group")

SYCL_CITATION = """@inproceedings{esfandiarpoor2025beyond,
  title={Beyond Contrastive Learning: Synthetic Data Enables List-wise Training with Multiple
         Levels of Relevance},
  author={Esfandiarpoor, Reza and Zerveas, George and Zhang, Ruochen and Mgonzo, Macton and
          Eickhoff, Carsten and Bach, Stephen H.},
  booktitle={Findings of EMNLP},
  year={2025},
  note={arXiv:2503.23239}
}"""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training must stop."""


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0; this process's slice keeps its
    gradient. Identity when not distributed."""
    rank, world = _world()
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(parts, tensor.detach().contiguous())
    parts[rank] = tensor
    return torch.cat(parts, dim=0)


def scale_for_data_parallel(loss: torch.Tensor) -> torch.Tensor:
    """Same value, gradient times the world size: every process computes the global loss but
    back-propagates only through its own embeddings, and DDP then averages the gradients."""
    _, world = _world()
    if world == 1:
        return loss
    return loss * world - loss.detach() * (world - 1)


def _split_features(features: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Row slices of a tokenized batch; values that are not per-row tensors are shared."""
    rows = len(features["input_ids"])
    return [
        {
            key: value[start : start + size]
            if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == rows
            else value
            for key, value in features.items()
        }
        for start in range(0, rows, size)
    ]


class _RngState:
    """The CPU and CUDA random states at creation, to replay a forward pass with the same
    dropout masks."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    @contextmanager
    def restored(self):
        devices = list(range(torch.cuda.device_count())) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


class GroupLoss(nn.Module):
    """Base of the group losses: embeds queries and passages, scores every query against every
    passage of the (global) batch, and applies :meth:`compute` to the ``[B, B*G]`` scores and
    block-diagonal labels."""

    name: ClassVar[str] = ""
    citation: ClassVar[str] = SYCL_CITATION

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            LOSSES[cls.name] = cls

    def __init__(
        self,
        model: nn.Module,
        temperature: float | None = None,
        mini_batch_size: int | None = None,
        learn_temperature: bool = False,
    ) -> None:
        super().__init__()
        if temperature is None:
            temperature = encoder_default("temperature", model)
        self.model = model
        self.mini_batch_size = mini_batch_size
        if learn_temperature and mini_batch_size is not None:
            raise ValueError(
                "a learnable temperature needs full-batch training (no mini_batch_size)"
            )
        self._temperature = temperature
        # Learned in log space (as CLIP learns its logit scale), so it stays positive.
        self.log_temperature = (
            nn.Parameter(torch.tensor(math.log(temperature))) if learn_temperature else None
        )

    @property
    def temperature(self) -> float | torch.Tensor:
        """The score temperature: a fixed number, or ``exp(log_temperature)`` when learned."""
        if self.log_temperature is None:
            return self._temperature
        return self.log_temperature.exp()

    @property
    def temperature_value(self) -> float:
        if self.log_temperature is None:
            return float(self._temperature)
        return float(self.log_temperature.detach().exp())

    def compute(
        self, scores: torch.Tensor, labels: torch.Tensor, own_mask: torch.Tensor
    ) -> torch.Tensor:
        """The loss of ``[B, B*G]`` scores and labels; ``own_mask`` marks each query's group."""
        raise NotImplementedError

    def forward(
        self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor
    ) -> torch.Tensor:
        features = list(sentence_features)
        if self.mini_batch_size is not None:
            return self._cached_forward(features, labels)
        query = self.model(features[0])["sentence_embedding"]
        passages = torch.stack([self.model(f)["sentence_embedding"] for f in features[1:]], dim=1)
        return self.loss_from_embeddings(query, passages, labels)

    def _cached_forward(
        self, features: list[dict[str, torch.Tensor]], labels: torch.Tensor
    ) -> torch.Tensor:
        """GradCache (Gao et al., RepL4NLP 2021): embed in mini-batches without a graph, take
        the loss's gradient with respect to the embeddings, and replay each mini-batch with its
        RNG state (same dropout) during the trainer's backward to push that gradient into the
        model. Same gradient as the full batch; memory of one mini-batch."""
        if _world()[1] > 1:
            raise ValueError(
                "cached-gradient training (mini_batch_size) runs in one process; under torchrun "
                "raise the per-process batch size instead"
            )
        chunks = [_split_features(f, self.mini_batch_size) for f in features]
        states: list[list[_RngState]] = []
        embeddings = []
        with torch.no_grad():
            for column in chunks:
                states.append([])
                parts = []
                for chunk in column:
                    states[-1].append(_RngState())
                    parts.append(self.model(chunk)["sentence_embedding"])
                embeddings.append(torch.cat(parts).requires_grad_())
        with torch.enable_grad():
            loss = self.loss_from_embeddings(
                embeddings[0], torch.stack(embeddings[1:], dim=1), labels
            )
            gradients = torch.autograd.grad(loss, embeddings)
        result = loss.detach().requires_grad_()
        result.register_hook(lambda grad: self._replay(chunks, states, gradients, grad))
        return result

    def _replay(self, chunks, states, gradients, grad_output: torch.Tensor) -> None:
        for column, column_states, column_grad in zip(chunks, states, gradients, strict=True):
            offset = 0
            for chunk, state in zip(column, column_states, strict=True):
                with state.restored(), torch.enable_grad():
                    embedding = self.model(chunk)["sentence_embedding"]
                    size = len(embedding)
                    upstream = column_grad[offset : offset + size] * grad_output
                    (embedding * upstream).sum().backward()
                offset += size

    def loss_from_embeddings(
        self, query: torch.Tensor, passages: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """``query`` [B, d], ``passages`` [B, G, d], ``labels`` [B, G] -> scalar loss."""
        batch, group, dim = passages.shape
        all_queries = gather_with_grad(query)
        all_passages = gather_with_grad(passages.reshape(batch * group, dim))
        all_labels = gather_with_grad(labels.to(query.device))
        # Under bf16/fp16 autocast the encoder runs in half precision; scores are computed in
        # float32 (a bf16 cosine / 0.05 would be off by up to 0.08 in logits) and the losses in
        # float64, as without autocast.
        with torch.autocast(device_type=query.device.type, enabled=False):
            scores = all_queries.float() @ all_passages.float().T
            own_mask = F.own_group_mask(len(all_labels), group).to(scores.device)
            loss = self.compute(scores, F.expand_group_labels(all_labels), own_mask)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"{self.name} loss is {loss.item()}")
        return scale_for_data_parallel(loss.to(query.dtype))

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature_value,
            "learn_temperature": self.log_temperature is not None,
            "mini_batch_size": self.mini_batch_size,
        }


class ListwiseLoss(GroupLoss):
    """A group loss that compares score and target distributions (see
    :func:`synthrank.train.losses.target_distribution` for ``target`` and its temperature).

    ``target_scope="batch"`` (as released) spreads the target over every passage of the batch;
    ``"group"`` gives other queries' passages no target mass, so they act only as negatives in
    the score normalisation.
    """

    function: ClassVar[Any] = None

    def __init__(
        self,
        model: nn.Module,
        temperature: float | None = None,
        target: F.TargetKind = "softmax",
        target_temperature: float | None = None,
        target_scope: str = "batch",
        mini_batch_size: int | None = None,
        learn_temperature: bool = False,
    ) -> None:
        super().__init__(model, temperature, mini_batch_size, learn_temperature)
        if target not in F.TARGET_KINDS:
            raise ValueError(f"unknown target {target!r}; choose one of {F.TARGET_KINDS}")
        if target_scope not in TARGET_SCOPES:
            raise ValueError(f"unknown target scope {target_scope!r}; one of {TARGET_SCOPES}")
        self.target = target
        self.target_temperature = (
            encoder_default("target_temperature", model)
            if target_temperature is None
            else target_temperature
        )
        self.target_scope = target_scope

    def compute(
        self, scores: torch.Tensor, labels: torch.Tensor, own_mask: torch.Tensor
    ) -> torch.Tensor:
        return type(self).function(
            scores,
            labels,
            self.temperature,
            target=self.target,
            target_temperature=self.target_temperature,
            own_mask=own_mask if self.target_scope == "group" else None,
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            **super().get_config_dict(),
            "target": self.target,
            "target_temperature": self.target_temperature,
            "target_scope": self.target_scope,
        }


class WS2Loss(ListwiseLoss):
    """SyCL's batch-level 2-Wasserstein loss (:func:`synthrank.train.losses.ws2_loss`).

    Example::

        from sentence_transformers import SentenceTransformer
        from synthrank.train.modules import WS2Loss
        model = SentenceTransformer("path/to/encoder")
        loss = WS2Loss(model)  # temperatures 0.05 and 0.25 for a normalised encoder
    """

    name = "ws2"
    function = staticmethod(F.ws2_loss)


class W1Loss(ListwiseLoss):
    """Per-query Wasserstein-1 over relevance levels (:func:`synthrank.train.losses.w1_loss`)."""

    name = "w1"
    function = staticmethod(F.w1_loss)


class KLLoss(ListwiseLoss):
    """ListNet-style KL divergence to the target (:func:`synthrank.train.losses.kl_loss`)."""

    name = "kl"
    function = staticmethod(F.kl_loss)


class InfoNCELoss(GroupLoss):
    """InfoNCE with in-batch negatives (:func:`synthrank.train.losses.infonce_loss`); each
    query's highest-labelled passage is its positive, the rest of the batch its negatives."""

    name = "infonce"
    citation = """@article{oord2018representation,
  title={Representation Learning with Contrastive Predictive Coding},
  author={van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol},
  journal={arXiv preprint arXiv:1807.03748},
  year={2018}
}"""

    def compute(
        self, scores: torch.Tensor, labels: torch.Tensor, own_mask: torch.Tensor
    ) -> torch.Tensor:
        return F.infonce_loss(scores, labels, self.temperature)
