"""EAD (elastic-net, L1) and SimBA (score-based, L2/Linf).

Margins were measured on the digits MLP fixture (clean accuracy 96.5%, 383 of 397 test points
right) unless stated otherwise: unbounded EAD (EN rule, defaults) fools every correct point
with mean L1 1.90 and 24.8 changed features, the L1 rule 1.42 and 11.0; unbounded C&W L2 fools
every point with mean L1 2.44 and 46.7 changed features. SimBA (pixel basis, step 0.2) leaves
0.26-0.29 at L2 eps 1.0 and 0.31-0.33 at Linf eps 0.1 over seeds 0-2; at L2 eps 1.5 with step
0.5, the DCT basis leaves 0.21 and the pixel basis 0.43.
"""

from __future__ import annotations

import math

import pytest
import torch

from adversa import Model, ThreatModel, get_attack
from adversa.attacks import AttackResult, list_attacks
from adversa.errors import AccessError, BadInput, ShapeError

L1_INF = ThreatModel(norm="l1", eps=math.inf)


@pytest.fixture(scope="module")
def correct(digits_mlp) -> torch.Tensor:
    model, x, y = digits_mlp
    return model.predict(x) == y


@pytest.fixture(scope="module")
def ead_unbounded(digits_mlp) -> AttackResult:
    model, x, y = digits_mlp
    return get_attack("ead", L1_INF)(model, x, y)


def _robust(model: Model, y: torch.Tensor, result: AttackResult) -> float:
    return float(((model.predict(result.x_adv) == y) & ~result.success).float().mean())


def _l1_l0(result: AttackResult, x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    delta = (result.x_adv - x).flatten(1)[mask]
    return float(delta.abs().sum(1).mean()), float((delta.abs() > 1e-6).sum(1).float().mean())


def test_registered() -> None:
    assert {"ead", "simba"} <= set(list_attacks())
    assert type(get_attack("elastic-net", L1_INF)).name == "ead"


# --- EAD ---------------------------------------------------------------------------------------


def test_ead_is_sparser_than_cw_at_equal_success(digits_mlp, correct, ead_unbounded) -> None:
    """Both fool (nearly) every point; EAD changes far fewer features, with a smaller L1."""
    model, x, y = digits_mlp
    cw = get_attack("cw", ThreatModel(norm="l2", eps=math.inf))(model, x, y)
    assert ead_unbounded.success[correct].float().mean() >= 0.95
    assert cw.success[correct].float().mean() >= 0.95
    both = correct & ead_unbounded.success & cw.success
    ead_l1, ead_l0 = _l1_l0(ead_unbounded, x, both)
    cw_l1, cw_l0 = _l1_l0(cw, x, both)
    assert ead_l1 < 0.9 * cw_l1  # measured 0.78x
    assert ead_l0 < 0.7 * cw_l0  # measured 0.53x
    assert torch.allclose(ead_unbounded.distance, (ead_unbounded.x_adv - x).abs().sum(1))


def test_ead_l1_rule_trades_l2_for_l1(digits_mlp, correct, ead_unbounded) -> None:
    model, x, y = digits_mlp
    l1_rule = get_attack("ead", L1_INF, decision_rule="l1")(model, x, y)
    both = correct & l1_rule.success & ead_unbounded.success
    assert l1_rule.success[correct].float().mean() >= 0.95
    assert _l1_l0(l1_rule, x, both)[0] < 0.9 * _l1_l0(ead_unbounded, x, both)[0]  # 0.75x
    l2 = (l1_rule.x_adv - x).norm(dim=1)[both].mean()
    assert l2 > (ead_unbounded.x_adv - x).norm(dim=1)[both].mean()


def test_ead_keeps_the_best_success_inside_the_ball(digits_mlp, correct, ead_unbounded) -> None:
    """The bounded run follows the same iterates and keeps a fooling one inside eps when there
    is one: every point the unbounded run fools within eps is fooled, and more besides (the EN
    rule's pick can lie beyond eps while a fooling iterate lies inside)."""
    model, x, y = digits_mlp
    eps = float(ead_unbounded.distance[correct & ead_unbounded.success].median())
    bounded = get_attack("ead", L1_INF.with_eps(eps))(model, x, y)
    within = ead_unbounded.success & (ead_unbounded.distance <= eps - 1e-4)
    assert bounded.success[within].all()
    assert bounded.success.sum() > within.sum()
    assert (bounded.distance <= eps + 1e-4).all()


def test_ead_targeted_and_confidence(digits_mlp, correct) -> None:
    model, x, y = digits_mlp
    target = (y + 1) % 10
    kappa = 2.0
    threat = ThreatModel(norm="l1", eps=math.inf, targeted=True)
    result = get_attack("ead", threat, confidence=kappa)(model, x, target)
    hit = model.predict(result.x_adv) == target
    assert torch.equal(hit, result.success)
    assert hit[correct].float().mean() >= 0.9
    with torch.no_grad():
        logits = model(result.x_adv[hit & correct])
    z_t = logits.gather(1, target[hit & correct][:, None]).squeeze(1)
    z_other = logits.scatter(1, target[hit & correct][:, None], -torch.inf).amax(1)
    assert (z_t - z_other >= kappa - 1e-3).all()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"beta": -0.1}, r"beta must be >= 0, got -0.1"),
        ({"steps": 0}, r"steps must be >= 1, got 0"),
        ({"initial_const": 0.0}, r"initial_const must be > 0"),
        ({"decision_rule": "l2"}, r"decision_rule must be one of en, l1, got 'l2'"),
        ({"confidence": -1.0}, r"confidence must be >= 0"),
    ],
)
def test_ead_bad_input(overrides, match) -> None:
    with pytest.raises(BadInput, match=match):
        get_attack("ead", L1_INF, **overrides)


def test_ead_is_l1_only() -> None:
    with pytest.raises(BadInput, match=r"attack 'ead' supports norms l1, not 'l2'"):
        get_attack("ead", ThreatModel(norm="l2", eps=1.0))


def test_ead_on_mnist_cnn_is_sparser_than_cw(mnist_cnn) -> None:
    """Measured on 500 images: EAD fools all with mean L1 15.3 and 216 changed pixels, C&W
    with L1 18.8 and 478 pixels."""
    model, data = mnist_cnn
    x, y = torch.as_tensor(data.x[:24]), torch.as_tensor(data.y[:24])
    ead = get_attack("ead", L1_INF)(model, x, y)
    cw = get_attack("cw", ThreatModel(norm="l2", eps=math.inf))(model, x, y)
    both = ead.success & cw.success & (model.predict(x) == y)
    assert both.float().mean() >= 0.85
    assert _l1_l0(ead, x, both)[1] < 0.7 * _l1_l0(cw, x, both)[1]


# --- SimBA -------------------------------------------------------------------------------------


def test_simba_queries_only_and_within_budget(digits_mlp) -> None:
    model, x, y = digits_mlp
    threat = ThreatModel(norm="l2", eps=1.0)
    small = get_attack("simba", threat, queries=10)(model, x, y)
    full = get_attack("simba", threat)(model, x, y)
    for result, budget in ((small, 10), (full, 5000)):
        assert result.cost.backward == 0
        assert 0 < result.cost.queries <= budget * x.shape[0]
    # A misclassified point costs its clean query only; a correct one still robust has spent
    # all 10 (every step queries at least once); a fooled one between 2 and 10.
    right = model.predict(x) == y
    wrong, robust, fooled = (~right).sum(), (right & ~small.success).sum(), (right & small.success)
    assert small.cost.queries >= int(wrong + 10 * robust + 2 * fooled.sum())
    assert small.cost.queries <= int(wrong + 10 * right.sum())
    assert _robust(model, y, full) <= 0.35
    assert _robust(model, y, full) < _robust(model, y, small) - 0.2


def test_simba_l2_norm_is_bounded_by_sqrt_steps(digits_mlp) -> None:
    """step 0.3 under eps 1.0: at most floor(1 / 0.09) = 11 steps, so every perturbation is
    within 0.3 * sqrt(11) = 0.995 < eps, before any projection by the harness."""
    model, x, y = digits_mlp
    result = get_attack("simba", ThreatModel(norm="l2", eps=1.0), step_size=0.3)(model, x, y)
    assert (result.distance <= 0.3 * math.sqrt(11) + 1e-5).all()
    assert result.distance.max() > 0.9  # the bound is reached, not just respected
    assert result.success.float().mean() > 0.1


def test_simba_linf(digits_mlp) -> None:
    model, x, y = digits_mlp
    threat = ThreatModel(norm="linf", eps=0.1)
    result = get_attack("simba", threat, seed=1)(model, x, y)
    assert _robust(model, y, result) <= 0.40
    assert (result.distance <= 0.1 + 1e-6).all()
    # Pixel steps of size eps: every changed coordinate sits exactly at x +- eps or the box.
    delta = (result.x_adv - x).abs()
    at_edge = (delta < 1e-6) | ((delta - 0.1).abs() < 1e-6) | (result.x_adv == 0)
    assert (at_edge | (result.x_adv == 1)).all()


def test_simba_dct_beats_pixel_at_equal_steps(digits_mlp) -> None:
    model, x, y = digits_mlp
    threat = ThreatModel(norm="l2", eps=1.5)
    pixel = get_attack("simba", threat, step_size=0.5)(model, x, y)
    dct = get_attack("simba", threat, step_size=0.5, basis="dct", image_shape=(1, 8, 8))
    dct_result = dct(model, x, y)
    assert _robust(model, y, dct_result) < _robust(model, y, pixel) - 0.1
    assert dct_result.cost.backward == 0


def test_simba_targeted(digits_mlp, correct) -> None:
    model, x, y = digits_mlp
    target = (y + 1) % 10
    threat = ThreatModel(norm="l2", eps=2.0, targeted=True)
    result = get_attack("simba", threat)(model, x, target)
    hit = model.predict(result.x_adv) == target
    assert torch.equal(hit, result.success)
    assert hit[correct].float().mean() >= 0.5


def test_simba_refuses_labels_only(digits_mlp) -> None:
    model, x, y = digits_mlp
    with pytest.raises(AccessError, match="needs scores access"):
        get_attack("simba", ThreatModel(norm="l2", eps=1.0))(model.labels_only(), x, y)


@pytest.mark.parametrize(
    ("threat", "overrides", "match"),
    [
        (ThreatModel(norm="l2", eps=1.0), {"queries": 0}, r"queries must be >= 1, got 0"),
        (ThreatModel(norm="l2", eps=1.0), {"queries": -5}, r"queries must be >= 1, got -5"),
        (ThreatModel(norm="l2", eps=1.0), {"step_size": 2.0}, r"step_size must be <= eps"),
        (ThreatModel(norm="l2", eps=1.0), {"step_size": 0.0}, r"step_size must be > 0"),
        (ThreatModel(norm="l2", eps=1.0), {"basis": "fft"}, r"basis must be one of pixel, dct"),
        (ThreatModel(norm="linf", eps=math.inf), {}, r"needs a finite eps"),
        (ThreatModel(norm="l1", eps=1.0), {}, r"supports norms l2, linf, not 'l1'"),
    ],
)
def test_simba_bad_input(threat, overrides, match) -> None:
    with pytest.raises(BadInput, match=match):
        get_attack("simba", threat, **overrides)


def test_simba_dct_needs_an_image(digits_mlp) -> None:
    model, x, y = digits_mlp
    threat = ThreatModel(norm="l2", eps=1.0)
    with pytest.raises(ShapeError, match=r"needs images \(B, C, H, W\)"):
        get_attack("simba", threat, basis="dct")(model, x, y)
    with pytest.raises(ShapeError, match=r"image_shape \(1, 4, 4\) holds 16 values"):
        get_attack("simba", threat, basis="dct", image_shape=(1, 4, 4))(model, x, y)
