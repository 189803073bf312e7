"""The architecture registry: every network `train --arch`, the zoo and the references build
by name, from an input shape and a class count."""

from __future__ import annotations

from torch import nn

from adversa.nets.pooled import pool_cnn_builder
from adversa.nets.resnet import build_resnet, build_wide_resnet
from adversa.nets.small import cnn_builder, mlp_builder
from adversa.nets.vit import build_vit_tiny
from adversa.registry import Registry

# name -> builder(input_shape, num_classes); `ARCHS.list()` names them
ARCHS: Registry[nn.Module] = Registry("architecture")
ARCHS.register("small-cnn")(cnn_builder((16, 32), 100))  # Wong & Kolter's "small": 166k params
ARCHS.register("wide-cnn")(cnn_builder((32, 64), 128))  # twice the channels, for adv. training
ARCHS.register("pool-cnn")(pool_cnn_builder((16, 32, 64), 128))  # VGG-style, any side >= 8
ARCHS.register("mlp")(mlp_builder((64, 32)))
ARCHS.register("mlp-wide")(mlp_builder((256, 128)))
ARCHS.register("resnet18")(build_resnet(18, "imagenet"))  # 224x224 colour, 11.7M params
ARCHS.register("resnet34")(build_resnet(34, "imagenet"))
ARCHS.register("resnet18-cifar")(build_resnet(18, "cifar"))  # 32x32 colour
ARCHS.register("resnet34-cifar")(build_resnet(34, "cifar"))
ARCHS.register("wrn-28-10")(build_wide_resnet(28, 10))  # the robustness benchmarks' CIFAR model
ARCHS.register("wrn-34-10")(build_wide_resnet(34, 10))
ARCHS.register("vit-tiny")(build_vit_tiny)


def build_arch(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialised (torch's global RNG) architecture `name` for these inputs; unknown
    names raise `UnknownName` with suggestions."""
    return ARCHS.factory(name)(tuple(input_shape), num_classes)
