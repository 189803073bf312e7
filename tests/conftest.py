"""Shared fixtures: one torch thread, a private model cache, and small trained models."""

from __future__ import annotations

import re

import pytest
import torch
from sklearn.datasets import load_digits

from adversa import Model
from adversa.cli.main import main

torch.set_num_threads(1)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], pattern: str) -> str:
    """Runs the command line `argv` and checks that it is refused as bad input: exit 2 and
    one line on stderr, "adversa: error: ..." matching `pattern`, no traceback. The line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adversa: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


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


def train_digits_mlp(seed: int, hidden: int = 64) -> torch.nn.Module:
    """An MLP trained full-batch for 150 Adam steps (about a second) on the digits split."""
    x_train, y_train, _, _ = digits_split()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x_train), y_train).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[Model, torch.Tensor, torch.Tensor]:
    """A small MLP trained on scikit-learn's 8x8 digits; (model, x_test, y_test) with x in
    [0, 1] of shape (N, 64); clean accuracy about 96%."""
    _, _, x_test, y_test = digits_split()
    return Model(train_digits_mlp(0), num_classes=10, name="digits-mlp"), x_test, y_test


@pytest.fixture(scope="session")
def digits_surrogate() -> Model:
    """An independently initialised, wider MLP on the same data: a transfer surrogate."""
    return Model(train_digits_mlp(1, hidden=128), num_classes=10, name="digits-surrogate")


@pytest.fixture(scope="session")
def mnist_cnn(adversa_cache: str) -> tuple[Model, object]:
    """The zoo's "mnist-cnn" (trained once per test session into the session cache, about
    10 s on one thread; about 96 % clean accuracy) and the 1,000-image MNIST test split, an
    `adversa.data.Dataset` with x of shape (1000, 1, 28, 28) in [0, 1]."""
    from adversa.data import load_data
    from adversa.zoo import load_zoo_model

    module = load_zoo_model("mnist-cnn")
    return Model(module, num_classes=10, name="mnist-cnn"), load_data("mnist", split="test")


class TupleOutput(torch.nn.Module):
    """A model returning (logits, logits): adversa takes the first tensor, with a warning."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, logits


class NaNOutput(torch.nn.Module):
    """A model whose logits are all NaN: refused with exit 2."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * float("nan")
