"""The colour architectures: the published sizes, normalisation inside the model, gradients
to the pixels, and `adversa train --arch` on a colour data set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adversa import Model, ThreatModel, get_attack
from adversa.cli.main import main
from adversa.errors import BadInput
from adversa.nets import NORMALIZATIONS, Normalize, ResNet, ViT, WideResNet, build_arch

# Parameter counts the papers and their reference implementations publish.
PUBLISHED = [
    ("resnet18", (3, 224, 224), 1000, 11_689_512),  # He et al. 2016 / torchvision
    ("resnet34", (3, 224, 224), 1000, 21_797_672),
    ("wrn-28-10", (3, 32, 32), 10, 36_479_194),  # Zagoruyko & Komodakis 2016, CIFAR-10
    ("wrn-34-10", (3, 32, 32), 10, 46_160_474),
    ("vit-tiny", (3, 224, 224), 1000, 5_717_416),  # DeiT-Ti / ViT-Ti/16
]


@pytest.mark.parametrize(("name", "shape", "classes", "params"), PUBLISHED)
def test_architectures_have_the_published_sizes(
    name: str, shape: tuple[int, ...], classes: int, params: int
) -> None:
    net = build_arch(name, shape, classes)
    assert sum(p.numel() for p in net.parameters()) == params


@pytest.mark.parametrize("name", ["resnet18", "resnet18-cifar", "wrn-28-10", "vit-tiny"])
def test_normalisation_is_the_first_layer(name: str) -> None:
    torch.manual_seed(0)
    net = build_arch(name, (3, 32, 32), 10).eval()
    assert isinstance(net.normalize, Normalize)
    stats = "cifar10" if ("cifar" in name or "wrn" in name) else "imagenet"
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[stats])
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        wrapped = net(x)
        net.normalize = torch.nn.Identity()
        torch.testing.assert_close(wrapped, net((x - mean) / std))


def test_grey_inputs_get_no_colour_statistics() -> None:
    net = build_arch("resnet18-cifar", (1, 32, 32), 10)
    assert isinstance(net.normalize, torch.nn.Identity)


def test_bad_sizes_are_refused_with_the_value() -> None:
    with pytest.raises(BadInput, match="depth=30"):
        WideResNet(30, 10)
    with pytest.raises(BadInput, match="patch=16"):
        ViT(30, 10, patch=16)
    with pytest.raises(BadInput, match="stem"):
        ResNet((2, 2, 2, 2), 10, stem="tiny")  # type: ignore[arg-type]
    with pytest.raises(BadInput, match=r"\(C, H, W\)"):
        build_arch("resnet18", (784,), 10)
    with pytest.raises(BadInput, match="std must be > 0"):
        Normalize((0.5,), (0.0,))


def test_pgd_fools_an_untrained_resnet_at_imagenet_size() -> None:
    torch.manual_seed(0)
    net = build_arch("resnet18", (3, 224, 224), 1000)
    model = Model(net)
    x = torch.rand(2, 3, 224, 224)
    y = model(x).argmax(1)
    attack = get_attack("pgd", threat=ThreatModel(norm="linf", eps=2 / 255), steps=3)
    result = attack(model, x, y)
    assert bool(result.success.all())
    assert float((result.x_adv - x).abs().max()) <= 2 / 255 + 1e-6
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def _colour_set(path: Path, n: int, seed: int) -> None:
    """Two classes told apart by which colour channel is brighter."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0.0, 0.5, size=(n, 3, 32, 32)).astype(np.float32)
    x[y == 0, 0] += 0.5
    x[y == 1, 2] += 0.5
    np.savez(path, x=x, y=y)


def test_cli_trains_a_colour_resnet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _colour_set(tmp_path / "train.npz", 64, 0)
    _colour_set(tmp_path / "test.npz", 32, 1)
    args = ["train", "--data", str(tmp_path / "train.npz"), "--test-data"]
    args += [str(tmp_path / "test.npz"), "--arch", "resnet18-cifar", "--epochs", "2"]
    args += ["--batch-size", "16", "--lr", "0.003", "--out", str(tmp_path / "run")]
    assert main(args) == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["arch"] == "resnet18-cifar"
    assert card["evaluation"]["clean_accuracy"] >= 0.9


def test_cli_lists_the_architectures(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "archs"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"resnet18", "resnet18-cifar", "wrn-28-10", "vit-tiny", "small-cnn"} <= set(listed)
