"""The projected-gradient template `attacks.gradient.ascend`: its configuration, early stopping
switched off for equal-work comparisons, step schedules, the last-iterate mode that
adversarial training, smoothing and the poisons use, and its refusals."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from adversa import ThreatModel, get_attack
from adversa.attacks.gradient import Ascent, ascend, gradient_ascent
from adversa.defenses.objectives import inner_max
from adversa.errors import BadInput
from adversa.losses import ce
from adversa.rng import make_generator


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.0), ("l1", 4.0)])
def test_early_stop_off_does_every_step_and_returns_the_same_points(norm, eps, digits_mlp):
    """Without early stopping every correctly classified point costs exactly steps * restarts
    backward passes; the best-point rule (the first fooling point) is unchanged, so the points
    returned are the ones early stopping returns."""
    model, x, y = digits_mlp
    n_correct = int((model.predict(x) == y).sum())
    stop = get_attack("pgd", ThreatModel(norm=norm, eps=eps), steps=10, restarts=2)
    full = dataclasses.replace(stop, early_stop=False)
    a, b = stop(model, x, y), full(model, x, y)
    assert b.cost.backward == 10 * 2 * n_correct
    assert a.cost.backward < b.cost.backward  # some points were fooled early
    assert torch.equal(a.success, b.success)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6)
    assert full.config()["early_stop"] is False


def test_a_constant_schedule_is_the_constant_step(digits_mlp):
    model, x, y = digits_mlp
    threat = ThreatModel(norm="linf", eps=0.1)
    runs = []
    for size in (0.02, (0.02,) * 5):
        plan = Ascent(steps=5, step_size=size)
        gen = make_generator(0, model.device)
        runs.append(gradient_ascent(model, threat, x, y, loss_fn=ce, plan=plan, gen=gen))
    assert torch.equal(*runs)
    # a decaying schedule is followed: the first step alone moves by its own size
    plan = Ascent(
        steps=1, step_size=(0.03,), random_start=False, track_best=False, early_stop=False
    )
    x_adv = ascend(lambda xa, _: (ce(model(xa), y), None), threat, x, plan)
    moved = (x_adv - x).abs().amax(1)
    assert float(moved.max()) <= 0.03 + 1e-6 and float(moved.max()) > 0.029


def test_last_iterate_moves_every_point_at_full_cost(digits_mlp):
    """Adversarial training's inner maximisation: no clean check, no early stop, misclassified
    points too, `steps` forward and backward passes per point, and no final check."""
    model, x, y = digits_mlp
    threat = ThreatModel(norm="linf", eps=0.1)
    wrong = model.predict(x) != y
    assert bool(wrong.any())
    plan = Ascent(steps=4, step_size=0.025, random_start=False, early_stop=False, track_best=False)

    def objective(x_rows, _row):
        return F.cross_entropy(model(x_rows), y, reduction="none"), None

    with model.counting() as counter:
        x_adv = ascend(objective, threat, x, plan, start=x)
    assert counter.backward == 4 * x.shape[0] and counter.forward == 4 * x.shape[0]
    assert bool(((x_adv - x).abs().amax(1) > 0)[wrong].all())
    assert bool(threat.contains(x_adv, x).all())
    trained = inner_max(
        model.module,
        threat,
        x,
        lambda logits: F.cross_entropy(logits, y, reduction="none"),
        start=x,
        steps=4,
        step_size=0.025,
    )
    assert torch.equal(trained, x_adv)
    with model.counting() as counter:  # eps = 0: nothing can move, nothing is spent
        same = ascend(objective, threat.with_eps(0.0), x, plan, start=x)
    assert torch.equal(same, x) and counter.forward == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"steps": -1, "step_size": 0.1}, "steps must be >= 0"),
        ({"steps": 3, "step_size": (0.1, 0.1)}, "one size per step"),
        ({"steps": 3, "step_size": -0.1}, "step_size must be >= 0"),
        ({"steps": 3, "step_size": 0.1, "restarts": 0}, "restarts must be >= 1"),
        ({"steps": 3, "step_size": 0.1, "track_best": False}, "last iterate"),
        ({"steps": 3, "step_size": 0.1, "l1_sparsity": 1.0}, "l1_sparsity"),
    ],
)
def test_plan_rejects_bad_settings(options, match):
    with pytest.raises(BadInput, match=match):
        Ascent(**options)


def test_ascend_refusals(digits_mlp):
    model, x, y = digits_mlp
    threat = ThreatModel(norm="l2", eps=1.0)

    def objective(xa, _row):
        return ce(model(xa), y[_row % x.shape[0]]), None

    with pytest.raises(BadInput, match="random start a generator"):
        ascend(objective, threat, x, Ascent(steps=2, step_size=0.1))
    with pytest.raises(BadInput, match="needs one restart"):
        ascend(objective, threat, x, Ascent(steps=2, step_size=0.1, restarts=2), start=x)
    with pytest.raises(BadInput, match="says which rows fool"):
        ascend(objective, threat, x, Ascent(steps=2, step_size=0.1, random_start=False))
    with pytest.raises(BadInput, match="early_stop"):
        get_attack("pgd", threat, early_stop="no")
