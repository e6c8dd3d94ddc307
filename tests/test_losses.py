"""Each loss against an independent computation of its formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats

from synthrank.train.losses import (
    expand_group_labels,
    gaussian_w2_squared,
    infonce_loss,
    kl_loss,
    own_group_mask,
    target_distribution,
    w1_loss,
    ws2_loss,
)


def _batch(seed: int, batch: int = 4, group: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, batch * group, generator=generator, dtype=torch.float64)
    group_labels = torch.randint(0, 4, (batch, group), generator=generator)
    group_labels[:, 0] = 3
    return scores, expand_group_labels(group_labels)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _frechet_scipy(x: np.ndarray, y: np.ndarray) -> float:
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(cov_x @ cov_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * root))


def test_expand_group_labels() -> None:
    expanded = expand_group_labels(torch.tensor([[3, 1], [2, 0]]))
    assert expanded.tolist() == [[3, 1, 0, 0], [0, 0, 2, 0]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_ws2_matches_scipy_sqrtm(seed: int, temperature: float) -> None:
    scores, labels = _batch(seed)
    expected = _frechet_scipy(_softmax(scores.numpy() / temperature), _softmax(labels.numpy()))
    assert ws2_loss(scores, labels, temperature).item() == pytest.approx(expected, abs=1e-6)


def test_gaussian_w2_of_identical_samples_is_zero() -> None:
    x = torch.rand(6, 10, dtype=torch.float64)
    assert gaussian_w2_squared(x, x).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", ["softmax", "gain"])
def test_w1_matches_scipy_wasserstein_distance(seed: int, target: str) -> None:
    scores, labels = _batch(seed)
    temperature, target_temperature = 0.5, 0.7
    predicted = _softmax(scores.numpy() / temperature)
    goal = target_distribution(labels, target, target_temperature).numpy()
    levels = labels.numpy().astype(float)
    expected = np.mean(
        [
            stats.wasserstein_distance(levels[i], levels[i], predicted[i], goal[i])
            for i in range(len(levels))
        ]
    )
    ours = w1_loss(
        scores, labels, temperature, target=target, target_temperature=target_temperature
    )
    assert ours.item() == pytest.approx(expected, abs=1e-9)


def test_w1_hand_computed() -> None:
    # one query, passages at levels 0, 1, 3; scores make P = (0.5, 0.25, 0.25) at T = 1
    scores = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    labels = torch.tensor([[0, 1, 3]])
    # gain target: gains (0, 1, 7) / 8; CDFs at 0: .5 vs 0, at 1: .75 vs .125; gaps 1 and 2
    expected = 0.5 * 1 + (0.75 - 0.125) * 2
    assert w1_loss(scores, labels, target="gain").item() == pytest.approx(expected)


@pytest.mark.parametrize("p", [(0.2, 0.3, 0.5), (0.9, 0.0999, 0.0001)], ids=["easy", "hard"])
def test_w1_on_a_sharp_target_is_expected_gain_and_fades_on_hard_queries(p) -> None:
    """Why w1 trails InfoNCE on SciFact (README, "List-wise targets"): levels 0, 1, 3 with all
    target mass on the positive give W1 = 1 * p0 + 2 * (p0 + p1) = 3 - 3 p3 - p1, so the pull on
    the positive's score is p3 (3 (1 - p3) - p1), vanishing where p3 is small; InfoNCE's
    -log p3 pulls with 1 - p3."""
    scores = torch.log(torch.tensor([p], dtype=torch.float64)).requires_grad_()
    labels = torch.tensor([[0, 1, 3]])
    p0, p1, p3 = p
    loss = w1_loss(scores, labels, target_temperature=0.01)
    assert loss.item() == pytest.approx(1 * p0 + 2 * (p0 + p1))
    assert loss.item() == pytest.approx(3 - 3 * p3 - p1)
    (w1_grad,) = torch.autograd.grad(loss, scores)
    assert w1_grad[0, 2].item() == pytest.approx(-p3 * (3 * (1 - p3) - p1))
    (nce_grad,) = torch.autograd.grad(infonce_loss(scores, labels, 1.0), scores)
    assert nce_grad[0, 2].item() == pytest.approx(-(1 - p3))


def test_kl_matches_definition() -> None:
    scores, labels = _batch(3)
    predicted = _softmax(scores.numpy() / 0.3)
    goal = _softmax(labels.numpy() / 0.5)
    expected = np.mean(np.sum(goal * (np.log(goal) - np.log(predicted)), axis=1))
    ours = kl_loss(scores, labels, 0.3, target_temperature=0.5)
    assert ours.item() == pytest.approx(expected, abs=1e-9)


def test_infonce_is_cross_entropy_on_highest_label() -> None:
    scores, labels = _batch(4)
    logits = scores.numpy() / 0.05
    positives = labels.numpy().argmax(axis=1)
    log_z = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    expected = np.mean(log_z - logits[np.arange(len(positives)), positives])
    assert infonce_loss(scores, labels, 0.05).item() == pytest.approx(expected, rel=1e-5)


def test_target_options_hand_computed() -> None:
    labels = torch.tensor([[3, 2, 0, 0]])
    released = target_distribution(labels)
    e = [math.e**3, math.e**2, 1.0, 1.0]
    assert released[0].tolist() == pytest.approx([v / sum(e) for v in e])
    sharp = target_distribution(labels, temperature=0.5)
    e = [math.e**6, math.e**4, 1.0, 1.0]
    assert sharp[0].tolist() == pytest.approx([v / sum(e) for v in e])
    assert target_distribution(labels, "gain")[0].tolist() == pytest.approx([7 / 10, 3 / 10, 0, 0])
    no_gain = target_distribution(torch.tensor([[0, 0]]), "gain")
    assert no_gain[0].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="unknown target kind"):
        target_distribution(labels, "ndcg")  # type: ignore[arg-type]


def test_negative_grades_get_no_target_mass() -> None:
    """TREC qrels grade spam -1 or -2; trec_eval gives them no gain, so they count as level 0:
    no mass under the gain target, level 0's under the softmax target, and level 0 in W1."""
    labels = torch.tensor([[2, 1, -2, -1, 0]])
    as_zero = labels.clamp_min(0)
    gain = target_distribution(labels, "gain")
    assert gain[0].tolist() == pytest.approx([3 / 4, 1 / 4, 0, 0, 0])
    softmax = target_distribution(labels, temperature=0.5)
    e = [math.e**4, math.e**2, 1.0, 1.0, 1.0]
    assert softmax[0].tolist() == pytest.approx([v / sum(e) for v in e])
    scores = torch.tensor([[0.3, -0.2, 0.9, 0.1, 0.4]], dtype=torch.float64)
    for target in ("softmax", "gain"):
        for loss in (ws2_loss, w1_loss, kl_loss):
            value = loss(scores, labels, 0.5, target=target).item()
            assert math.isfinite(value), (loss.__name__, target)
            assert value == loss(scores, as_zero, 0.5, target=target).item(), loss.__name__
    # W1 over levels {0, 1, 2}: |F_p(0) - F_t(0)| + |F_p(1) - F_t(1)|, the -2 and -1 passages'
    # predicted mass counted at level 0, where the gain target has none
    predicted = torch.softmax(scores / 0.5, dim=1)[0]
    expected = predicted[2:].sum().item() + abs(predicted[1:].sum().item() - 1 / 4)
    assert w1_loss(scores, labels, 0.5, target="gain").item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, y: ws2_loss(s, y, 0.5),
        lambda s, y: w1_loss(s, y, 0.5, target="gain"),
        lambda s, y: kl_loss(s, y, 0.5),
        lambda s, y: infonce_loss(s, y, 0.5),
    ],
    ids=["ws2", "w1", "kl", "infonce"],
)
def test_gradients_match_finite_differences(loss) -> None:
    scores, labels = _batch(5, batch=3, group=2)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, labels).double(), (scores,), eps=1e-6)


def test_group_scope_target_gives_other_queries_no_mass() -> None:
    labels = expand_group_labels(torch.tensor([[3, 0], [2, 1]]))
    own = own_group_mask(2, 2)
    assert own.tolist() == [[True, True, False, False], [False, False, True, True]]
    softmax_target = target_distribution(labels, own_mask=own)
    e3 = math.e**3
    assert softmax_target[0].tolist() == pytest.approx([e3 / (e3 + 1), 1 / (e3 + 1), 0, 0])
    gain_target = target_distribution(labels, "gain", own_mask=own)
    assert gain_target[1].tolist() == pytest.approx([0, 0, 0.75, 0.25])
    no_gain = target_distribution(torch.tensor([[0, 0, 0, 0]]), "gain", own_mask=own[:1])
    assert no_gain[0].tolist() == [0.5, 0.5, 0.0, 0.0]
    scores = torch.zeros(2, 4, dtype=torch.float64)
    released = ws2_loss(scores, labels, target_temperature=0.5)
    scoped = ws2_loss(scores, labels, target_temperature=0.5, own_mask=own)
    assert scoped.item() != pytest.approx(released.item())


def test_learnable_temperature_is_a_parameter_that_gets_a_gradient() -> None:
    from torch import nn

    from synthrank.train.modules import WS2Loss

    loss = WS2Loss(nn.Identity(), temperature=0.05, target_temperature=0.25, learn_temperature=True)
    assert [name for name, _ in loss.named_parameters()] == ["log_temperature"]
    assert loss.temperature_value == pytest.approx(0.05)
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 5, generator=generator)
    passages = torch.randn(3, 4, 5, generator=generator)
    labels = torch.tensor([[3, 2, 1, 0]] * 3)
    value = loss.loss_from_embeddings(query, passages, labels)
    value.backward()
    assert loss.log_temperature.grad is not None and loss.log_temperature.grad.abs() > 0
    fixed = WS2Loss(nn.Identity(), temperature=0.05, target_temperature=0.25)
    assert list(fixed.parameters()) == []
    assert fixed.loss_from_embeddings(query, passages, labels).item() == pytest.approx(value.item())


@pytest.mark.parametrize("name", ["ws2", "w1", "kl", "infonce"])
def test_losses_keep_their_precision_under_mixed_precision_autocast(name: str) -> None:
    """With --bf16 the encoder runs under autocast; the scores and the loss maths must not: a
    bf16 cosine divided by temperature 0.05 would be off by up to 0.08 in the logits."""
    from torch import nn

    from synthrank.train.modules import LOSSES

    loss = LOSSES[name](nn.Identity(), 0.05)
    generator = torch.Generator().manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(4, 16, generator=generator), dim=-1)
    passages = torch.nn.functional.normalize(torch.randn(4, 4, 16, generator=generator), dim=-1)
    labels = torch.tensor([[3, 2, 1, 0]] * 4)
    reference = loss.loss_from_embeddings(query, passages, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss.loss_from_embeddings(query, passages, labels)
        rounded = (query @ passages.reshape(16, 16).T).dtype
    assert rounded == torch.bfloat16  # autocast is on: an unguarded product would be bf16
    assert mixed.dtype == torch.float32
    assert mixed.item() == reference.item()
