"""ResNet-18/34 (He et al. 2016, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385) and WideResNet (Zagoruyko & Komodakis 2016, "Wide Residual Networks",
arXiv:1605.07146) in plain PyTorch, with the normalisation inside the model.

Two stems for ResNet: `imagenet` (7x7 stride-2 convolution and 3x3 max pooling, for 224x224
inputs; 11.7M parameters for ResNet-18 at 1,000 classes, as the paper's) and `cifar`
(one 3x3 stride-1 convolution, no pooling, for 32x32 inputs, as used in the adversarial
robustness literature). WideResNet-28-10 and -34-10 are the standard models of the robustness
benchmarks (Madry et al.'s and RobustBench's CIFAR-10 entries): pre-activation blocks, widths
16, 16k, 32k, 64k.

Cost: ResNet-18 at 224x224 is ~1.8 GFLOPs per image forward; WRN-28-10 at 32x32 ~5.2 GFLOPs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from adversa.errors import BadInput
from adversa.nets.normalize import Normalize, normalization_for
from adversa.nets.small import ArchBuilder

Stem = Literal["imagenet", "cifar"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a skip connection (1x1 projection when the
    shape changes): ResNet-18/34's block."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of `BasicBlock`s: `blocks` per stage at widths `width`, 2x, 4x, 8x."""

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        num_classes: int,
        *,
        in_channels: int = 3,
        stem: Stem = "imagenet",
        width: int = 64,
        normalize: Normalize | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or width < 1 or in_channels < 1:
            raise BadInput(
                f"ResNet needs positive sizes, got num_classes={num_classes}, width={width}, "
                f"in_channels={in_channels}"
            )
        self.normalize = normalize if normalize is not None else nn.Identity()
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        elif stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
        else:
            raise BadInput(f"unknown ResNet stem {stem!r}; expected 'imagenet' or 'cifar'")
        stages: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                stages.append(BasicBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(self.normalize(x)))
        return self.fc(self.pool(features).flatten(1))


def resnet18(num_classes: int = 1000, **kwargs: object) -> ResNet:
    """ResNet-18: two blocks per stage."""
    return ResNet((2, 2, 2, 2), num_classes, **kwargs)  # type: ignore[arg-type]


def resnet34(num_classes: int = 1000, **kwargs: object) -> ResNet:
    """ResNet-34: 3, 4, 6, 3 blocks per stage."""
    return ResNet((3, 4, 6, 3), num_classes, **kwargs)  # type: ignore[arg-type]


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the (projected) input."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-`depth`-`widen`: (depth - 4) / 6 blocks per group at 16k, 32k, 64k channels."""

    def __init__(
        self,
        depth: int = 28,
        widen: int = 10,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        normalize: Normalize | None = None,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 or depth < 10 or widen < 1 or num_classes < 1:
            raise BadInput(
                f"WideResNet needs depth = 6n + 4 >= 10 and positive widen and classes, got "
                f"depth={depth}, widen={widen}, num_classes={num_classes}"
            )
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for g, c_out in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(c_in, c_out, 2 if (g > 0 and j == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(c_in, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.blocks(self.stem(self.normalize(x))))
        return self.fc(features.flatten(1))


def build_resnet(depth: int, stem: Stem) -> ArchBuilder:
    """An `ArchBuilder` for ResNet-`depth` with this stem; colour inputs get the stem's usual
    normalisation inside the model (ImageNet's or CIFAR-10's statistics)."""
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels = _image_channels(input_shape, f"resnet{depth}")
        norm = normalization_for("imagenet" if stem == "imagenet" else "cifar10", channels)
        return ResNet(blocks, num_classes, in_channels=channels, stem=stem, normalize=norm)

    return build


def build_wide_resnet(depth: int, widen: int) -> ArchBuilder:
    """An `ArchBuilder` for WRN-`depth`-`widen` with CIFAR-10 normalisation for colour input."""

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels = _image_channels(input_shape, f"wrn-{depth}-{widen}")
        norm = normalization_for("cifar10", channels)
        return WideResNet(depth, widen, num_classes, in_channels=channels, normalize=norm)

    return build


def _image_channels(input_shape: tuple[int, ...], arch: str) -> int:
    if len(input_shape) != 3:
        raise BadInput(f"{arch} needs (C, H, W) image inputs, got shape {input_shape}")
    return input_shape[0]
