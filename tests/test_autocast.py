"""Attacks searching in reduced precision (`Model(autocast=...)`, `--autocast`): the search
runs under torch.autocast, the harness's verification in the model's own precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adversa import Model, ThreatModel, get_attack
from adversa.errors import BadInput
from tests.conftest import digits_split, train_digits_mlp


class DtypeProbe(nn.Module):
    """Records the dtype of the first layer's output on every pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.net[0](x)
        self.seen.append(hidden.dtype)
        return self.net[2](self.net[1](hidden))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_search_in_reduced_precision_verification_in_full(precision):
    _, _, x, y = digits_split()
    probe = DtypeProbe(train_digits_mlp(0))
    model = Model(probe, num_classes=10, autocast=precision)
    assert model.predict(x).dtype == torch.long and probe.seen[-1] == torch.float32
    probe.seen.clear()
    threat = ThreatModel(norm="linf", eps=0.1)
    result = get_attack("pgd", threat, steps=10)(model, x, y)
    # every pass of the search in reduced precision, the last one (verification) in float32
    assert set(probe.seen[:-1]) == {getattr(torch, precision)}
    assert probe.seen[-1] == torch.float32
    with torch.no_grad():
        full = probe.net(result.x_adv).argmax(1)
    assert torch.equal(result.pred, full)
    assert torch.equal(result.success, full != y)
    # the search finds about as many points as in full precision
    plain = get_attack("pgd", threat, steps=10)(Model(probe.net, num_classes=10), x, y)
    assert abs(result.success_rate - plain.success_rate) <= 0.05
    assert result.success_rate >= 0.5


def test_autocast_names_are_checked():
    net = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(BadInput, match="--autocast 'int8': expected one of bfloat16, float16"):
        Model(net, autocast="int8")
