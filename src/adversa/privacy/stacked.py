"""Many small MLPs trained at once: shadow and reference models for membership inference.

A `StackedMLP` holds M MLPs whose weights carry a leading model dimension; one forward pass
is a chain of `torch.baddbmm` calls over (M, N, features), so 16 models train in about the
time of one. Each model m trains on the examples where `masks[m]` is True (a random half of
a pool, as in Shokri et al. 2017 and Carlini et al. 2022), full batch, with Adam. Because the
loss is a sum of per-model terms and Adam is elementwise, this is exactly M independent runs.

Cost per training step: one forward and one backward pass of each MLP over its own examples
(gathered once, so M halves of the pool, not M pools).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from adversa.errors import BadInput, ShapeError
from adversa.nets import MLP
from adversa.rng import make_generator


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StackedTraining:
    """How every model of a stack is trained (all share it; only data and seed differ)."""

    hidden: tuple[int, ...] = (128,)  # hidden widths of each MLP
    steps: int = 300  # full-batch Adam steps (fewer = early stopping)
    lr: float = 1e-2  # Adam learning rate
    weight_decay: float = 0.0  # L2 penalty (Adam's weight_decay)
    label_smoothing: float = 0.0  # cross-entropy label smoothing, in [0, 1)
    seed: int = 0  # initialisation seed

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise BadInput(f"steps must be >= 1, got {self.steps}")
        if self.lr <= 0:
            raise BadInput(f"lr must be > 0, got {self.lr}")
        if any(h < 1 for h in self.hidden):
            raise BadInput(f"hidden widths must be >= 1, got {self.hidden}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise BadInput(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.weight_decay < 0:
            raise BadInput(f"weight_decay must be >= 0, got {self.weight_decay}")


class StackedMLP(nn.Module):
    """M MLPs (Flatten -> [Linear -> ReLU]* -> Linear) evaluated together.

    `forward(x)` takes (N, ...) (every model sees the same batch) or (M, N, F) and returns
    logits (M, N, num_classes)."""

    def __init__(
        self,
        num_models: int,
        in_features: int,
        hidden: tuple[int, ...],
        num_classes: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        if num_models < 1:
            raise BadInput(f"num_models must be >= 1, got {num_models}")
        self.num_models, self.in_features, self.num_classes = num_models, in_features, num_classes
        self.hidden = tuple(hidden)
        widths = (in_features, *hidden, num_classes)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(widths):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation range
            w = (torch.rand(num_models, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(num_models, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[0] != self.num_models:
            x = x.reshape(x.shape[0], -1).unsqueeze(0).expand(self.num_models, -1, -1)
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"inputs have {x.shape[-1]} features, models take {self.in_features}")
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=False)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h

    @torch.no_grad()
    def logits(self, x: Tensor, batch_size: int = 2048) -> Tensor:
        """Logits (M, N, C) of every model on `x` (N, ...), in batches, without gradients."""
        return torch.cat(
            [self(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)], dim=1
        )

    def select(self, models: Tensor | list[int]) -> StackedMLP:
        """A new stack holding copies of the chosen models, in the given order."""
        index = torch.as_tensor(models, dtype=torch.long)
        out = StackedMLP(
            int(index.numel()),
            self.in_features,
            self.hidden,
            self.num_classes,
            make_generator(0),
        )
        with torch.no_grad():
            for dst, src in zip(
                [*out.weights, *out.biases], [*self.weights, *self.biases], strict=False
            ):
                dst.copy_(src[index])
        return out.eval()

    def member(self, m: int) -> MLP:
        """Model `m` as a standalone `adversa.nets.MLP` (a copy of its weights)."""
        if not 0 <= m < self.num_models:
            raise BadInput(f"m must be in [0, {self.num_models}), got {m}")
        net = MLP(self.in_features, self.hidden, self.num_classes)
        linears = [layer for layer in net if isinstance(layer, nn.Linear)]
        with torch.no_grad():
            for layer, w, b in zip(linears, self.weights, self.biases, strict=False):
                layer.weight.copy_(w[m].T)
                layer.bias.copy_(b[m, 0])
        return net.eval()


DEFAULT_TRAINING = StackedTraining()
Progress = Callable[[str, int, int], None]  # (description, completed, total)


def random_halves(num_models: int, n: int, seed: int) -> Tensor:
    """Membership masks (M, N) in complementary pairs: row 2k is a uniformly random half of
    the N pool examples (`n // 2` True) and row 2k+1 its complement, drawn from a generator
    seeded with `seed`. So with M even every example is IN for exactly M/2 models and OUT
    for M/2 (as Carlini et al. 2022's reference sets), which the per-example Gaussian fits
    of LiRA need; an odd M adds one unpaired random half."""
    if num_models < 1 or n < 2:
        raise BadInput(f"need num_models >= 1 and a pool of >= 2 examples, got {num_models}, {n}")
    gen = make_generator(seed)
    pairs = (num_models + 1) // 2
    ranks = torch.rand(pairs, n, generator=gen).argsort(dim=1).argsort(dim=1)
    halves = ranks < n // 2
    return torch.stack([halves, ~halves], dim=1).reshape(2 * pairs, n)[:num_models]


def train_stacked(
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    config: StackedTraining,
    num_classes: int | None = None,
    progress: Progress | None = None,
    description: str = "training models",
) -> StackedMLP:
    """Train M = masks.shape[0] MLPs at once; model m on `x[masks[m]]`, `y[masks[m]]`.

    `x` is (N, ...) (flattened to features), `y` (N,) int64, `masks` (M, N) bool with at
    least one True per row. Deterministic for a fixed `config.seed`. `progress` (optional)
    is called as progress(description, step, steps) every 10 steps and at the end."""
    if masks.dim() != 2 or masks.shape[1] != x.shape[0] or y.shape[0] != x.shape[0]:
        raise ShapeError(
            f"masks must be (M, N) for x of N={x.shape[0]}, got masks {tuple(masks.shape)}, "
            f"y {tuple(y.shape)}"
        )
    counts = masks.sum(1)
    if bool((counts == 0).any()):
        raise BadInput("every model needs at least one training example (a mask row is empty)")
    num_classes = int(num_classes if num_classes is not None else int(y.max()) + 1)
    flat = x.reshape(x.shape[0], -1).float()
    net = StackedMLP(
        masks.shape[0], flat.shape[1], config.hidden, num_classes, make_generator(config.seed)
    )
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Each model sees only its own examples: gather them once, (M, most, F), padded where a
    # model has fewer than the most (the padding has weight 0), so a step costs M halves of
    # the pool rather than M whole pools.
    most = int(counts.max())
    order = (~masks).to(torch.uint8).argsort(dim=1, stable=True)[:, :most]
    valid = torch.arange(most, device=masks.device) < counts.unsqueeze(1)
    own_x, own_y = flat[order], y[order]
    weight = valid.float() / counts.unsqueeze(1).float()  # per-model mean over its examples
    for step in range(config.steps):
        if progress is not None and step % 10 == 0:
            progress(description, step, config.steps)
        opt.zero_grad(set_to_none=True)
        logits = net(own_x)
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, num_classes),
            own_y.reshape(-1),
            reduction="none",
            label_smoothing=config.label_smoothing,
        )
        (loss.reshape(weight.shape) * weight).sum().backward()
        opt.step()
    if progress is not None:
        progress(description, config.steps, config.steps)
    return net.eval()
