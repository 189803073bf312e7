"""`--batch-size auto`: the batch is sized from what autograd saves per point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from adversa import Model
from adversa.cli.main import main
from adversa.model.memory import CAP, FACTOR, FRACTION, auto_batch_size, saved_bytes
from adversa.nets import build_arch


def test_saved_bytes_grow_linearly_with_points() -> None:
    model = Model(build_arch("small-cnn", (1, 28, 28), 10).eval())
    x = torch.rand(3, 1, 28, 28)
    one, two, three = (saved_bytes(model, x[:k]) for k in (1, 2, 3))
    assert two - one == three - two > 0
    assert one > two - one  # the weights the layers save are counted once


def test_batch_follows_the_memory_budget() -> None:
    model = Model(build_arch("resnet18-cifar", (3, 32, 32), 10).eval())
    x = torch.rand(2, 3, 32, 32)
    one, two = saved_bytes(model, x[:1]), saved_bytes(model, x)
    per_point, fixed = two - one, one - (two - one)
    for gib in (1, 4, 16):
        free = gib * 2**30
        expected = min(CAP, max(1, int((FRACTION * free - fixed) // (FACTOR * per_point))))
        assert auto_batch_size(model, x, available=free) == expected
    assert auto_batch_size(model, x, available=2**20) == 1  # never below one point
    tiny = Model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    assert auto_batch_size(tiny, torch.rand(2, 4), available=2**34) == CAP


def test_cli_batch_size_auto(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["evaluate", "--model", "mnist-cnn", "--data", "mnist", "--norm", "linf"]
    args += ["--eps", "0.1", "--attacks", "fgsm", "--n", "20", "--batch-size", "auto"]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "ev" / "report.json").read_text())["config"]
    assert isinstance(config["batch_size"], int) and 1 <= config["batch_size"] <= CAP
    capsys.readouterr()
    assert main([*args[:-1], "lots", "--out", str(tmp_path / "x")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: usage, then the error
    assert last.startswith("adversa evaluate: error: argument --batch-size") and "'lots'" in last
