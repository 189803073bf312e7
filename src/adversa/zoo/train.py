"""A plain, seeded training loop for small classifiers, with optional adversarial training.

`train_classifier` minimises the cross-entropy of `module` on a `Dataset` with Adam and a
cosine learning-rate decay. With an `adversary`, every batch is first replaced by the
adversary's points: with `PGDAdversary` this is PGD adversarial training (Madry, Makelov,
Schmidt, Tsipras & Vladu, 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks", arXiv:1706.06083): min over weights of the max over the eps-ball of the loss, the
inner max approximated by the library's own PGD attack.

Cost per epoch: N forward and backward passes for the weights, plus, with PGD, at most
N * steps forward and backward passes for the inputs (fewer: a sample leaves the attack once
it is misclassified) and 2 N forward passes for the attack's checks.

Randomness is explicit: shuffling uses a generator seeded with `seed`, PGD's random starts
one seeded per step. Nothing touches torch's global RNG.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from adversa.data import Dataset
from adversa.errors import BadInput
from adversa.model import Model
from adversa.rng import make_generator
from adversa.threat import ThreatModel

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """Where training is: optimizer step `index` (from 0) of `total`."""

    index: int
    total: int

    @property
    def fraction(self) -> float:
        return self.index / max(1, self.total)


Adversary = Callable[[Model, Tensor, Tensor, Step], Tensor]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGDAdversary:
    """The inner maximisation of PGD adversarial training (Madry et al. 2018).

    Runs `adversa`'s "pgd" attack with `steps` steps from a random start. `eps` ramps up
    linearly from 0 over the first `ramp` share of the training steps, which lets small
    networks on MNIST start learning before the full eps-ball makes the task hard.
    """

    eps: float  # final radius of the ball
    norm: str = "linf"  # "linf", "l2" or "l1"
    steps: int = 10  # PGD steps per batch
    step_size: float | None = None  # None: 2.5 * current eps / steps
    ramp: float = 0.0  # share of training over which eps grows linearly from 0 to `eps`
    seed: int = 0  # PGD's random starts use seed * 1_000_003 + step index

    def __post_init__(self) -> None:
        if self.eps < 0 or self.steps < 1 or not 0 <= self.ramp <= 1:
            raise BadInput(
                f"PGDAdversary needs eps >= 0, steps >= 1 and ramp in [0, 1], got eps="
                f"{self.eps}, steps={self.steps}, ramp={self.ramp}"
            )

    def eps_at(self, step: Step) -> float:
        if self.ramp == 0:
            return self.eps
        return self.eps * min(1.0, (step.index + 1) / (self.ramp * step.total))

    def __call__(self, model: Model, x: Tensor, y: Tensor, step: Step) -> Tensor:
        from adversa.attacks import get_attack

        eps = self.eps_at(step)
        threat = ThreatModel(norm=self.norm, eps=eps, bounds=model.bounds)  # type: ignore[arg-type]
        step_size = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        attack = get_attack(
            "pgd",
            threat,
            steps=self.steps,
            step_size=step_size,
            seed=self.seed * 1_000_003 + step.index,
        )
        return attack(model, x, y).x_adv


@dataclasses.dataclass(frozen=True, slots=True)
class TrainStats:
    """What a training run did: wall-clock and process CPU seconds, steps, and the last
    epoch's mean loss and accuracy on the batches it trained on (adversarial ones, with an
    adversary)."""

    seconds: float
    cpu_seconds: float
    epochs: int
    steps: int
    loss: float
    accuracy: float


def _cosine(total: int) -> Callable[[int], float]:
    return lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total))


def train_classifier(
    module: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    adversary: Adversary | None = None,
    progress: Progress | None = None,
    description: str = "training",
) -> TrainStats:
    """Train `module` in place on `dataset` (Adam, cosine decay); return `TrainStats`.

    `progress(description, completed_steps, total_steps)` is called after every step. The
    module is left in eval mode.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise BadInput(
            f"train_classifier needs epochs >= 1, batch_size >= 1 and lr > 0, got epochs="
            f"{epochs}, batch_size={batch_size}, lr={lr}"
        )
    device = next(module.parameters()).device
    x_all, y_all = dataset.x.to(device), dataset.y.to(device)
    n = len(dataset)
    per_epoch = math.ceil(n / batch_size)
    total = epochs * per_epoch
    gen = make_generator(seed)
    model = Model(module, num_classes=dataset.num_classes, bounds=dataset.bounds, name="training")
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(total))
    start, cpu_start = time.perf_counter(), time.process_time()
    index = 0
    loss_sum = correct = torch.zeros((), device=device)
    module.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for b in range(per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            xb, yb = x_all[idx], y_all[idx]
            if adversary is not None:
                xb = adversary(model, xb, yb, Step(index, total)).detach()
            logits = module(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
            index += 1
            if progress is not None:
                progress(description, index, total)
        log.debug(
            "%s: epoch %d/%d loss %.4f accuracy %.4f",
            description,
            epoch + 1,
            epochs,
            float(loss_sum) / n,
            float(correct) / n,
        )
    module.eval()
    return TrainStats(
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        epochs=epochs,
        steps=total,
        loss=float(loss_sum) / n,
        accuracy=float(correct) / n,
    )


@torch.no_grad()
def accuracy(module: nn.Module, dataset: Dataset, batch_size: int = 500) -> float:
    """Clean accuracy of `module` on `dataset` (eval mode restored to what it was)."""
    model = Model(module, num_classes=dataset.num_classes, bounds=dataset.bounds)
    preds = model.predict(dataset.x, batch_size=batch_size)
    return float((preds.cpu() == dataset.y).float().mean())
