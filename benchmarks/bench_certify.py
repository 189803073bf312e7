"""IBP, CROWN-IBP, CROWN and alpha-CROWN bounds: time and tightness on the CROWN-IBP paper's
4-layer MNIST CNN (conv 16 4x4 s2, conv 32 4x4 s2, fc 100, fc 10), a 3x256 MLP and a CNN with
max pooling written with functional calls (traced by torch.fx), on random weights and 32
random MNIST-sized points at Linf 0.02, in one thread. The 4-layer CNN is also written
functionally, and its traced bounds are checked equal to those of its `nn.Sequential`.

If auto_LiRPA is installed (a benchmark-only tool, never a dependency of adversa: install it
from its repository with `pip install --no-deps git+https://github.com/Verified-Intelligence/
auto_LiRPA` in the benchmark's own environment), its CROWN ("backward") bounds on the same
networks and points are timed (three interleaved runs each, best of three) and compared.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_certify.py [--n 32] [--eps 0.02]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import time

import torch
import torch.nn.functional as F
from torch import nn

from adversa import ThreatModel
from adversa.certify import bounds
from adversa.nets import MLP, SmallCNN


class FunctionalSmallCNN(nn.Module):
    """SmallCNN written with functional calls: the same weights, traced instead of walked."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.c1, self.c2, self.f1, self.f2 = seq[0], seq[2], seq[5], seq[7]

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.f2(self.f1(x.flatten(1)).relu())


class PoolCNN(nn.Module):
    """A user's CNN with max pooling and functional calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


def _time(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _against_lirpa(net: nn.Module, x: torch.Tensor, threat: ThreatModel, rounds: int = 3):
    """CROWN in adversa and in auto_LiRPA ("backward"), `rounds` interleaved runs each (so
    other jobs on the machine slow both alike): (our times, theirs, largest bound difference),
    or None without auto_LiRPA."""
    if importlib.util.find_spec("auto_LiRPA") is None:
        return None
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    eps = threat.eps
    bounded = BoundedModule(net, torch.zeros_like(x[:1]))
    ptb = PerturbationLpNorm(
        norm=float("inf"), eps=eps, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1)
    )
    ours, theirs = [], []
    for _ in range(rounds):
        with torch.no_grad():
            seconds, mine = _time(functools.partial(bounds, net, x, threat, "crown"))
            ours.append(seconds)
            seconds, other = _time(
                lambda: bounded.compute_bounds(x=(BoundedTensor(x, ptb),), method="backward")
            )
            theirs.append(seconds)
    diff = max(float((a - b).abs().max()) for a, b in zip(mine, other, strict=True))
    return ours, theirs, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--eps", type=float, default=0.02)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    threat = ThreatModel(norm="linf", eps=args.eps)
    small = SmallCNN().eval()
    nets = {
        "4-layer CNN": small,
        "4-layer CNN, traced": FunctionalSmallCNN(small).eval(),
        "3x256 MLP": MLP(784, (256, 256, 256), 10).eval(),
        "max-pool CNN, traced": PoolCNN().eval(),
    }
    print(f"{args.n} points, linf eps {args.eps}, one thread")
    print(f"{'network':24} {'method':10} {'seconds':>8} {'mean width':>11}")
    results = {}
    for name, net in nets.items():
        for method in ("ibp", "crown-ibp", "crown", "alpha-crown"):
            with torch.no_grad():
                run = functools.partial(bounds, net, x, threat, method)
                seconds, (lower, upper) = _time(run, 1 if "crown" in method else 3)
            results[name, method] = (lower, upper)
            width = float((upper - lower).mean())
            gain = ""
            if method == "alpha-crown":
                crown = results[name, "crown"]
                ratio = width / float((crown[1] - crown[0]).mean())
                gain = f"  ({1 - ratio:.1%} narrower than CROWN)"
            print(f"{name:24} {method:11} {seconds:8.3f} {width:11.4f}{gain}")
        if name.endswith("traced") and (name[: -len(", traced")], "crown") in results:
            plain = results[name[: -len(", traced")], "crown"]
            diff = max(
                float((a - b).abs().max())
                for a, b in zip(plain, results[name, "crown"], strict=True)
            )
            print(f"{'':24} traced vs Sequential CROWN bounds: max difference {diff:.2e}")
        if not name.endswith("traced"):
            compared = _against_lirpa(net, x, threat)
            if compared is not None:
                ours, theirs, diff = compared
                ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs, strict=True))
                print(
                    f"{name:24} CROWN vs auto_LiRPA, 3 interleaved runs: best {min(ours):.3f} s"
                    f" vs {min(theirs):.3f} s, ratio {min(ours) / min(theirs):.2f} (per run"
                    f" {ratios}), largest bound difference {diff:.1e}"
                )
    if importlib.util.find_spec("auto_LiRPA") is None:
        print("auto_LiRPA is not installed: no comparison (see this file's docstring)")


if __name__ == "__main__":
    main()
