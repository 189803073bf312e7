"""`pool-cnn`: a small VGG-style network for colour (or grey) images of any side >= 8.

Three blocks of 3x3 convolution (padding 1) -> ReLU -> 2x2 max-pooling, as in VGG (Simonyan &
Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
arXiv:1409.1556) at a fraction of its width, then Linear(hidden) -> ReLU -> Linear(classes).
The pooling gives the tolerance to position and scale that a sign or a face anywhere in
the frame needs, which SmallCNN's strided convolutions and wide linear layer lack (on the
synthetic "signs" it generalises where SmallCNN overfits). Each pooling floors the side, so
any side n >= 8 works (32 -> 16 -> 8 -> 4; 25 -> 12 -> 6 -> 3). About 3 MFLOPs per 32x32
colour image at the default widths (16, 32, 64); 156k parameters for 8 classes.
"""

from __future__ import annotations

from torch import nn

from adversa.errors import BadInput
from adversa.nets.small import ArchBuilder


class PoolCNN(nn.Sequential):
    """[Conv3x3(w) -> ReLU -> MaxPool2] per width -> Flatten -> Linear(hidden) -> ReLU ->
    Linear(num_classes), for (in_channels, side, side) inputs."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: tuple[int, ...] = (16, 32, 64),
        hidden: int = 128,
        input_size: int = 32,
    ) -> None:
        if input_size < 2 ** len(widths) or in_channels < 1 or num_classes < 1:
            raise BadInput(
                f"PoolCNN needs an input side >= {2 ** len(widths)} and positive sizes, got "
                f"side {input_size}, {in_channels} channels, {num_classes} classes"
            )
        layers: list[nn.Module] = []
        side, width = input_size, in_channels
        for w in widths:
            layers += [nn.Conv2d(width, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            side, width = side // 2, w
        layers += [nn.Flatten(), nn.Linear(width * side * side, hidden), nn.ReLU()]
        super().__init__(*layers, nn.Linear(hidden, num_classes))
        self.in_channels = in_channels
        self.num_classes = num_classes


def pool_cnn_builder(widths: tuple[int, ...], hidden: int) -> ArchBuilder:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise BadInput(f"a CNN needs square (C, H, W) inputs, got {input_shape}")
        return PoolCNN(
            input_shape[0], num_classes, widths=widths, hidden=hidden, input_size=input_shape[1]
        )

    return build
