"""Membership inference on deliberately overfitted digit MLPs: 17 MLPs train together on
random halves of a 200-example pool; model 0 is the target, the other 16 the references."""

from __future__ import annotations

import pytest
import torch
from conftest import digits_split

from adversa import Model
from adversa.errors import BadInput
from adversa.privacy import (
    LiRA,
    References,
    StackedTraining,
    ThresholdAttack,
    fit_threshold,
    membership_metrics,
    random_halves,
    roc_curve,
    roc_svg,
    train_stacked,
)

POOL, REFS = 200, 16
TRAINING = StackedTraining(hidden=(256,), steps=200, seed=1)


@pytest.fixture(scope="module")
def setup() -> dict:
    x_train, y_train, x_test, y_test = digits_split()
    x, y = x_train[:POOL], y_train[:POOL]
    masks = random_halves(REFS + 1, POOL, seed=0)
    net = train_stacked(x, y, masks, TRAINING, num_classes=10)
    target = Model(net.member(0), num_classes=10, name="target")
    refs = References(net=net.select(list(range(1, REFS + 1))), masks=masks[1:])
    # fresh data: neither the target nor any model saw it; "membership" is a coin flip
    fresh_x, fresh_y = x_test[:POOL], y_test[:POOL]
    fresh_refs = References(
        net=train_stacked(fresh_x, fresh_y, masks[1:], TRAINING, num_classes=10),
        masks=masks[1:],
    )
    return dict(
        x=x,
        y=y,
        members=masks[0],
        target=target,
        refs=refs,
        fresh=(fresh_x, fresh_y),
        fresh_refs=fresh_refs,
    )


def test_threshold_and_lira_on_overfitted_model(setup: dict) -> None:
    x, y, members, target = setup["x"], setup["y"], setup["members"], setup["target"]
    base = ThresholdAttack()(target, x, y).metrics(members)
    online = LiRA(num_references=REFS)(target, x, y, setup["refs"]).metrics(members)
    offline = LiRA(num_references=REFS, online=False)(target, x, y, setup["refs"])
    fixed = LiRA(num_references=REFS, fixed_variance=True)(target, x, y, setup["refs"])
    print(
        "threshold",
        base,
        "\nonline",
        online,
        "\noffline",
        offline.metrics(members),
        "\nfixed",
        fixed.metrics(members),
    )
    assert base.auc > 0.6
    assert online.tpr_at_fpr[0.01] > base.tpr_at_fpr[0.01]
    assert fixed.metrics(members).tpr_at_fpr[0.01] > base.tpr_at_fpr[0.01]
    assert offline.metrics(members).auc > 0.55


def test_fresh_data_sits_near_chance(setup: dict) -> None:
    fresh_x, fresh_y = setup["fresh"]
    members = setup["members"]  # an arbitrary split: the target saw none of these points
    base = ThresholdAttack()(setup["target"], fresh_x, fresh_y).metrics(members)
    lira = LiRA(num_references=REFS)(setup["target"], fresh_x, fresh_y, setup["fresh_refs"])
    print("fresh threshold", base.auc, "fresh lira", lira.metrics(members).auc)
    assert abs(base.auc - 0.5) < 0.12
    assert abs(lira.metrics(members).auc - 0.5) < 0.12


def test_yeom_threshold_decision(setup: dict) -> None:
    x, y, members, target = setup["x"], setup["y"], setup["members"], setup["target"]
    tau = fit_threshold(target, x[members], y[members])
    result = ThresholdAttack(threshold=tau)(target, x, y)
    pred = result.predicted
    balanced = 0.5 * (pred[members].float().mean() + (~pred[~members]).float().mean())
    assert balanced > 0.55
    assert result.cost.forward == POOL


def test_metrics_exact_on_small_case() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    members = torch.tensor([True, False, True, False])
    m = membership_metrics(scores, members, fprs=(0.4,))
    assert m.auc == pytest.approx(0.75)
    assert m.tpr_at_fpr[0.4] == pytest.approx(0.5)
    assert m.balanced_accuracy == pytest.approx(0.75)
    fpr, tpr = roc_curve(torch.tensor([1.0, 1.0]), torch.tensor([True, False]))
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]
    assert roc_svg({"a": (fpr, tpr)}).startswith("<svg")


@pytest.mark.parametrize("fpr", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_fpr_targets_outside_unit_interval(fpr: float) -> None:
    with pytest.raises(BadInput, match="fpr target must lie strictly inside"):
        membership_metrics(torch.rand(4), torch.tensor([1, 0, 1, 0]).bool(), fprs=(fpr,))


def test_too_few_references_for_online() -> None:
    with pytest.raises(BadInput, match="num_references must be >= 4 for LiRA online"):
        LiRA(num_references=2)
    masks = random_halves(2, 20, seed=0)
    from adversa.privacy import lira_scores

    with pytest.raises(BadInput, match="reference models per candidate"):
        lira_scores(torch.zeros(20), torch.zeros(2, 20), masks, online=True)


def test_same_seed_same_references() -> None:
    x, y, _, _ = digits_split()
    small = StackedTraining(hidden=(16,), steps=5)
    a = LiRA(num_references=4, training=small, seed=3).references(x[:40], y[:40], 10)
    b = LiRA(num_references=4, training=small, seed=3).references(x[:40], y[:40], 10)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.net.logits(x[:40]), b.net.logits(x[:40]))
    assert torch.equal(a.masks.sum(1), torch.full((4,), 20))


def test_shadow_attack(setup: dict) -> None:
    from adversa.privacy import ShadowAttack

    x_train, y_train, _, _ = digits_split()
    shadow_x, shadow_y = x_train[POOL : 2 * POOL], y_train[POOL : 2 * POOL]  # disjoint pool
    attack = ShadowAttack(num_shadows=8, training=TRAINING)
    result = attack(setup["target"], setup["x"], setup["y"], shadow_x, shadow_y)
    metrics = result.metrics(setup["members"])
    print("shadow", metrics)
    assert metrics.auc > 0.55  # measured 0.62; the threshold baseline gets 0.69 here


@pytest.mark.parametrize(
    ("attack", "labels_only", "bound"),
    # measured AUC: deepfool 0.676, hsj (labels only, 1000 queries) 0.621; threshold 0.695
    [("deepfool", False, 0.62), ("hsj", True, 0.58)],
)
def test_boundary_distance_label_only(setup: dict, attack: str, labels_only: bool, bound) -> None:
    from adversa.privacy import BoundaryDistance

    x, y, members, target = setup["x"], setup["y"], setup["members"], setup["target"]
    model = target.labels_only() if labels_only else target
    boundary = BoundaryDistance(attack=attack, max_queries=1000)
    result = boundary(model, x, y)
    metrics = result.metrics(members)
    fresh = boundary(model, *setup["fresh"]).metrics(members)
    print(attack, metrics, "fresh", fresh.auc)
    assert result.name == "boundary" and result.scores.shape == (POOL,)
    assert metrics.auc > bound
    assert abs(fresh.auc - 0.5) < 0.1  # measured 0.455 (deepfool), 0.468 (hsj)
    assert bool((result.scores >= 0).all())
    if labels_only:  # label access only: queries, no gradients
        assert result.cost.queries > 0 and result.cost.backward == 0
    assert boundary.evasion(target) == attack
    assert BoundaryDistance().evasion(target.labels_only()) == "hsj"
    assert BoundaryDistance().evasion(target) == "deepfool"


def test_boundary_bad_input(setup: dict) -> None:
    from adversa.errors import AccessError
    from adversa.privacy import BoundaryDistance

    with pytest.raises(BadInput, match="attack must be one of auto, hsj"):
        BoundaryDistance(attack="pgd")
    with pytest.raises(BadInput, match="max_queries and batch_size must be >= 1"):
        BoundaryDistance(max_queries=0)
    labels = setup["target"].labels_only()
    with pytest.raises(AccessError, match="needs gradient access"):
        BoundaryDistance(attack="deepfool")(labels, setup["x"][:4], setup["y"][:4])
