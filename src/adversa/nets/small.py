"""Small architectures that train in seconds to minutes on a CPU.

Both are plain `nn.Sequential` stacks of Conv2d / Linear / ReLU / Flatten, so interval and
linear-relaxation bounds (`adversa.certify`) apply to them as they are. Inputs are in [0, 1];
none of them needs normalisation, so none is built in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from adversa.errors import BadInput


class MLP(nn.Sequential):
    """Flatten -> [Linear -> ReLU] per hidden width -> Linear to logits."""

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (64, 32), num_classes: int = 2
    ) -> None:
        if in_features < 1 or num_classes < 1 or any(h < 1 for h in hidden):
            raise BadInput(
                f"MLP needs positive sizes, got in_features={in_features}, hidden={hidden}, "
                f"num_classes={num_classes}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        self.in_features = in_features
        self.num_classes = num_classes


class SmallCNN(nn.Sequential):
    """Two 4x4 stride-2 convolutions and two linear layers: the "small" MNIST network of
    Wong & Kolter (2018, "Provable Defenses against Adversarial Examples via the Convex Outer
    Adversarial Polytope", arXiv:1711.00851), with configurable widths.

    Conv(c0, 4, s2, p1) -> ReLU -> Conv(c1, 4, s2, p1) -> ReLU -> Flatten -> Linear(hidden)
    -> ReLU -> Linear(num_classes). Each convolution halves the side, so `input_size` must be
    divisible by 4 (28 for MNIST: 28 -> 14 -> 7).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        *,
        channels: tuple[int, int] = (16, 32),
        hidden: int = 100,
        input_size: int = 28,
    ) -> None:
        if input_size % 4:
            raise BadInput(f"SmallCNN needs an input size divisible by 4, got {input_size}")
        c0, c1 = channels
        side = input_size // 4
        super().__init__(
            nn.Conv2d(in_channels, c0, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c1 * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        self.in_channels = in_channels
        self.num_classes = num_classes


ArchBuilder = Callable[[tuple[int, ...], int], nn.Module]


def cnn_builder(channels: tuple[int, int], hidden: int) -> ArchBuilder:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise BadInput(f"a CNN needs square (C, H, W) inputs, got {input_shape}")
        return SmallCNN(
            input_shape[0], num_classes, channels=channels, hidden=hidden, input_size=input_shape[1]
        )

    return build


def mlp_builder(hidden: tuple[int, ...]) -> ArchBuilder:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return MLP(math.prod(input_shape), hidden, num_classes)

    return build
