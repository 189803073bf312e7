"""Network architectures in plain PyTorch, built by name for an input shape and a class count.

The zoo, the trainer, the privacy references and the poisoning surrogates all build their
networks here; nothing in this package trains or loads.
"""

from adversa.nets.small import ARCHS, MLP, SmallCNN, build_arch

__all__ = ["ARCHS", "MLP", "SmallCNN", "build_arch"]
