"""adversa's `autoattack` (standard) on the zoo's `mnist-cnn-pgd`, 500 MNIST test images,
Linf eps 0.3: robust accuracy, forward and backward passes, seconds.

If torchattacks is installed (`pip install --no-deps torchattacks`; a benchmark-only tool,
never a dependency of adversa), the same points are attacked with its AutoAttack components
at the original budgets (APGD-CE 100 steps, APGD-T 9 targets x 100, FAB-T 9 targets x 100,
Square 5,000 queries; its own `AutoAttack` class defaults to 10 steps) run as a cascade, with
passes counted by a wrapper module.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_autoattack.py [--n 500] [--eps 0.3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from adversa import Model, ThreatModel, get_attack
from adversa.data import load_data
from adversa.zoo import load_zoo_model


class Counting(nn.Module):
    """Counts forward passes and backward passes through the logits, per sample."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.forward_calls = 0
        self.backward_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        n = x.shape[0]
        self.forward_calls += n
        if out.requires_grad:
            out.register_hook(lambda g: self._count_backward(n))
        return out

    def _count_backward(self, n: int) -> None:
        self.backward_calls += n


def run_torchattacks(module: nn.Module, x: Tensor, y: Tensor, eps: float) -> None:
    try:
        import torchattacks
    except ImportError:
        print("torchattacks: not installed (pip install --no-deps torchattacks); skipped")
        return
    counting = Counting(module).eval()
    attacks = [
        torchattacks.APGD(
            counting, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0
        ),
        torchattacks.APGDT(
            counting, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0
        ),
        torchattacks.FAB(
            counting,
            norm="Linf",
            eps=eps,
            steps=100,
            n_restarts=1,
            multi_targeted=True,
            n_classes=10,
            seed=0,
        ),
        torchattacks.Square(counting, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0),
    ]
    start = time.perf_counter()
    with torch.no_grad():
        robust = counting(x).argmax(1) == y
    for attack in attacks:
        idx = torch.nonzero(robust).squeeze(1)
        if idx.numel() == 0:
            break
        x_adv = attack(x[idx], y[idx])
        x_adv = torch.min(torch.max(x_adv, x[idx] - eps), x[idx] + eps).clamp(0, 1)
        with torch.no_grad():
            fooled = counting(x_adv).argmax(1) != y[idx]
        robust[idx[fooled]] = False
    seconds = time.perf_counter() - start
    print(
        f"torchattacks (original budgets): robust accuracy {float(robust.float().mean()):.4f}, "
        f"forward {counting.forward_calls}, backward {counting.backward_calls}, "
        f"{seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--model", default="mnist-cnn-pgd")
    args = parser.parse_args()

    module = load_zoo_model(args.model).eval()
    data = load_data("mnist", split="test")
    x, y = data.x[: args.n], data.y[: args.n]
    model = Model(module, num_classes=10)
    clean = float((model.predict(x) == y).float().mean())
    print(f"threads={torch.get_num_threads()} n={args.n} model={args.model} eps={args.eps}")
    print(f"clean accuracy: {clean:.4f}")
    threat = ThreatModel(norm="linf", eps=args.eps)
    pgd = get_attack("pgd", threat, steps=40, seed=0)(model, x, y)
    print(f"adversa pgd-40: robust accuracy {float((~pgd.success).float().mean()):.4f}")
    start = time.perf_counter()
    result = get_attack("autoattack", threat, seed=0)(model, x, y)
    seconds = time.perf_counter() - start
    print(
        f"adversa autoattack: robust accuracy {float((~result.success).float().mean()):.4f}, "
        f"forward {result.cost.forward}, backward {result.cost.backward}, "
        f"queries {result.cost.queries}, {seconds:.1f} s"
    )
    run_torchattacks(module, x, y, args.eps)


if __name__ == "__main__":
    main()
