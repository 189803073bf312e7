"""Carlini & Wagner L2 and DeepFool: the minimum-norm attacks, on the digits MLP.

Margins were measured on the fixture (clean accuracy 96.5%, 383 of 397 test points right):
C&W unbounded fools 100% with median L2 0.455; targeted C&W reaches (y + 1) % 10 for 100%;
DeepFool fools 100% with median L2 0.440 (Linf 0.084); at an L2 eps equal to C&W's median,
PGD fools 49% of the correct points and C&W 50%; at L2 eps 1.0 both leave accuracy below 1%.
"""

from __future__ import annotations

import math

import pytest
import torch

from adversa import Model, ThreatModel
from adversa.attacks import AttackResult, get_attack, list_attacks
from adversa.errors import BadInput

L2_INF = ThreatModel(norm="l2", eps=math.inf)


@pytest.fixture(scope="module")
def correct(digits_mlp) -> torch.Tensor:
    model, x, y = digits_mlp
    return model.predict(x) == y


@pytest.fixture(scope="module")
def cw_unbounded(digits_mlp) -> AttackResult:
    model, x, y = digits_mlp
    return get_attack("cw", L2_INF)(model, x, y)


@pytest.fixture(scope="module")
def deepfool_unbounded(digits_mlp) -> AttackResult:
    model, x, y = digits_mlp
    return get_attack("deepfool", L2_INF)(model, x, y)


def _median_distance(result: AttackResult, correct: torch.Tensor) -> float:
    return float(result.distance[correct & result.success].median())


def test_registered_with_alias() -> None:
    assert {"cw", "deepfool"} <= set(list_attacks())
    assert type(get_attack("cw-l2", L2_INF)).name == "cw"


def test_cw_unbounded_fools_nearly_all(cw_unbounded, correct) -> None:
    assert cw_unbounded.success[correct].float().mean() >= 0.95
    assert 0.1 < _median_distance(cw_unbounded, correct) < 1.0


def test_cw_distances_are_near_minimal(digits_mlp, cw_unbounded, correct) -> None:
    """At C&W's median distance, PGD (fixed-eps, maximising) must not fool many more points
    than C&W does; a C&W that stopped short of the boundary would lose by 30+ points."""
    model, x, y = digits_mlp
    eps = _median_distance(cw_unbounded, correct)
    threat = L2_INF.with_eps(eps)
    cw = get_attack("cw", threat)(model, x, y).success[correct].float().mean()
    pgd = get_attack("pgd", threat, steps=50)(model, x, y).success[correct].float().mean()
    assert cw >= 0.4
    assert pgd <= cw + 0.1
    # PGD's successful points sit near its eps = 1.0; C&W's are much closer.
    pgd_far = get_attack("pgd", L2_INF.with_eps(1.0))(model, x, y)
    pgd_mean = pgd_far.distance[correct & pgd_far.success].mean()
    assert cw_unbounded.distance[correct & cw_unbounded.success].mean() < 0.75 * pgd_mean


def test_cw_targeted_reaches_target(digits_mlp, correct) -> None:
    model, x, y = digits_mlp
    target = (y + 1) % 10
    threat = ThreatModel(norm="l2", eps=math.inf, targeted=True)
    result = get_attack("cw", threat)(model, x, target)
    hit = model.predict(result.x_adv) == target
    assert torch.equal(hit, result.success)
    assert hit[correct].float().mean() >= 0.9


def test_cw_confidence_margin(digits_mlp) -> None:
    model, x, y = digits_mlp
    x, y = x[:64], y[:64]
    result = get_attack("cw", L2_INF, confidence=3.0, binary_search_steps=6)(model, x, y)
    with torch.no_grad():
        logits = model.module(result.x_adv)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    margin = logits.scatter(1, y[:, None], -math.inf).amax(1) - z_y
    attacked = model.predict(x) == y
    fooled = attacked & result.success
    assert fooled.float().sum() >= 0.9 * attacked.float().sum()
    assert (margin[fooled] >= 3.0 - 1e-3).all()


def test_deepfool_unbounded_fools_nearly_all(deepfool_unbounded, cw_unbounded, correct) -> None:
    assert deepfool_unbounded.success[correct].float().mean() >= 0.9
    ratio = _median_distance(deepfool_unbounded, correct) / _median_distance(cw_unbounded, correct)
    assert 0.5 < ratio < 2.0  # measured 0.97: DeepFool is near-minimal on a ReLU MLP


def test_deepfool_linf_whole_box(digits_mlp, correct) -> None:
    model, x, y = digits_mlp
    result = get_attack("deepfool", ThreatModel(norm="linf", eps=1.0))(model, x, y)
    assert result.success[correct].float().mean() >= 0.9
    assert _median_distance(result, correct) < 0.2  # measured 0.084


@pytest.mark.parametrize(
    ("name", "norm", "eps", "min_drop"),
    [("cw", "l2", 1.0, 0.8), ("deepfool", "l2", 1.0, 0.8), ("deepfool", "linf", 0.1, 0.5)],
)
def test_finite_eps_cuts_accuracy(digits_mlp, correct, name, norm, eps, min_drop) -> None:
    """Measured drops: 96, 96 and 68 points of accuracy."""
    model, x, y = digits_mlp
    threat = ThreatModel(norm=norm, eps=eps)
    result = get_attack(name, threat)(model, x, y)
    robust = (~result.success).float().mean()
    assert correct.float().mean() - robust >= min_drop
    assert threat.contains(result.x_adv, x).all()


@pytest.mark.parametrize(
    ("name", "norm", "eps"),
    [
        ("cw", "l2", 0.3),
        ("cw", "l2", math.inf),
        ("deepfool", "l2", 0.3),
        ("deepfool", "linf", 0.05),
    ],
)
def test_invariants(digits_mlp, name, norm, eps) -> None:
    model, x, y = digits_mlp
    x, y = x[:48].double(), y[:48]
    threat = ThreatModel(norm=norm, eps=eps)
    attack = get_attack(name, threat, steps=20)
    result = attack(model, x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == torch.float64
    assert threat.contains(result.x_adv, x).all()
    assert result.cost.forward > 0 and result.cost.backward > 0
    assert torch.equal(attack(model, x, y).x_adv, result.x_adv)
    already_wrong = model.predict(x) != y
    assert (result.distance[already_wrong] == 0).all()


def test_nn_module_and_custom_bounds() -> None:
    """A bare module with inputs in [-1, 1]: the tanh box and the clip follow the bounds."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.rand(32, 8) * 2 - 1
    y = net(x).argmax(1)
    for name in ("cw", "deepfool"):
        threat = ThreatModel(norm="l2", eps=math.inf, bounds=(-1.0, 1.0))
        result = get_attack(name, threat)(net, x, y)
        assert threat.contains(result.x_adv, x).all()
        assert result.success.float().mean() >= 0.9


@pytest.mark.parametrize(
    ("name", "override", "match"),
    [
        ("cw", {"steps": 0}, "steps must be >= 1, got 0"),
        ("cw", {"binary_search_steps": 0}, "binary_search_steps must be >= 1, got 0"),
        ("cw", {"initial_const": 0.0}, "initial_const must be > 0, got 0.0"),
        ("cw", {"lr": -1.0}, "lr must be > 0, got -1.0"),
        ("cw", {"confidence": -1.0}, "confidence must be >= 0, got -1.0"),
        ("deepfool", {"steps": 0}, "steps must be >= 1, got 0"),
        ("deepfool", {"candidates": 1}, "candidates must be >= 2, got 1"),
        ("deepfool", {"overshoot": -0.1}, "overshoot must be >= 0, got -0.1"),
        ("deepfool", {"max_iter": 3}, "no option max_iter"),
    ],
)
def test_bad_hyper_parameters(name, override, match) -> None:
    with pytest.raises(BadInput, match=match):
        get_attack(name, L2_INF, **override)


@pytest.mark.parametrize(
    ("name", "threat", "match"),
    [
        ("cw", ThreatModel(norm="linf", eps=0.1), "supports norms l2, not 'linf'"),
        ("deepfool", ThreatModel(norm="l1", eps=1.0), "supports norms linf, l2, not 'l1'"),
        ("deepfool", ThreatModel(norm="l2", eps=1.0, targeted=True), "deepfool is untargeted"),
    ],
)
def test_unsupported_threats(name, threat, match) -> None:
    with pytest.raises(BadInput, match=match):
        get_attack(name, threat)


def test_model_wrapper_counts_deepfool_backward_per_candidate(digits_mlp) -> None:
    model, x, y = digits_mlp
    x, y = x[:16], y[:16]
    attacked = int((model.predict(x) == y).sum())
    result = get_attack("deepfool", L2_INF, steps=1, candidates=4)(Model(model.module), x, y)
    assert result.cost.backward == 3 * attacked  # one backward per other candidate
    assert result.cost.forward == 16 + attacked + 16  # clean, one step, harness check
