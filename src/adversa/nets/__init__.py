"""Network architectures in plain PyTorch, built by name for an input shape and a class count.

Small networks that train on a CPU in seconds (`small`), colour networks at the sizes people
deploy (`resnet`: ResNet-18/34, WideResNet; `vit`: ViT-Tiny), each with its normalisation
inside the model (`normalize`). The zoo, the trainer, the privacy references and the
poisoning surrogates build their networks here; nothing in this package trains or loads.
"""

from adversa.nets.archs import ARCHS, build_arch
from adversa.nets.normalize import NORMALIZATIONS, Normalize
from adversa.nets.resnet import ResNet, WideResNet, resnet18, resnet34
from adversa.nets.small import MLP, SmallCNN
from adversa.nets.vit import ViT

__all__ = [
    "ARCHS",
    "MLP",
    "NORMALIZATIONS",
    "Normalize",
    "ResNet",
    "SmallCNN",
    "ViT",
    "WideResNet",
    "build_arch",
    "resnet18",
    "resnet34",
]
