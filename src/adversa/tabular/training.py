"""Adversarial training of tabular classifiers with a constrained attack.

PGD adversarial training (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks", arXiv:1706.06083) where the inner attack runs under a
`ConstrainedThreat`, so the model trains on feasible rows only (Simonetto et al. 2022). The
library's trainer (`adversa.train.loop`) builds its networks from architecture names
and data sets; tabular models usually come as a user's `nn.Module` and a tensor table, so
this is a small standalone loop. Each minibatch is attacked by the registry attack `attack`
(PGD by default) through `run_attack`, so every training example is projected onto the
constraints; the loss is the mean of the clean and adversarial cross-entropy, with optional
class weights for imbalanced data.

Cost per epoch: N * (steps + 2) forward and N * steps backward passes for the attack, plus
2 N forward and backward passes for the update.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from adversa.attacks.base import get_attack
from adversa.errors import BadInput
from adversa.model import Model
from adversa.rng import make_generator
from adversa.tabular.constraints import ConstrainedThreat


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConstrainedAT:
    """Configuration of constrained adversarial training."""

    threat: ConstrainedThreat  # the feasible perturbations trained against
    attack: str = "pgd"  # registry name of the gradient attack that crafts the examples
    steps: int = 10  # attack steps per minibatch
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    class_weight: tuple[float, ...] | None = None  # e.g. (1.0, 10.0) for rare positives
    seed: int = 0  # shuffling and the attack's random starts

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ConstrainedThreat):
            raise BadInput(f"threat must be a ConstrainedThreat, got {type(self.threat).__name__}")
        for name in ("steps", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise BadInput(f"lr must be > 0, got {self.lr}")

    def fit(self, module: nn.Module, x: Tensor, y: Tensor) -> nn.Module:
        """Train `module` in place on (x, y) and return it in eval mode."""
        if x.dim() != 2 or y.shape != (x.shape[0],):
            raise BadInput(f"x must be (N, D) and y (N,), got {tuple(x.shape)}, {tuple(y.shape)}")
        gen = make_generator(self.seed)
        model = Model(module, bounds=self.threat.bounds)
        opt = torch.optim.Adam(module.parameters(), lr=self.lr)
        weight = (
            torch.tensor(self.class_weight, dtype=x.dtype)
            if self.class_weight is not None
            else None
        )
        for epoch in range(self.epochs):
            order = torch.randperm(x.shape[0], generator=gen)
            attack = get_attack(
                self.attack, self.threat, steps=self.steps, seed=self.seed * 100_003 + epoch
            )
            for start in range(0, x.shape[0], self.batch_size):
                idx = order[start : start + self.batch_size]
                xb, yb = x[idx], y[idx]
                x_adv = attack(model, xb, yb).x_adv
                module.train()
                opt.zero_grad()
                logits = module(torch.cat([xb, x_adv]))
                loss = nn.functional.cross_entropy(logits, torch.cat([yb, yb]), weight=weight)
                loss.backward()
                opt.step()
        module.eval()
        return module
