"""Normalisation inside the model: `Model(mean=, std=)`, `--normalize`, and the warnings for
a model that expects normalised inputs but gets pixels (or gets data normalised twice)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from adversa import Model
from adversa.cli.main import main
from adversa.errors import BadInput
from adversa.nets import NORMALIZATIONS
from adversa.nets.normalize import parse_normalization

MEAN, STD = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS["imagenet"])


def test_model_normalises_in_front_of_the_module() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    model = Model(net, mean=NORMALIZATIONS["imagenet"][0], std=NORMALIZATIONS["imagenet"][1])
    x = torch.rand(4, 3, 2, 2)
    torch.testing.assert_close(model(x), net((x - MEAN) / STD))
    assert model.normalization == {
        "mean": list(NORMALIZATIONS["imagenet"][0]),
        "std": list(NORMALIZATIONS["imagenet"][1]),
    }
    assert Model(net, mean=0.5, std=0.25).normalization == {"mean": [0.5], "std": [0.25]}
    with pytest.raises(BadInput, match="both mean and std"):
        Model(net, mean=0.5)
    with pytest.raises(BadInput, match="std must be > 0"):
        Model(net, mean=0.5, std=0.0)
    with pytest.raises(BadInput, match="2 means and 3 stds"):
        Model(net, mean=[0.1, 0.2], std=[1, 1, 1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("imagenet", (list(NORMALIZATIONS["imagenet"][0]), list(NORMALIZATIONS["imagenet"][1]))),
        ("CIFAR10", (list(NORMALIZATIONS["cifar10"][0]), list(NORMALIZATIONS["cifar10"][1]))),
        ("0.5/0.25", ([0.5], [0.25])),
        ("0.1,0.2,0.3/1,2,3", ([0.1, 0.2, 0.3], [1.0, 2.0, 3.0])),
    ],
)
def test_normalize_spellings(text: str, expected: tuple) -> None:
    assert parse_normalization(text) == expected


@pytest.mark.parametrize("text", ["imagenette", "0.5", "0.5/0", "a/b", "0.5/0.2/0.1"])
def test_bad_normalize_values_name_the_flag(text: str) -> None:
    with pytest.raises(BadInput, match="--normalize"):
        parse_normalization(text)


def _colour_data(path: Path, n: int, seed: int) -> None:
    """Two classes: a red channel darker or brighter than ImageNet's mean red (0.485), so a
    model trained on normalised inputs puts its threshold near 0 and fails on raw pixels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0.0, 1.0, size=(n, 3, 8, 8)).astype(np.float32)
    x[:, 0] = np.where(y[:, None, None] == 0, 0.2, 0.6) + 0.2 * x[:, 0]
    np.savez(path, x=x, y=y)


def _expects_normalised(path: Path) -> None:
    """A small CNN trained on ImageNet-normalised inputs, saved as TorchScript."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    data = np.load(path.parent / "train.npz")
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net((x - MEAN) / STD), y).backward()
        opt.step()
    torch.jit.save(torch.jit.script(net.eval()), str(path))


@pytest.fixture(scope="module")
def normalised_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("norm")
    _colour_data(root / "train.npz", 256, 0)
    _colour_data(root / "test.npz", 128, 1)
    _expects_normalised(root / "model.pt")
    return root


def _evaluate(root: Path, out: Path, *extra: str) -> dict:
    args = ["evaluate", "--model", str(root / "model.pt"), "--data", str(root / "test.npz")]
    args += ["--norm", "linf", "--eps", "0.01", "--attacks", "fgsm", "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / "report.json").read_text())


def test_missing_normalisation_is_warned(normalised_model: Path, tmp_path: Path) -> None:
    plain = _evaluate(normalised_model, tmp_path / "plain")
    assert plain["clean_accuracy"] <= 0.75
    assert any("--normalize imagenet" in w for w in plain["warnings"])
    assert plain["config"]["normalize"] is None
    fixed = _evaluate(normalised_model, tmp_path / "fixed", "--normalize", "imagenet")
    assert fixed["clean_accuracy"] >= 0.95
    assert fixed["config"]["normalize"]["std"] == list(NORMALIZATIONS["imagenet"][1])
    assert not any("normalis" in w for w in fixed["warnings"])
    assert "normalize" in (tmp_path / "fixed" / "report.html").read_text()


def test_normalising_normalised_data_is_warned(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3, 8, 8)).clip(-2.9, 2.9).astype(np.float32)
    np.savez(tmp_path / "z.npz", x=x, y=np.arange(64) % 2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "m.pt"))
    args = ["evaluate", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "z.npz")]
    args += ["--bounds", "-3,3", "--norm", "linf", "--eps", "0.01", "--attacks", "fgsm"]
    args += ["--normalize", "imagenet", "--out", str(tmp_path / "ev")]
    assert main(args) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert any("normalised already" in w for w in report["warnings"])


def test_bad_normalize_on_the_cli_is_one_line(
    normalised_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["evaluate", "--model", str(normalised_model / "model.pt"), "--data"]
    args += [str(normalised_model / "test.npz"), "--norm", "linf", "--eps", "0.01"]
    capsys.readouterr()
    assert main([*args, "--normalize", "imagenette", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--normalize 'imagenette'" in err[0]


def test_certify_records_the_normalisation(normalised_model: Path, tmp_path: Path) -> None:
    args = ["certify", "--model", str(normalised_model / "model.pt"), "--data"]
    args += [str(normalised_model / "test.npz"), "--method", "ibp", "--eps", "0.001"]
    args += ["--normalize", "imagenet", "--n", "16", "--out", str(tmp_path / "c")]
    assert main(args) == 0
    report = json.loads((tmp_path / "c" / "certify.json").read_text())
    assert report["config"]["normalize"]["mean"] == list(NORMALIZATIONS["imagenet"][0])
    assert report["clean_accuracy"] >= 0.9  # the normalisation is in front of the network
