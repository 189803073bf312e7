"""Time adversa's PGD against a plain PyTorch loop written here, in one run.

PGD-Linf, eps 0.3, 40 steps of 0.01, one random start, on the zoo's `mnist-cnn-pgd` over the
first 1,000 MNIST test images, one batch. The plain loop takes input gradients only
(`torch.autograd.grad` on the input, parameters frozen) and does nothing per step beyond the
update and the projection. adversa's loop also keeps the best point per sample and drops
points once they are fooled, so a second row times both at eps 0, where nothing can be fooled
and only the bookkeeping overhead remains.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_pgd.py [--n 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa import Model, ThreatModel, get_attack
from adversa.data import load_data
from adversa.zoo import load_zoo_model


def plain_pgd(
    module: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    gen: torch.Generator,
) -> Tensor:
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=gen)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(module(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="mnist-cnn-pgd")
    args = parser.parse_args()

    module = load_zoo_model(args.model).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    data = load_data("mnist", split="test")
    x, y = data.x[: args.n], data.y[: args.n]
    model = Model(module, num_classes=10)
    steps, alpha = 40, 0.01
    print(f"threads={torch.get_num_threads()} n={len(y)} model={args.model}")
    print(f"clean accuracy: {float((model.predict(x) == y).float().mean()):.4f}")

    for eps in (0.3, 0.0):
        attack = get_attack(
            "pgd", ThreatModel(norm="linf", eps=eps), steps=steps, step_size=alpha, seed=0
        )
        plain_times, ours_times = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            start = time.perf_counter()
            x_plain = plain_pgd(module, x, y, eps, alpha, steps, torch.Generator().manual_seed(0))
            plain_times.append(time.perf_counter() - start)
            result = attack(model, x, y)
            ours_times.append(result.seconds)
        with torch.no_grad():
            plain_acc = float((module(x_plain).argmax(1) == y).float().mean())
        ours_acc = float((~result.success).float().mean())
        plain_s, ours_s = statistics.median(plain_times), statistics.median(ours_times)
        print(
            f"eps={eps}: plain {plain_s:.2f}s (robust acc {plain_acc:.4f}) | adversa "
            f"{ours_s:.2f}s (robust acc {ours_acc:.4f}, {result.cost.backward} backward) | "
            f"ratio ours/plain = {ours_s / plain_s:.3f}"
        )


if __name__ == "__main__":
    main()
