"""eps = 0 is a legitimate threat model: every registered attack, at every norm it supports,
must return x itself and report success exactly where the clean prediction is already wrong,
so that robust accuracy equals clean accuracy (issue 13: SimBA at l2 divided by zero)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import adversa
from adversa import ThreatModel, get_attack
from adversa.attacks import ATTACKS

# Small budgets: eps = 0 leaves nothing to search, the point is that nothing breaks.
BUDGETS = {"steps": 3, "queries": 20, "restarts": 1, "binary_search_steps": 2}

CASES = [(name, norm) for name in ATTACKS.list() for norm in ATTACKS.factory(name).norms]


def _attack(name: str, norm: str, surrogate: object, seed: int = 0):
    fields = {f.name for f in dataclasses.fields(ATTACKS.factory(name))}
    options = {k: v for k, v in BUDGETS.items() if k in fields}
    if name == "transfer":
        options["surrogate"] = surrogate
    return get_attack(name, ThreatModel(norm=norm, eps=0.0), seed=seed, **options)


@pytest.fixture(scope="module")
def batch(digits_mlp):
    """24 digits, the model's mistakes among them (so that success has something to find)."""
    model, x, y = digits_mlp
    wrong = torch.nonzero(model.predict(x) != y).squeeze(1)[:4]
    right = torch.nonzero(model.predict(x) == y).squeeze(1)[:20]
    idx = torch.cat([wrong, right])
    assert wrong.numel() > 0
    return model, x[idx], y[idx]


IMAGE_ONLY = {"patch"}  # attacks that need images: the digits as 8x8 images


def _as_images(batch):
    model, x, y = batch
    net = torch.nn.Sequential(torch.nn.Flatten(), model.module)
    return adversa.Model(net, num_classes=10), x.view(-1, 1, 8, 8), y


@pytest.mark.parametrize(("name", "norm"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_eps_zero_returns_x_and_fools_only_the_mistakes(name, norm, batch, digits_surrogate):
    model, x, y = _as_images(batch) if name in IMAGE_ONLY else batch
    result = _attack(name, norm, digits_surrogate)(model, x, y)
    assert torch.equal(result.x_adv, x), f"{name} at {norm} eps=0 moved the input"
    assert torch.equal(result.success, model.predict(x) != y)
    assert torch.all(result.distance == 0)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_evaluate_at_eps_zero_robust_equals_clean(norm, batch, digits_surrogate):
    names = [name for name, p in CASES if p == norm and name != "transfer"]
    flat = [_attack(name, norm, digits_surrogate) for name in names if name not in IMAGE_ONLY]
    images = [_attack(name, norm, digits_surrogate) for name in names if name in IMAGE_ONLY]
    threat = ThreatModel(norm=norm, eps=0.0)
    for (m, xs, ys), attacks in ((batch, flat), (_as_images(batch), images)):
        if attacks:
            result = adversa.evaluate(m, xs, ys, threat, attacks, checks=False)
            assert result.robust_accuracy == result.clean_accuracy
            assert all(a.newly_broken == 0 for a in result.attacks)


def test_simba_l2_eps_zero_with_a_step_size(batch):
    """A step size chosen for a sweep's larger eps does not make eps = 0 an error."""
    model, x, y = batch
    attack = get_attack("simba", ThreatModel(norm="l2", eps=0.5), step_size=0.2, queries=20)
    zero = dataclasses.replace(attack, threat=ThreatModel(norm="l2", eps=0.0))
    assert torch.equal(zero(model, x, y).x_adv, x)
