"""Derived models: views share one cost meter, keep their access level, and nothing copies
another model's state (EOT, query views, the transfer attack's surrogate, a guarded model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adversa import ThreatModel, get_attack
from adversa.attacks.adaptive import EOT
from adversa.errors import AccessError
from adversa.evaluation.detector_eval import Guarded
from adversa.input_defenses.detectors import Detector
from adversa.model import Access, Model, infer_num_classes


def _model(num_classes: int | None = 3, seed: int = 0) -> Model:
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return Model(net, num_classes=num_classes)


def _batch(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 4, generator=torch.Generator().manual_seed(1))


class _Noisy(nn.Module):
    """A randomised classifier: Gaussian noise on the input, then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x + 0.1 * torch.randn_like(x))


class _NormDetector(Detector):
    name = "norm"

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).norm(dim=1)


def test_a_view_shares_the_parents_meter():
    model, x = _model(), _batch()
    scores = model.scores_only()
    assert scores.meter is model.meter and scores.module is model.module
    assert scores.num_classes == 3 and scores.bounds == model.bounds
    with model.counting() as on_parent, scores.counting() as on_view:
        scores(x)
        model(x)
    # a query is a forward pass and a query; the parent's own pass is a forward pass
    for counter in (on_parent, on_view):
        assert (counter.forward, counter.queries, counter.backward) == (10, 5, 0)


def test_a_view_of_a_query_view_counts_each_query_once():
    model, x = _model(), _batch()
    labels = model.scores_only().labels_only()
    with model.counting() as counter:
        out = labels(x)
    assert (counter.forward, counter.queries) == (5, 5)
    assert torch.equal(out.sum(1), torch.ones(5)) and labels.access == Access.LABELS
    assert labels.view(Access.LABELS) is labels  # already a query view: no second count


def test_access_levels_are_enforced():
    model, x = _model(), _batch()
    scores = model.scores_only()
    with pytest.raises(AccessError, match="scores-only view of 'model' grants no gradient"):
        scores(x.requires_grad_())
    with pytest.raises(AccessError, match="needs gradient access"):
        get_attack("pgd", ThreatModel(norm="linf", eps=0.1))(scores, _batch(), torch.zeros(5))
    with pytest.raises(AccessError, match="cannot grant gradient"):
        scores.derive(access=Access.GRADIENT)
    with pytest.raises(AccessError, match="cannot grant scores"):
        model.labels_only().scores_only()


def test_eot_counts_k_draws_per_sample():
    model = Model(_Noisy(), num_classes=3)
    x = _batch().requires_grad_()
    eot = EOT(model, samples=7)
    assert eot.meter is model.meter and eot.name == "model+eot7"
    with model.counting() as counter:
        eot(x).sum().backward()
    assert (counter.forward, counter.backward, counter.queries) == (35, 35, 0)
    with eot.counting() as counter:
        eot.scores_only()(x.detach())
    assert (counter.forward, counter.queries) == (35, 5)  # a query of the expectation: 5


def test_transfer_reports_the_surrogates_cost():
    target, surrogate = _model(), _model()  # same weights, separate meters
    x = _batch()
    y = target.predict(x)
    attack = get_attack("transfer", ThreatModel(norm="linf", eps=0.1), surrogate=surrogate)
    with target.counting() as on_target, surrogate.counting() as on_surrogate:
        result = attack(target.labels_only(), x, y)
    # the target answered the final check only; the rest is the surrogate's PGD
    assert result.cost.queries == 5
    assert result.cost.backward == on_surrogate.backward > 0
    assert result.cost.forward == on_surrogate.forward + 5
    assert (on_target.forward, on_target.backward) == (result.cost.forward, result.cost.backward)


def test_infer_num_classes_leaves_its_argument_unchanged():
    model, x = _model(num_classes=None), _batch()
    view = model.scores_only()
    with model.counting() as counter:
        assert infer_num_classes(view, x) == 3
    assert view.num_classes is None and model.num_classes is None
    assert counter.queries == 0  # the check goes past the view
    # resolving keeps the count on the base model, where every view reads it
    assert view.resolve_num_classes(x) == 3
    assert model.num_classes == 3 and EOT(model, 2).num_classes == 3


def test_a_query_view_of_a_guarded_model_records_its_queries():
    model, x = _model(), _batch()
    detector = _NormDetector()
    detector.threshold = 10.0
    guarded = Guarded(model, detector)
    assert guarded.meter is model.meter and guarded.num_classes == 4
    with model.counting() as counter:
        out = guarded.scores_only()(x)
    assert out.shape == (5, 4) and (counter.forward, counter.queries) == (5, 5)
    assert guarded.scores_only().rejects
