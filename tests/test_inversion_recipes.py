"""The inversion recipes beyond the MIFace paper: normalised L2 steps (Santurkar et al.
2019), the TV_beta prior (Mahendran and Vedaldi 2015), batched restarts, a -log p that does
not round to 0, the brightness-free nearest-class-mean measure, and a robust model's
reconstructions against a standard one's."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import digits_split, train_digits_mlp

from adversa import Model
from adversa.errors import BadInput
from adversa.jobs.inversion import InversionPlan
from adversa.privacy.inversion import (
    MIFace,
    inversion_measures,
    nearest_class_mean,
    target_nll,
    total_variation,
)


def _linear(d: int = 16, k: int = 3) -> Model:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Model(torch.nn.Linear(d, k), num_classes=k)


def test_l2_step_changes_each_value_by_step_size_rms() -> None:
    """One normalised step from an interior start moves the input by step_size * range in
    root-mean-square, whatever the gradient's scale."""
    model, mean = _linear(), torch.full((16,), 0.5)
    for step_size in (0.01, 0.03):
        attack = MIFace(update="l2", step_size=step_size, steps=2, gamma=1.0, inits=("mean",))
        result = attack(model, (16,), mean_image=mean)
        moved = (result.x.reshape(3, 16) - mean).square().mean(1).sqrt()
        assert torch.allclose(moved, torch.full((3,), step_size), rtol=1e-4)
        assert result.cost.backward == 3 * 2


def test_restarts_keep_the_most_confident_start() -> None:
    """Restart 0 starts from the init itself, so the best of 4 restarts is at least as
    confident as the single start, and the noisy restarts win for some classes."""
    model, mean = _linear(), torch.full((16,), 0.5)
    base = dict(update="l2", steps=3, gamma=1.0, objective="log", inits=("mean",))
    one = MIFace(**base)(model, (16,), mean_image=mean)
    four = MIFace(**base, restarts=4, noise=0.2, seed=3)(model, (16,), mean_image=mean)
    assert four.x.shape == one.x.shape == (3, 1, 16) and four.restarts == 4
    assert bool((four.confidence >= one.confidence - 1e-6).all())
    assert bool((four.confidence > one.confidence + 1e-4).any())
    again = MIFace(**base, restarts=4, noise=0.2, seed=3)(model, (16,), mean_image=mean)
    assert torch.equal(again.x, four.x)  # same seed, same restarts


def test_mean_of_restarts_is_their_average() -> None:
    """combine="mean" returns the average of the restarts' results: equal to the single
    start when the restarts cannot differ (no noise), inside the bounds otherwise, with the
    confidence measured on the average itself."""
    model, mean = _linear(), torch.full((16,), 0.5)
    base = dict(update="l2", steps=5, gamma=1.0, objective="log", inits=("mean",))
    one = MIFace(**base)(model, (16,), mean_image=mean)
    same = MIFace(**base, restarts=3, noise=0.0, combine="mean")(model, (16,), mean_image=mean)
    assert torch.allclose(same.x, one.x, atol=1e-6)
    noisy = MIFace(**base, restarts=3, noise=0.3, combine="mean")(model, (16,), mean_image=mean)
    best = MIFace(**base, restarts=3, noise=0.3)(model, (16,), mean_image=mean)
    assert not torch.allclose(noisy.x, best.x, atol=1e-3) and noisy.combine == "mean"
    assert noisy.x.min() >= 0 and noisy.x.max() <= 1
    probs = torch.softmax(model.module(noisy.x.reshape(3, 16)), 1)
    assert torch.allclose(noisy.confidence.flatten(), probs.diagonal(), atol=1e-5)


def test_target_nll_stays_positive_where_float32_softmax_saturates() -> None:
    logits = torch.tensor([[40.0, 0.0, -3.0], [1.0, 2.0, 0.5]])
    target = torch.tensor([0, 1])
    nll = target_nll(logits, target)
    assert float(-torch.log_softmax(logits, 1)[0, 0]) == 0.0  # what the old cost saw
    assert nll[0] > 0 and math.isclose(float(nll[0]), math.exp(-40) + math.exp(-43), rel_tol=1e-5)
    assert math.isclose(float(nll[1]), float(-torch.log_softmax(logits, 1)[1, 1]), rel_tol=1e-6)


def test_total_variation_beta() -> None:
    """A vertical edge of height h on 4 rows: TV_1 = 4 h, TV_2 = 4 h^2."""
    x = torch.zeros(1, 1, 4, 4)
    x[..., 2:] = 0.5
    assert math.isclose(float(total_variation(x, 1.0)), 2.0, rel_tol=1e-4)
    assert math.isclose(float(total_variation(x, 2.0)), 1.0, rel_tol=1e-6)
    assert float(total_variation(torch.zeros(2, 16)).abs().sum()) == 0.0


def test_nearest_class_mean_ignores_brightness() -> None:
    """A dimmed copy of class 1's mean is nearest class 0's mean in RMSE, but correlates
    with class 1's."""
    means = torch.tensor([[0.1, 0.1, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    dim = 0.3 * means[1:]
    assert int(torch.cdist(dim, means).argmin()) == 0
    cls, corr = nearest_class_mean(dim, means)
    assert cls.tolist() == [1] and math.isclose(float(corr), 1.0, rel_tol=1e-5)


def _pgd_trained_mlp(eps: float, seed: int = 0, steps: int = 300) -> torch.nn.Module:
    """A digits MLP trained full-batch on PGD-3 linf examples at `eps` (Madry et al. 2018)."""
    x, y, _, _ = digits_split()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        delta = (2 * torch.rand(x.shape, generator=gen) - 1) * eps
        for _ in range(3):
            delta.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(net((x + delta).clamp(0, 1)), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta + eps / 2 * grad.sign()).clamp(-eps, eps).detach()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net((x + delta).clamp(0, 1)), y).backward()
        opt.step()
    return net.eval()


def test_robust_model_inverts_closer_to_the_class_means(digits_surrogate) -> None:
    """Santurkar et al. 2019 in miniature: the default recipe of `adversa invert` on a
    PGD-trained digits MLP gives reconstructions that correlate more with the real class
    means than a standard MLP's (measured 0.827 against 0.716), both recognised."""
    x, y, _, _ = digits_split()
    attack = InversionPlan().attack()
    corr = {}
    for name, net in (("standard", train_digits_mlp(0)), ("robust", _pgd_trained_mlp(0.2))):
        model = Model(net, num_classes=10)
        result = attack(model, (64,), mean_image=x.mean(0))
        measures = inversion_measures(result, model, x, y, digits_surrogate)
        print(name, measures)
        assert measures["independent_rate"] >= 0.9 and measures["nearest_class_mean_rate"] >= 0.9
        corr[name] = measures["class_mean_correlation"]
    assert corr["robust"] > corr["standard"] + 0.05


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("restarts", 0, "restarts must be >= 1, got 0"),
        ("update", "adam", "update must be one of"),
        ("tv_beta", 0.5, "tv_beta must be >= 1"),
        ("noise", -0.1, "noise must be >= 0"),
        ("step_size", 0.0, "step_size must be > 0"),
        ("combine", "median", "combine must be 'best' or 'mean'"),
    ],
)
def test_bad_recipe_fields(field: str, value: object, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        MIFace(**{field: value})
