"""Transfer: examples crafted on a surrogate, used against a target it only queries."""

from __future__ import annotations

import pytest

from adversa import ThreatModel, get_attack
from adversa.errors import BadInput


def test_transfer_through_a_labels_only_view(digits_mlp, digits_surrogate):
    model, x, y = digits_mlp
    threat = ThreatModel(norm="linf", eps=0.15)
    transfer = get_attack("transfer", threat, surrogate=digits_surrogate, attack="pgd")
    result = transfer(model.labels_only(), x, y)
    white_box = get_attack("pgd", threat)(model, x, y)
    # Measured: transfer leaves 0.35 robust, white-box PGD on the target 0.03.
    assert result.success.float().mean() > 0.5
    assert white_box.success.sum() >= result.success.sum()
    # The surrogate's passes are part of the cost; the target answered one query per point.
    assert result.cost.backward > 0
    assert result.cost.queries == x.shape[0]


def test_transfer_needs_a_surrogate():
    with pytest.raises(BadInput, match="needs a surrogate model"):
        get_attack("transfer", ThreatModel(norm="linf", eps=0.1))


def test_transfer_inner_attack_is_checked(digits_surrogate):
    with pytest.raises(BadInput, match="unknown attack 'pgx'"):
        get_attack(
            "transfer", ThreatModel(norm="linf", eps=0.1), surrogate=digits_surrogate, attack="pgx"
        )
