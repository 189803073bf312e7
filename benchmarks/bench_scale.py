"""adversa on models of the size people deploy: time, memory and per-class cost.

Three measurements, one thread, random weights (timing and memory do not depend on training;
no weights download here):

1. PGD-10 (Linf, 4/255) through adversa against a plain PyTorch loop written here doing the
   same job: ten steps (`early_stop=False`, so fooled points keep stepping as in the loop),
   then one forward pass that says which returned points fool the model, which robust
   accuracy needs and which is adversa's verification. Also against the bare loop, which
   stops before that pass, and both again in the channels-last layout (`Model(...,
   channels_last=True)` against the loop on a channels-last copy). Interleaved repeats,
   median seconds. The points are the model's own predictions, so PGD runs with
   `clean_check=False`, as `evaluate` runs it on the correctly classified points it attacks.
2. `autoattack-fast` on 8 images in a fresh process: its peak resident memory (ru_maxrss),
   which must stay under 4 GB.
3. DeepFool and FAB (`candidates`) and FAB-T (`n_target_classes`) at several k on the model with
   1,000 classes and on the same network with 10 classes: backward passes and seconds grow
   with k, not with the number of classes.

Models: `resnet18` at 224x224 with 1,000 classes (batch 16, 8 for autoattack) and `wrn-28-10`
at 32x32 with 10 classes (batch 64), both from `adversa.nets`.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [--arch resnet18|wrn-28-10]
       [--repeats 3] [--skip-memory] [--skip-classes]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import bench_pgd  # this folder is on sys.path when a benchmark runs as a script
import torch
from torch import Tensor, nn

from adversa import Model, ThreatModel, get_attack
from adversa.nets import build_arch

SETTINGS = {  # arch -> (input shape, classes, PGD batch)
    "resnet18": ((3, 224, 224), 1000, 16),
    "wrn-28-10": ((3, 32, 32), 10, 64),
}
EPS, STEPS = 4 / 255, 10


def plain_pgd(module: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
    """bench_pgd's plain loop at this benchmark's eps, steps and step size (2.5 eps / steps)."""
    return bench_pgd.plain_pgd(module, x, y, EPS, 2.5 * EPS / STEPS, STEPS, gen)


def plain_pgd_classified(module: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
    """The same job as adversa's PGD: the plain loop, then one forward pass that tells which
    returned points fool the model (what robust accuracy needs, and adversa's verification)."""
    x_adv = plain_pgd(module, x, y, gen)
    with torch.no_grad():
        return module(x_adv).argmax(1) != y


def network(arch: str, classes: int) -> nn.Module:
    torch.manual_seed(0)
    module = build_arch(arch, SETTINGS[arch][0], classes).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def images(arch: str, n: int) -> Tensor:
    return torch.rand(n, *SETTINGS[arch][0], generator=torch.Generator().manual_seed(1))


def time_pgd(arch: str, repeats: int) -> dict[str, float]:
    """Median seconds of five runs of the same PGD-10, interleaved so that drift hits all
    alike: the bare loop, the loop that classifies its result, adversa, and both of the
    latter in the channels-last layout; and their ratios."""
    _, classes, batch = SETTINGS[arch]
    module = network(arch, classes)
    module_cl = copy.deepcopy(module).to(memory_format=torch.channels_last)
    model = Model(module, num_classes=classes)
    model_cl = Model(copy.deepcopy(module), num_classes=classes, channels_last=True)
    x = images(arch, batch)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y = model.predict(x)
    # y is the model's own prediction, so every point is classified correctly: no clean check
    # (as in evaluate, which attacks only correctly classified points)
    attack = get_attack(
        "pgd",
        ThreatModel(norm="linf", eps=EPS),
        steps=STEPS,
        early_stop=False,
        clean_check=False,
    )

    def loop(net: nn.Module, inputs: Tensor, classify: bool) -> None:
        run = plain_pgd_classified if classify else plain_pgd
        run(net, inputs, y, torch.Generator().manual_seed(0))

    runs: dict[str, Callable[[], object]] = {
        "loop": lambda: loop(module, x, False),
        "loop_classified": lambda: loop(module, x, True),
        "adversa": lambda: attack(model, x, y),
        "loop_classified_cl": lambda: loop(module_cl, x_cl, True),
        "adversa_cl": lambda: attack(model_cl, x, y),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    return {
        **{f"{name}_seconds": value for name, value in median.items()},
        "ratio": median["adversa"] / median["loop_classified"],
        "ratio_bare": median["adversa"] / median["loop"],
        "ratio_cl": median["adversa_cl"] / median["loop_classified_cl"],
        "ratio_cl_bare": median["adversa_cl"] / median["loop"],
    }


def autoattack_memory(arch: str) -> dict[str, float]:
    """Runs `autoattack-fast` on 8 images in a child process; its peak RSS in GB."""
    code = (
        "import json, resource, sys, time; sys.path.insert(0, 'benchmarks');"
        "import bench_scale as b; import torch;"
        "from adversa import Model, ThreatModel, get_attack;"
        f"arch = {arch!r}; classes = b.SETTINGS[arch][1];"
        "m = Model(b.network(arch, classes), num_classes=classes); x = b.images(arch, 8);"
        "y = m.predict(x); t = time.perf_counter();"
        "r = get_attack('autoattack-fast', ThreatModel(norm='linf', eps=4 / 255))(m, x, y);"
        "print(json.dumps({'seconds': time.perf_counter() - t,"
        " 'robust': float((~r.success).float().mean()), 'forward': r.cost.forward,"
        " 'backward': r.cost.backward,"
        " 'peak_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def per_class_cost(arch: str) -> list[dict[str, float]]:
    """Backward passes and seconds of DeepFool and FAB-T at several k, on 1,000 and 10
    classes (4 images, 3 steps)."""
    rows = []
    threat = ThreatModel(norm="l2", eps=float("inf"))
    for classes in (1000, 10):
        model = Model(network(arch, classes), num_classes=classes)
        x = images(arch, 4)
        y = model.predict(x)
        for name, field, ks in (
            ("deepfool", "candidates", (2, 5, 10)),
            ("fab", "candidates", (2, 5, 10)),
            ("fab-t", "n_target_classes", (1, 3, 9)),
        ):
            for k in ks:
                options = {field: k, "steps": 3}
                if name.startswith("fab"):
                    options["final_search_steps"] = 0
                result = get_attack(name, threat=threat, **options)(model, x, y)
                rows.append(
                    {
                        "attack": name,
                        "classes": classes,
                        "k": k,
                        "backward": result.cost.backward,
                        "seconds": result.seconds,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(SETTINGS), default="resnet18")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-classes", action="store_true", help="skip the per-class part")
    args = parser.parse_args()
    shape, classes, batch = SETTINGS[args.arch]
    print(f"{args.arch} {shape} {classes} classes, threads={torch.get_num_threads()}")

    pgd = time_pgd(args.arch, args.repeats)
    print(
        f"PGD-{STEPS} batch {batch}: adversa {pgd['adversa_seconds']:.2f} s, the loop that "
        f"classifies its result {pgd['loop_classified_seconds']:.2f} s, ratio "
        f"{pgd['ratio']:.3f} (target <= 1.05); the bare loop {pgd['loop_seconds']:.2f} s, "
        f"ratio {pgd['ratio_bare']:.3f}\n"
        f"  channels-last: adversa {pgd['adversa_cl_seconds']:.2f} s, the classifying loop "
        f"{pgd['loop_classified_cl_seconds']:.2f} s, ratio {pgd['ratio_cl']:.3f}; against "
        f"the bare loop in the default layout {pgd['ratio_cl_bare']:.3f}"
    )
    if not args.skip_memory:
        memory = autoattack_memory(args.arch)
        print(
            f"autoattack-fast on 8 images: {memory['seconds']:.1f} s, peak memory "
            f"{memory['peak_gb']:.2f} GB (target < 4), forward {memory['forward']}, "
            f"backward {memory['backward']}"
        )
    rows = [] if args.skip_classes else per_class_cost(args.arch)
    if rows:
        print("per-class cost (4 images, 3 steps): attack, classes, k, backward, seconds")
    for row in rows:
        print(
            f"  {row['attack']:<9} {row['classes']:>5} k={row['k']:<3} "
            f"{row['backward']:>5} {row['seconds']:.2f} s"
        )
    # the parent's own peak, for reference (the PGD batch and the models)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"this process peak memory {peak:.2f} GB")


if __name__ == "__main__":
    main()
