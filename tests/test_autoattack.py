"""The AutoAttack-style ensembles: composition, cascade and strength on a defended model."""

from __future__ import annotations

import pytest
import torch
from conftest import digits_split

from adversa import Model, ThreatModel, get_attack
from adversa.attacks.autoattack import PRESETS
from adversa.errors import BadInput


@pytest.fixture(scope="module")
def robust_mlp() -> Model:
    """A digits MLP adversarially trained with PGD-5 at linf eps 0.1 (a few seconds)."""
    x, y, _, _ = digits_split()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
        )
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    pgd = get_attack("pgd", ThreatModel(norm="linf", eps=0.1), steps=5, step_size=0.03)
    model = Model(net, num_classes=10)
    for _ in range(60):
        x_adv = pgd(model, x, y).x_adv
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x_adv), y).backward()
        opt.step()
    return Model(net.eval(), num_classes=10)


def test_standard_composition_and_budgets():
    aa = get_attack("autoattack", ThreatModel(norm="linf", eps=0.1))
    parts = [(a.name, a) for a in aa.components()]
    assert [n for n, _ in parts] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    budgets = dict(parts)
    assert budgets["apgd-ce"].steps == 100 and budgets["apgd-ce"].restarts == 1
    assert budgets["apgd-t"].steps == 100 and budgets["apgd-t"].n_target_classes == 9
    assert budgets["fab-t"].steps == 100 and budgets["fab-t"].n_target_classes == 9
    assert budgets["square"].queries == 5000
    l1 = get_attack("autoattack", ThreatModel(norm="l1", eps=5.0)).components()
    assert [a.name for a in l1] == [n for n, _ in PRESETS["standard"]["l1"]]


def test_autoattack_beats_pgd_on_an_adversarially_trained_model(robust_mlp):
    _, _, x, y = digits_split()
    threat = ThreatModel(norm="linf", eps=0.1)
    clean = float((robust_mlp.predict(x) == y).float().mean())
    pgd = get_attack("pgd", threat, steps=40, restarts=1)(robust_mlp, x, y)
    aa = get_attack("autoattack", threat)(robust_mlp, x, y)
    pgd_robust = float((~pgd.success).float().mean())
    aa_robust = float((~aa.success).float().mean())
    assert clean > 0.8
    assert pgd_robust > 0.3, "the fixture should be somewhat robust"
    assert aa_robust <= pgd_robust
    # Per sample: autoattack's first component alone is stronger than one PGD restart, and the
    # cascade only adds attacks, so few points survive autoattack that PGD broke.
    assert int((pgd.success & ~aa.success).sum()) <= 0.02 * y.shape[0]


def test_fast_preset_is_cheaper(robust_mlp):
    _, _, x, y = digits_split()
    threat = ThreatModel(norm="linf", eps=0.1)
    fast = get_attack("autoattack-fast", threat)(robust_mlp, x[:100], y[:100])
    full = get_attack("autoattack", threat)(robust_mlp, x[:100], y[:100])
    assert fast.cost.backward < full.cost.backward
    assert fast.cost.queries < full.cost.queries


def test_autoattack_rejects_targeted_threats():
    with pytest.raises(BadInput, match="untargeted evaluation"):
        get_attack("autoattack", ThreatModel(norm="linf", eps=0.1, targeted=True))
