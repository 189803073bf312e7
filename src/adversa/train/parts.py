"""The small pieces the training loop composes: derived seeds, the learning-rate schedule,
the optimizer, the run's stages, the epoch's metric sums and the test accuracy."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import nn

from adversa.data import Dataset
from adversa.defenses.base import BatchMetrics
from adversa.model import Model
from adversa.train.config import TrainConfig

SUMS: tuple[str, ...] = (
    "n",
    "loss",
    "clean_loss",
    "clean_correct",
    "n_adv",
    "adv_loss",
    "adv_correct",
)


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for the stream named by `parts` (e.g. "order", epoch) of run `seed`."""
    digest = hashlib.blake2b(repr((int(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def cosine(total: int) -> Callable[[int], float]:
    """The learning-rate factor at batch i of `total`: 0.5 (1 + cos(pi i / total))."""
    return lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total))


def make_optimizer(config: TrainConfig, module: nn.Module) -> torch.optim.Optimizer:
    """Adam, or SGD with `config.momentum`, at `config.lr` with `config.weight_decay`."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            module.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def accumulate(sums: dict[str, float], metrics: BatchMetrics, n: int) -> None:
    """Add a batch of `n` samples to the epoch's sums (means weighted by batch size)."""
    sums["n"] += n
    sums["loss"] += metrics.loss * n
    sums["clean_loss"] += metrics.clean_loss * n
    sums["clean_correct"] += metrics.clean_correct
    if metrics.adv_loss is not None and metrics.adv_correct is not None:
        sums["n_adv"] += n
        sums["adv_loss"] += metrics.adv_loss * n
        sums["adv_correct"] += metrics.adv_correct


@torch.no_grad()
def test_predictions(
    module: nn.Module, dataset: Dataset, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Predicted labels of `module` on `dataset` (eval mode, restored afterwards)."""
    model = Model(module, num_classes=dataset.num_classes, bounds=dataset.bounds)
    return model.predict(dataset.x.to(device), batch_size=500)


def test_accuracy(module: nn.Module, dataset: Dataset, device: torch.device | str = "cpu") -> float:
    """Clean accuracy of `module` on `dataset` (eval mode, restored afterwards)."""
    preds = test_predictions(module, dataset, device)
    return float((preds == dataset.y.to(device)).float().mean())
