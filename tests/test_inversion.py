"""MIFace on the digits MLP: reconstructions of every class, batched over classes and inits."""

from __future__ import annotations

import pytest
import torch
from conftest import digits_split

from adversa import Model
from adversa.errors import AccessError, BadInput
from adversa.privacy import MIFace, class_means, inversion_measures


@pytest.fixture(scope="module")
def inverted(digits_mlp, digits_surrogate):
    model = digits_mlp[0]
    x_train, y_train, _, _ = digits_split()
    result = MIFace(steps=300, objective="log")(model, (64,), mean_image=x_train.mean(0))
    return model, digits_surrogate, result, x_train, y_train


def test_reconstructions_are_classified_as_targets(inverted) -> None:
    model, independent, result, x_train, y_train = inverted
    measures = inversion_measures(result, model, x_train, y_train, independent)
    print(measures)
    assert result.x.shape == (10, 3, 64)
    assert result.x.min() >= 0 and result.x.max() <= 1
    assert measures["target_rate"] == 1.0
    assert float(result.confidence.min()) > 0.9
    assert measures["independent_rate"] > 0.5  # chance is 0.1
    assert result.cost.backward > 0


def test_paper_cost_from_zeros_and_mean(digits_mlp) -> None:
    model = digits_mlp[0]
    x_train, _y_train, _, _ = digits_split()
    result = MIFace(steps=200, inits=("zeros", "mean"))(model, (64,), mean_image=x_train.mean(0))
    assert float(result.confidence.min()) >= 0.9


def test_same_seed_same_reconstruction(digits_mlp) -> None:
    attack = MIFace(steps=5, inits=("random",), seed=4)
    a, b = attack(digits_mlp[0], (64,)), attack(digits_mlp[0], (64,))
    assert torch.equal(a.x, b.x)


def test_tv_prior_on_images() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    model = Model(net, num_classes=3)
    result = MIFace(steps=20, tv_weight=0.01, inits=("zeros",))(model, (1, 4, 4))
    assert result.x.shape == (3, 1, 1, 4, 4)


def test_class_means() -> None:
    x = torch.tensor([[0.0], [2.0], [4.0]])
    assert class_means(x, torch.tensor([0, 0, 1]), 2).flatten().tolist() == [1.0, 4.0]


def test_bad_input(digits_mlp) -> None:
    model = digits_mlp[0]
    with pytest.raises(AccessError, match="MIFace needs gradient access"):
        MIFace(steps=2)(model.scores_only(), (64,))
    with pytest.raises(BadInput, match="init 'mean' needs mean_image"):
        MIFace(steps=2, inits=("mean",))(model, (64,))
    with pytest.raises(BadInput, match="inits must be"):
        MIFace(inits=("noise",))
    with pytest.raises(BadInput, match="classes must lie in"):
        MIFace(steps=2, inits=("zeros",))(model, (64,), classes=torch.tensor([10]))
