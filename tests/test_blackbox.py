"""The black-box attacks: Square (score-based) and HopSkipJump (decision-based).

They must cut accuracy by a stated margin using queries only (no backward pass, even when
handed the full model), keep to their query budgets, run through the query views, and batch
their queries across samples. Numbers in comments were measured on the digits MLP (clean
accuracy about 96%) over seeds 0-2.
"""

from __future__ import annotations

import math

import pytest
import torch

import adversa.attacks.hsj
import adversa.attacks.square  # noqa: F401  (registration)
from adversa import Model, ThreatModel, get_attack
from adversa.errors import AccessError, BadInput, ShapeError


def _robust(model: Model, x: torch.Tensor, y: torch.Tensor, result) -> float:
    return float(((model.predict(result.x_adv) == y) & ~result.success).float().mean())


def _n_correct(model: Model, x: torch.Tensor, y: torch.Tensor) -> int:
    return int((model.predict(x) == y).sum())


@pytest.mark.parametrize(
    "name,norm,eps,budget",
    [("square", "linf", 0.1, {"queries": 300}), ("hsj", "l2", 1.0, {"max_queries": 500})],
)
def test_black_box_invariants(name, norm, eps, budget, digits_mlp):
    """test_attacks.py's invariants, with the black-box cost: queries and no backward pass."""
    model, x, y = digits_mlp
    x, y = x[:64].double(), y[:64]
    net64 = Model(model.module.double(), num_classes=10)
    try:
        attack = get_attack(name, ThreatModel(norm=norm, eps=eps), seed=3, **budget)
        a, b = attack(net64, x, y), attack(net64, x, y)
    finally:
        model.module.float()
    assert a.x_adv.dtype == torch.float64 and a.x_adv.shape == x.shape
    assert attack.threat.contains(a.x_adv, x).all()
    assert torch.equal(a.x_adv, b.x_adv), "same seed must give the same result"
    assert a.cost.queries > 0 and a.cost.backward == 0 and a.cost.seconds > 0
    assert a.success.float().mean() > 0.5


# --- Square ----------------------------------------------------------------------------------


def test_square_linf_cuts_accuracy_with_queries_only(digits_mlp):
    """Measured: 0.29-0.30 left at linf 0.1 with 1000 queries (PGD-40 leaves 0.29)."""
    model, x, y = digits_mlp
    budget = 1000
    result = get_attack("square", ThreatModel(norm="linf", eps=0.1), queries=budget)(model, x, y)
    assert _robust(model, x, y, result) <= 0.40
    assert result.cost.backward == 0 and result.cost.queries > 0
    # Every query the attack made (the clean check included) is within the per-sample budget.
    n, n_correct = x.shape[0], _n_correct(model, x, y)
    assert result.cost.queries <= budget * n_correct + (n - n_correct)


def test_square_l2_cuts_accuracy(digits_mlp):
    """Measured: 0.12-0.14 left at l2 0.75 with 1000 queries (PGD-100 leaves 0.04)."""
    model, x, y = digits_mlp
    result = get_attack("square", ThreatModel(norm="l2", eps=0.75), queries=1000)(model, x, y)
    assert _robust(model, x, y, result) <= 0.25
    assert result.cost.backward == 0
    assert (result.distance <= 0.75 + 1e-5).all()


@pytest.mark.parametrize("norm,eps", [("linf", 0.0), ("l2", 0.0)])
@pytest.mark.parametrize("view", [False, True])
def test_square_query_count_is_exact(norm, eps, view, digits_mlp):
    """With eps = 0 nothing is fooled, so each correctly classified point spends its whole
    budget: 1 clean check + restarts * (queries - 1). Through a view, the harness's final
    check is a query too."""
    model, x, y = digits_mlp
    n, n_correct = x.shape[0], _n_correct(model, x, y)
    attack = get_attack("square", ThreatModel(norm=norm, eps=eps), queries=20, restarts=2)
    result = attack(model.scores_only() if view else model, x, y)
    expected = n + 2 * (20 - 1) * n_correct
    assert result.cost.queries == expected + (n if view else 0)
    assert result.cost.forward == expected + n
    assert result.cost.backward == 0


def test_square_through_views(digits_mlp):
    model, x, y = digits_mlp
    x, y = x[:64], y[:64]
    attack = get_attack("square", ThreatModel(norm="linf", eps=0.1), queries=200)
    via_view = attack(model.scores_only(), x, y)
    direct = attack(model, x, y)
    assert torch.equal(via_view.x_adv, direct.x_adv), "a view must not change the attack"
    assert via_view.success.float().mean() > 0.5
    with pytest.raises(AccessError, match="needs scores access, but the model view grants"):
        attack(model.labels_only(), x, y)


def test_square_on_images_and_image_shape(digits_mlp):
    """4-D inputs get square windows; flat inputs viewed through image_shape get exactly the
    same attack; without image_shape, flat inputs use one-pixel-high strips."""
    model, x, y = digits_mlp
    x, y = x[:64], y[:64]
    images = Model(torch.nn.Sequential(torch.nn.Flatten(), model.module), num_classes=10)
    for norm, eps in [("linf", 0.1), ("l2", 1.0)]:
        threat = ThreatModel(norm=norm, eps=eps)
        on_images = get_attack("square", threat, queries=200, seed=1)(
            images, x.view(-1, 1, 8, 8), y
        )
        viewed = get_attack("square", threat, queries=200, seed=1, image_shape=(1, 8, 8))
        on_flat = viewed(model, x, y)
        assert torch.equal(on_images.x_adv.view(-1, 64), on_flat.x_adv)
        assert on_images.success.float().mean() > 0.5
        strips = get_attack("square", threat, queries=200, seed=1)(model, x, y)
        assert strips.success.float().mean() > 0.5


def test_square_seeds(digits_mlp):
    model, x, y = digits_mlp
    x, y = x[:32], y[:32]
    threat = ThreatModel(norm="l2", eps=0.5)
    a = get_attack("square", threat, queries=100, seed=0)(model, x, y)
    b = get_attack("square", threat, queries=100, seed=0)(model, x, y)
    c = get_attack("square", threat, queries=100, seed=1)(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_square_targeted(digits_mlp):
    """Measured: 0.86 of the points reach target y + 1 at linf 0.2 with 1000 queries."""
    model, x, y = digits_mlp
    x, y = x[:128], y[:128]
    target = (y + 1) % 10
    threat = ThreatModel(norm="linf", eps=0.2, targeted=True)
    result = get_attack("square", threat, queries=1000)(model, x, target)
    assert result.success.float().mean() >= 0.7
    assert torch.equal(result.success, model.predict(result.x_adv) == target)


def test_square_bad_input(digits_mlp):
    model, x, y = digits_mlp
    linf = ThreatModel(norm="linf", eps=0.1)
    with pytest.raises(BadInput, match="square needs a finite eps"):
        get_attack("square", ThreatModel(norm="linf", eps=math.inf))
    with pytest.raises(BadInput, match="supports norms linf, l2, not 'l1'"):
        get_attack("square", ThreatModel(norm="l1", eps=1.0))
    with pytest.raises(BadInput, match=r"queries must be >= 2, got 1"):
        get_attack("square", linf, queries=1)
    with pytest.raises(BadInput, match=r"p_init must be in \(0, 1\], got 1.5"):
        get_attack("square", linf, p_init=1.5)
    with pytest.raises(BadInput, match=r"image_shape must be \(C, H, W\)"):
        get_attack("square", linf, image_shape=(8, 8))
    with pytest.raises(ShapeError, match=r"image_shape \(1, 4, 4\) holds 16 values"):
        get_attack("square", linf, image_shape=(1, 4, 4), queries=10)(model, x[:4], y[:4])
    seq = Model(torch.nn.Sequential(torch.nn.Flatten(), model.module), num_classes=10)
    with pytest.raises(ShapeError, match=r"square needs images \(B, C, H, W\) or flat"):
        get_attack("square", linf, queries=10)(seq, x[:4].view(4, 8, 8), y[:4])


# --- HopSkipJump -----------------------------------------------------------------------------


def test_hsj_l2_cuts_accuracy_with_labels_only(digits_mlp):
    """Measured: 0.19-0.20 left at l2 0.75 (PGD-100 leaves 0.04; square 0.09-0.14)."""
    model, x, y = digits_mlp
    budget = 2000
    attack = get_attack("hsj", ThreatModel(norm="l2", eps=0.75), max_queries=budget)
    result = attack(model.labels_only(), x, y)
    assert _robust(model, x, y, result) <= 0.30
    assert result.cost.backward == 0
    n, n_correct = x.shape[0], _n_correct(model, x, y)
    # The attack's queries (clean check included) plus the harness's final check.
    assert result.cost.queries <= budget * n_correct + (n - n_correct) + n


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_hsj_unbounded_is_close_to_white_box(norm, digits_mlp):
    """Median distance, measured with 2000 queries: l2 0.54, linf 0.10; DeepFool (white-box,
    gradients) 0.43 and 0.081: a ratio of about 1.25."""
    model, x, y = digits_mlp
    threat = ThreatModel(norm=norm, eps=math.inf)
    result = get_attack("hsj", threat, max_queries=2000)(model, x, y)
    reference = get_attack("deepfool", threat)(model, x, y)
    assert result.success.float().mean() >= 0.9
    assert result.cost.backward == 0 and result.cost.queries > 0
    assert result.distance[result.success].median() <= 2 * reference.distance.median()


def test_hsj_batches_queries(digits_mlp):
    """64 points take about as many model calls as one (measured 115 vs 100), not 64x."""
    model, x, y = digits_mlp
    calls: list[int] = []
    hook = model.module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    attack = get_attack("hsj", ThreatModel(norm="l2", eps=math.inf), max_queries=1000)
    try:
        attack(model, x[:1], y[:1])
        one = len(calls)
        calls.clear()
        result = attack(model, x[:64], y[:64])
        many = len(calls)
    finally:
        hook.remove()
    assert result.success.float().mean() >= 0.9
    assert many <= 1.5 * one
    assert max(calls) >= 64 * 100, "the gradient probes of all samples share one call"


def test_hsj_start_falls_back_to_the_batch(digits_mlp):
    """Uniform noise is mostly classified as a 4, so 4s rarely get a noise start; with one
    noise draw they start from the nearest batch input of another class instead."""
    model, x, y = digits_mlp
    fours = torch.nonzero(y == 4).squeeze(1)[:8]
    others = torch.nonzero(y != 4).squeeze(1)[:2]
    idx = torch.cat([fours, others])
    attack = get_attack("hsj", ThreatModel(norm="l2", eps=math.inf), max_queries=300, init_trials=1)
    result = attack(model, x[idx], y[idx])
    assert result.success.all()


def test_hsj_targeted(digits_mlp):
    """Measured: every point reaches target y + 1 (median l2 0.81 with 2000 queries)."""
    model, x, y = digits_mlp
    x, y = x[:128], y[:128]
    target = (y + 1) % 10
    threat = ThreatModel(norm="l2", eps=math.inf, targeted=True)
    result = get_attack("hsj", threat, max_queries=1000)(model.labels_only(), x, target)
    assert result.success.float().mean() >= 0.9
    assert torch.equal(result.success, model.predict(result.x_adv) == target)


def test_hsj_seeds_and_ball(digits_mlp):
    model, x, y = digits_mlp
    x, y = x[:32], y[:32]
    threat = ThreatModel(norm="linf", eps=0.1)
    a = get_attack("hsj", threat, max_queries=500, seed=0)(model.scores_only(), x, y)
    b = get_attack("hsj", threat, max_queries=500, seed=0)(model.scores_only(), x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert threat.contains(a.x_adv, x).all()
    assert a.cost.backward == 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"steps": -1}, r"steps must be >= 0, got -1"),
        ({"init_num_evals": 0}, r"init_num_evals must be >= 1, got 0"),
        ({"max_num_evals": 10}, r"max_num_evals must be >= init_num_evals \(100\), got 10"),
        ({"gamma": 0.0}, r"gamma must be > 0, got 0.0"),
        ({"max_queries": 5}, r"max_queries must be > init_trials \(10\), got 5"),
    ],
)
def test_hsj_bad_hyper_parameters(overrides, match):
    with pytest.raises(BadInput, match=match):
        get_attack("hsj", ThreatModel(norm="l2", eps=1.0), **overrides)
    with pytest.raises(BadInput, match="supports norms l2, linf, not 'l1'"):
        get_attack("hopskipjump", ThreatModel(norm="l1", eps=1.0))
