"""Attacks that need per-class gradients work from the top-k classes, so their cost and memory
grow with k, never with the number of classes (issue 16: 1,000-class models)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adversa import Model, ThreatModel, get_attack


def _model(num_classes: int) -> Model:
    torch.manual_seed(0)
    return Model(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes)))


def _points(model: Model, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return x, model(x).argmax(1)


@pytest.mark.parametrize(
    ("name", "options", "per_step"),
    [
        ("fab", {"candidates": 10}, 9),  # the 9 classes ranked after the label
        ("fab-t", {"n_target_classes": 3}, 3),  # one per target, 3 targets
        ("deepfool", {"candidates": 10}, 9),
    ],
)
def test_backward_passes_grow_with_k_not_with_classes(
    name: str, options: dict, per_step: int
) -> None:
    threat = ThreatModel(norm="l2", eps=math.inf)
    if name.startswith("fab"):
        options = {**options, "final_search_steps": 0}
    for classes in (20, 1000):
        model = _model(classes)
        x, y = _points(model)
        result = get_attack(name, threat=threat, steps=10, **options)(model, x, y)
        assert bool(result.success.all()), (name, classes)  # a linear model is always fooled
        # all-class linearisation would need 4 * 10 * (classes - 1) backward passes
        assert 0 < result.cost.backward <= 4 * 10 * per_step, (name, classes)


def test_fab_on_few_classes_still_linearises_every_class() -> None:
    """With K <= candidates, FAB is the paper's untargeted FAB: all K - 1 classes per step."""
    model = _model(5)
    x, y = _points(model)
    threat = ThreatModel(norm="linf", eps=math.inf)
    result = get_attack("fab", threat=threat, steps=3, final_search_steps=0)(model, x, y)
    assert result.cost.backward == 4 * 3 * 4
