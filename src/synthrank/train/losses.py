"""List-wise and contrastive losses as pure functions of a score matrix and a label matrix.

Every function takes ``scores`` and ``labels``, both ``[B, N]``: row i scores query i against the
N passages of the whole batch (its own group and every other query's, the in-batch negatives);
``labels`` holds each passage's graded relevance to query i (0 for other queries' passages; see
:func:`expand_group_labels`). Each returns a scalar tensor.

Targets. The list-wise losses compare the model's distribution ``P = softmax(scores / tau)``
with a target distribution over the same N passages, built by :func:`target_distribution`:

- ``"softmax"`` (the released SyCL code): ``T = softmax(labels / t)``, ``t = 1`` as released.
  Every passage gets mass, level 0 and other queries' passages included.
- ``"gain"``: ``T_j = (2^l_j - 1) / sum_k (2^l_k - 1)``, the nDCG gain of each level, normalised;
  level 0 and other queries' passages get none.
- ``"given"``: the labels are the target's own weights (made before training, e.g. a teacher's
  distribution over each query's passages, :func:`teacher_target`): ``T_j = l_j / sum_k l_k``.

With ``own_mask`` (``[B, N]``, true where passage j belongs to query i's own group), other
queries' passages take part only in the score normalisation: the target gives them no mass.

Negative labels (TREC qrels grade spam or harmful documents -1 or -2) count as level 0 in every
target and in W1's levels, as trec_eval gives them no gain in nDCG.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

TargetKind = Literal["softmax", "gain", "given"]
TARGET_KINDS: tuple[str, ...] = ("softmax", "gain", "given")


def expand_group_labels(group_labels: torch.Tensor) -> torch.Tensor:
    """``[B, G]`` labels of each query's own group -> ``[B, B*G]`` block-diagonal labels.

    Passage ``j`` of query ``i`` sits at column ``i*G + j``; other queries' passages get 0.
    """
    return torch.block_diag(*group_labels.unbind(0))


def own_group_mask(batch: int, group: int) -> torch.Tensor:
    """``[B, B*G]`` mask, true on each query's own passages (the block diagonal)."""
    return torch.block_diag(*torch.ones(batch, 1, group)).bool()


def target_distribution(
    labels: torch.Tensor,
    kind: TargetKind = "softmax",
    temperature: float = 1.0,
    own_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The float64 target distribution of each row of ``labels`` (see the module docstring);
    negative labels count as 0.

    A ``"gain"`` (or ``"given"``) row with no passage above 0 has no target; it gets a uniform
    one (over its own passages when ``own_mask`` is given).
    """
    labels = labels.double().clamp_min(0.0)
    allowed = torch.ones_like(labels, dtype=torch.bool) if own_mask is None else own_mask
    if kind == "softmax":
        return F.softmax((labels / temperature).masked_fill(~allowed, float("-inf")), dim=1)
    if kind in ("gain", "given"):
        gains = (torch.exp2(labels) - 1.0 if kind == "gain" else labels) * allowed
        totals = gains.sum(dim=1, keepdim=True)
        uniform = allowed / allowed.sum(dim=1, keepdim=True)
        return torch.where(totals > 0, gains / totals.clamp_min(1e-300), uniform)
    raise ValueError(f"unknown target kind {kind!r}; choose one of {TARGET_KINDS}")


def teacher_target(
    grades: torch.Tensor,
    teacher_scores: torch.Tensor,
    *,
    weight: float,
    teacher_temperature: float,
    kind: TargetKind = "softmax",
    temperature: float = 1.0,
) -> torch.Tensor:
    """The float64 target over each query's own passages that mixes a teacher's distribution and
    the grades' (list-wise distillation of a stronger model's scores, as GPL and CADET distil a
    cross-encoder's): ``weight * softmax(s / teacher_temperature) + (1 - weight)
    * target_distribution(grades, kind, temperature)``, row by row. ``grades`` and
    ``teacher_scores`` are ``[B, G]`` (a query's own group); ``weight`` 1 is the teacher alone,
    0 the grades alone. The result is the ``"given"`` target of the list-wise losses."""
    teacher = F.softmax(teacher_scores.double() / teacher_temperature, dim=1)
    if weight >= 1.0:
        return teacher
    return weight * teacher + (1.0 - weight) * target_distribution(grades, kind, temperature)


def gaussian_w2_squared(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein (Fréchet) distance between Gaussians fitted to the rows of x, y.

    ``x, y``: ``[B, N]``, B samples in R^N. With means mu and covariances
    S = E^T E / (B - 1) (E the centred samples), the distance is
    ``||mu_x - mu_y||^2 + Tr(S_x) + Tr(S_y) - 2 Tr((S_x S_y)^(1/2))``. The last trace is the sum of
    the square roots of the eigenvalues of the small B x B matrix ``M M^T`` with
    ``M = C_x C_y^T``, ``C = E / sqrt(B - 1)`` (Mathiasen & Hvilshøj, arXiv 2009.14075), so no
    N x N matrix square root is formed; that is the sum of the singular values of M, which is how
    it is computed here. (The release takes ``sqrt(eigenvalue + 1e-15)``; centring always leaves
    M a zero eigenvalue, where that square root turns rounding noise into gradient noise.)
    Computed in float64.
    """
    x, y = x.double(), y.double()
    batch = x.shape[0]
    scale = 1.0 if batch < 2 else 1.0 / (batch - 1)
    centred_x = x - x.mean(dim=0, keepdim=True)
    centred_y = y - y.mean(dim=0, keepdim=True)
    mean_term = (x.mean(dim=0) - y.mean(dim=0)).pow(2).sum()
    trace_x = centred_x.pow(2).sum() * scale
    trace_y = centred_y.pow(2).sum() * scale
    cross = (centred_x @ centred_y.T) * scale
    sqrt_trace = torch.linalg.svdvals(cross).sum()
    return mean_term + trace_x + trace_y - 2.0 * sqrt_trace


def ws2_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    *,
    target: TargetKind = "softmax",
    target_temperature: float = 1.0,
    own_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SyCL's "ws2": :func:`gaussian_w2_squared` between the rows of
    ``softmax(scores / temperature)`` and of the target, one scalar for the whole batch.

    With the defaults (softmax target of the raw labels) it is the loss as released with
    arXiv 2503.23239.
    """
    predicted = F.softmax(scores.double() / temperature, dim=1)
    return gaussian_w2_squared(
        predicted, target_distribution(labels, target, target_temperature, own_mask)
    )


def w1_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    *,
    target: TargetKind = "softmax",
    target_temperature: float = 1.0,
    own_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-query 1-Wasserstein distance over relevance levels, averaged over queries.

    For query i, ``p_i(l)`` is the predicted mass ``softmax(scores_i / temperature)`` on the
    passages of level l, and ``t_i(l)`` the target's. With ground cost ``|l - l'|``, W1 in one
    dimension is ``sum_k (l_{k+1} - l_k) |F_p(l_k) - F_t(l_k)|`` over the sorted levels present
    in the batch, F the cumulative distributions. Exact, and defined for any batch size.
    Negative labels are level 0.
    """
    predicted = F.softmax(scores.double() / temperature, dim=1)
    goal = target_distribution(labels, target, target_temperature, own_mask)
    labels = labels.double().clamp_min(0.0)
    levels = torch.unique(labels)
    if len(levels) < 2:
        return scores.sum() * 0.0
    one_hot = (labels.unsqueeze(-1) == levels).double()  # [B, N, L]
    cdf_gap = (
        torch.einsum("bn,bnl->bl", predicted - goal, one_hot)[:, :-1].cumsum(dim=1).abs()
    )  # [B, L-1]
    return (cdf_gap * (levels[1:] - levels[:-1])).sum(dim=1).mean()


def infonce_loss(
    scores: torch.Tensor, labels: torch.Tensor, temperature: float | torch.Tensor = 0.05
) -> torch.Tensor:
    """InfoNCE: cross-entropy of ``softmax(scores / temperature)`` against each query's
    highest-labelled passage (the first one on ties); all other passages of the batch are
    negatives (van den Oord et al. 2018; Karpukhin et al. 2020's in-batch negatives)."""
    positives = labels.argmax(dim=1)
    return F.cross_entropy(scores / temperature, positives)


def kl_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    *,
    target: TargetKind = "softmax",
    target_temperature: float = 1.0,
    own_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """ListNet-style ``KL(T || P)`` per query, averaged: ``sum_j T_j (log T_j - log P_j)``
    (Cao et al. 2007), with ``P = softmax(scores / temperature)``."""
    log_predicted = F.log_softmax(scores.double() / temperature, dim=1)
    goal = target_distribution(labels, target, target_temperature, own_mask)
    return F.kl_div(log_predicted, goal, reduction="batchmean")
