"""Small seeded training recipes that the poisoning code needs on its own: a surrogate model
for the clean-label backdoor when the user gives none, the victim of a transfer-learning
experiment (a linear head retrained on frozen features), and the retraining step of
`adversa inspect-data --retrain`.

- `quick_model`: a narrow SmallCNN (8 and 16 channels, 64 hidden units) for square images
  whose side is divisible by 4 (MNIST), otherwise an MLP with one hidden layer of 64.
- `fit_classifier`: Adam (lr 3e-3), batches of 64, `epochs` passes; seeded initialisation
  (normal with std fan_in^-1/2, zero biases) and data order. Cost: `epochs` forward and
  backward passes over the data.
- `fit_linear_head`: full-batch Adam on fixed features for `steps` steps. Cost: `steps`
  (N, d) x (d, K) products.

Nothing here touches torch's global random generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.errors import BadInput
from adversa.nets import MLP, SmallCNN
from adversa.rng import make_generator

__all__ = ["fit_classifier", "fit_linear_head", "quick_model", "seeded_init"]


def quick_model(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small network for inputs of `input_shape`: a CNN for square images of side 4k."""
    if len(input_shape) == 3 and input_shape[1] == input_shape[2] and input_shape[1] % 4 == 0:
        return SmallCNN(
            input_shape[0], num_classes, channels=(8, 16), hidden=64, input_size=input_shape[1]
        )
    return MLP(math.prod(input_shape), (64,), num_classes)


def seeded_init(module: nn.Module, gen: torch.Generator) -> None:
    """Weights ~ N(0, 1/fan_in), biases 0, drawn from `gen`."""
    with torch.no_grad():
        for p in module.parameters():
            scale = p[0].numel() ** -0.5 if p.dim() > 1 else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def fit_classifier(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> nn.Module:
    """`quick_model` trained on (x, y) with Adam; returned in eval mode."""
    if epochs < 1 or batch_size < 1:
        raise BadInput(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if len(y) < 1:
        raise BadInput("no training samples")
    gen = make_generator(seed)
    net = quick_model(tuple(x.shape[1:]), num_classes)
    seeded_init(net, gen)
    opt = torch.optim.Adam(net.parameters(), lr)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            batch = perm[i : i + batch_size]
            opt.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
    return net.eval()


def fit_linear_head(
    features: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
    init: nn.Linear | None = None,
) -> nn.Linear:
    """A linear layer (d -> K) fitted by full-batch Adam to fixed `features` (N, d), from a
    seeded random initialisation or, with `init`, from a copy of that layer (fine-tuning)."""
    if steps < 1:
        raise BadInput(f"steps must be >= 1, got {steps}")
    head = nn.Linear(features.shape[1], num_classes)
    if init is None:
        seeded_init(head, make_generator(seed))
    else:
        head.load_state_dict(init.state_dict())
    opt = torch.optim.Adam(head.parameters(), lr)
    features = features.detach()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(features), y).backward()
        opt.step()
    return head.eval()
