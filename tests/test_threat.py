"""ThreatModel: projection, random starts and distances, as properties over random inputs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adversa import ThreatModel
from adversa.errors import BadInput
from adversa.rng import make_generator

NORM_EPS = st.sampled_from(
    [("linf", 0.05), ("linf", 0.3), ("l2", 0.5), ("l2", 3.0), ("l1", 1.0), ("l1", 10.0)]
)


def _batch(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=dtype)
    far = x + 4 * torch.randn(shape, generator=gen, dtype=dtype)
    return x, far


@settings(max_examples=60, deadline=None)
@given(
    norm_eps=NORM_EPS,
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(3, 10), (2, 1, 5, 5), (4, 3, 4, 4)]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    bounds=st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]),
)
def test_project_lands_in_ball_and_box(norm_eps, seed, shape, dtype, bounds):
    norm, eps = norm_eps
    threat = ThreatModel(norm=norm, eps=eps, bounds=bounds)
    x, far = _batch(seed, shape, dtype)
    x = bounds[0] + (bounds[1] - bounds[0]) * x
    far = bounds[0] + (bounds[1] - bounds[0]) * far
    projected = threat.project(far, x)
    assert projected.dtype == dtype and projected.shape == x.shape
    assert threat.contains(projected, x).all()
    # Projection is idempotent and leaves points already inside alone.
    width = bounds[1] - bounds[0]
    assert torch.allclose(threat.project(projected, x), projected, atol=1e-5 * width)


@settings(max_examples=40, deadline=None)
@given(norm_eps=NORM_EPS, seed=st.integers(0, 2**31 - 1))
def test_random_start_inside_and_seeded(norm_eps, seed):
    norm, eps = norm_eps
    threat = ThreatModel(norm=norm, eps=eps)
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
    a = threat.random_start(x, make_generator(seed))
    b = threat.random_start(x, make_generator(seed))
    assert torch.equal(a, b)
    assert threat.contains(a, x).all()
    assert not torch.equal(a, x)


def test_l2_projection_is_the_euclidean_one():
    threat = ThreatModel(norm="l2", eps=1.0, bounds=(-10.0, 10.0))
    x = torch.zeros(1, 2)
    out = threat.project(torch.tensor([[3.0, 4.0]]), x)
    assert torch.allclose(out, torch.tensor([[0.6, 0.8]]))


def test_l1_projection_matches_soft_threshold():
    threat = ThreatModel(norm="l1", eps=1.0, bounds=(-10.0, 10.0))
    x = torch.zeros(1, 3)
    out = threat.project(torch.tensor([[2.0, -1.0, 0.2]]), x)
    # Duchi et al.: theta = 1 -> (1, 0, 0).
    assert torch.allclose(out, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)


def test_distance_per_norm():
    x = torch.zeros(2, 4)
    x_adv = torch.tensor([[0.1, -0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    assert torch.allclose(
        ThreatModel(norm="linf", eps=1).distance(x_adv, x), torch.tensor([0.2, 0.5])
    )
    assert torch.allclose(
        ThreatModel(norm="l1", eps=1).distance(x_adv, x), torch.tensor([0.3, 0.5])
    )


def test_unbounded_eps_keeps_box_only():
    threat = ThreatModel(norm="l2", eps=math.inf)
    x = torch.full((1, 3), 0.5)
    assert torch.equal(
        threat.project(torch.tensor([[9.0, -9.0, 0.7]]), x), torch.tensor([[1.0, 0.0, 0.7]])
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "linf", "eps": -0.1}, r"eps must be >= 0, got -0.1"),
        ({"norm": "linf", "eps": float("nan")}, r"eps must be >= 0"),
        ({"norm": "l3", "eps": 0.1}, r"norm must be one of linf, l2, l1, got 'l3'"),
        ({"norm": "linf", "eps": 0.1, "bounds": (1.0, 0.0)}, r"lo < hi"),
        ({"norm": "linf", "eps": 1.5}, r"larger than the bounds allow"),
    ],
)
def test_bad_threat_models(kwargs, match):
    with pytest.raises(BadInput, match=match):
        ThreatModel(**kwargs)


def test_threat_is_frozen():
    threat = ThreatModel(norm="linf", eps=0.1)
    with pytest.raises(AttributeError):
        threat.eps = 0.2  # type: ignore[misc]


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_random_start_of_an_empty_batch(norm):
    x = torch.empty(0, 1, 4, 4)
    assert ThreatModel(norm=norm, eps=0.3).random_start(x, make_generator(0)).shape == x.shape
