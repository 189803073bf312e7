"""Shared fixtures: one torch thread, a private model cache, and small trained models."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from adversa import Model

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def adversa_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every test run trains zoo models into its own cache, never the user's."""
    path = tmp_path_factory.mktemp("adversa-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("ADVERSA_CACHE", str(path))
    yield str(path)
    mp.undo()


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as (N, 64) in [0, 1]: x_train, y_train, x_test, y_test."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    return x[train], y[train], x[test], y[test]


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[Model, torch.Tensor, torch.Tensor]:
    """A small MLP trained for a second on scikit-learn's 8x8 digits; (model, x_test, y_test)
    with x in [0, 1] of shape (N, 64)."""
    x_train, y_train, x_test, y_test = digits_split()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x_train), y_train).backward()
        opt.step()
    net.eval()
    return Model(net, num_classes=10, name="digits-mlp"), x_test, y_test
