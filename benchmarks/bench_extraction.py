"""Model extraction of the zoo's `mnist-cnn` from an offline pool: fidelity versus queries of
Copycat, Knockoff Nets (random) and JBDA; what each API-side defense (prediction poisoning
included) does to Knockoff's fidelity and what it costs honest users; the copy as a transfer
surrogate beside Square with the same number of queries; Knockoff's adaptive strategy against
the random one at equal queries.

Setup: the target is the zoo's "mnist-cnn" (SmallCNN on 4,000 MNIST digits). The pool is
`digits-28` (scikit-learn's 8x8 digits, upscaled into MNIST's 28x28 layout under random affine
transforms: other writers, other resolution, no MNIST image). Fidelity and accuracy are
measured on the 1,000-image MNIST test split. Copies are SmallCNNs (10 epochs, at least 500
Adam steps, one-cycle schedule). The transfer attack runs on the first 500 test images at
linf 0.3, crafted on the best copy and on an independent SmallCNN trained on the 4,000
labelled MNIST train images (the attacker who owns labelled data instead of queries), and
beside Square run on the target with the copy's queries (floor(Q / 500) per image), then
doubled until it matches the transfer.

Adaptive Knockoff (`--adaptive-queries`, 5,000): random and adaptive Knockoff on a pool of
20,000 `digits-28` inputs grouped by source digit, then on the same pool plus 20,000
near-blank images (0.05 * uniform noise) in 10 more groups.

Equivalent extraction (Jagielski et al. 2020) from exact scores, `--equivalent-queries`
(50,000) each: the zoo's breast-cancer-mlp (agreement on its test and train splits) and a
one-hidden-layer MLP 64-64-10 on the digits (agreement and weight error).

Usage: python benchmarks/bench_extraction.py [--queries 20000] [--curve 5]
       [--methods copycat,knockoff,jbda] [--defenses top1 round:2 ...] [--transfer-attack fgsm]
       [--equivalent-queries 50000] [--adaptive-queries 5000] [--out results.json]
(a 0 skips the equivalent or adaptive part)

About 20 minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from adversa import Model
from adversa.data import load_data
from adversa.extraction import (
    EXTRACTIONS,
    fidelity,
    honest_cost,
    load_pool,
    load_pool_groups,
    parse_defense,
    serve,
)
from adversa.extraction.equivalent import weight_error
from adversa.jobs.extract import ExtractPlan
from adversa.zoo import load_zoo_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--curve", type=int, default=5)
    parser.add_argument("--methods", default="copycat,knockoff,jbda")
    parser.add_argument(
        "--defenses",
        nargs="*",
        default=["top1", "round:2", "reverse-sigmoid", "poison:eps=0.5", "poison:eps=1,argmax=1"],
    )
    parser.add_argument("--adaptive-queries", type=int, default=5000)
    parser.add_argument("--transfer-attack", default="fgsm")
    parser.add_argument("--equivalent-queries", type=int, default=50000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    target = Model(load_zoo_model("mnist-cnn"), num_classes=10, name="mnist-cnn")
    test, train = load_data("mnist", split="test"), load_data("mnist", split="train")
    pool = load_pool("digits-28", args.queries, seed=0)
    plan = ExtractPlan(
        methods=tuple(args.methods.split(",")),
        queries=args.queries,
        curve=args.curve,
        transfer_attack=args.transfer_attack,
    )
    report = plan.run(target, pool, test, train, progress=lambda m: print(m, flush=True))
    print(f"\nfidelity versus queries (mnist-cnn, pool digits-28, {len(test)} test images)")
    for row in report["methods"]:
        points = "  ".join(
            f"{p['queries']}: {100 * p['fidelity']:.1f}%" for p in row["curves"]["none"]
        )
        print(f"{row['name']:<9} {points}  (copy accuracy {100 * row['accuracy']:.1f}%)")
    defenses = []
    knockoff = next(r for r in report["methods"] if r["name"] == "knockoff")
    for spec in args.defenses:
        defense = parse_defense(spec)
        method = EXTRACTIONS.get("knockoff", queries=args.queries, seed=0)
        result = method(serve(target, defense), pool)
        row = honest_cost(target, defense, test.x, test.y)
        row["knockoff_fidelity"] = fidelity(result.copy, target, test.x)
        row["fidelity_drop"] = knockoff["fidelity"] - row["knockoff_fidelity"]
        if defense.kind == "poison":  # the attacker who falls back to the top-1 labels
            copycat = EXTRACTIONS.get("copycat", queries=args.queries, seed=0)
            copy = copycat(serve(target, defense), pool).copy
            row["copycat_fidelity"] = fidelity(copy, target, test.x)
            print(f"copycat against {row['defense']}: {100 * row['copycat_fidelity']:.1f}%")
        defenses.append(row)
        print(
            f"defense {row['defense']:<34} knockoff fidelity {100 * row['knockoff_fidelity']:.1f}% "
            f"(drop {100 * row['fidelity_drop']:+.1f} pts); honest label accuracy "
            f"{100 * row['label_accuracy']:.1f}% (undefended "
            f"{100 * row['label_accuracy_undefended']:.1f}%), probability change "
            f"{row['probability_change_mean']:.3f} mean / {row['probability_change_max']:.3f} max"
        )
    t = report["transfer"]
    print(
        f"transfer ({t['attack']}, linf {t['eps']}, {t['n']} images): mnist-cnn clean "
        f"{100 * t['clean_accuracy']:.1f}%, robust from the {report['best_method']} copy "
        f"{100 * t['copy_robust_accuracy']:.1f}%, from an independent surrogate "
        f"{100 * t['independent_robust_accuracy']:.1f}%"
    )
    box = t["blackbox"]
    print(
        f"square at the copy's {box['total_budget']} queries ({box['queries_per_point']} per "
        f"image, {box['queries']} spent): {100 * box['robust_accuracy']:.1f}%; "
        + ", ".join(
            f"{r['queries_per_point']} per image: {100 * r['robust_accuracy']:.1f}%"
            for r in box.get("ladder", [])
        )
    )
    adaptive = _adaptive(target, test, args.adaptive_queries) if args.adaptive_queries else {}
    equivalent = _equivalent(args.equivalent_queries) if args.equivalent_queries else {}
    seconds = time.perf_counter() - start
    print(f"{seconds:.0f} s (load average {os.getloadavg()[0]:.1f})")
    if args.out:
        out = {"extract": report, "defenses": defenses, "equivalent": equivalent}
        out["adaptive"] = adaptive
        out["seconds"] = seconds
        out["loadavg"] = os.getloadavg()[0]
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2, default=str)


def _adaptive(target: Model, test, queries: int) -> dict:
    """Random versus adaptive Knockoff at `queries` on 20,000 digits-28 inputs grouped by
    source digit, then with 20,000 near-blank images in 10 more groups."""
    x, groups = load_pool_groups("digits-28", 20000, seed=1)
    blank = 0.05 * torch.rand(20000, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    pools = {
        "digits-28": (x, groups),
        "digits-28 + blanks": (
            torch.cat([x, blank]),
            torch.cat([groups, 10 + torch.arange(20000) % 10]),
        ),
    }
    out = {}
    for label, (pool, group) in pools.items():
        for name in ("knockoff", "knockoff-adaptive"):
            result = EXTRACTIONS.get(name, queries=queries, seed=0)(target, pool, group)
            row = {"queries": result.queries, "fidelity": fidelity(result.copy, target, test.x)}
            row["group_queries"] = result.details.get("group_queries")
            out[f"{label} / {name}"] = row
            print(
                f"adaptive: {label:<20} {name:<18} fidelity {100 * row['fidelity']:.1f}% "
                f"at {row['queries']} queries; per group {row['group_queries']}",
                flush=True,
            )
    return out


def _equivalent(queries: int) -> dict:
    """Jagielski et al.'s functionally equivalent extraction, pool = the train split: of the
    zoo's breast-cancer-mlp (two hidden layers, agreement only) and of a one-hidden-layer MLP
    64-64-10 on scikit-learn's digits (150 full-batch Adam steps; agreement and weight error)."""
    out = {}
    bc = load_data("breast-cancer", split="train")
    bc_test = load_data("breast-cancer", split="test")
    target = Model(load_zoo_model("breast-cancer-mlp"), num_classes=2, name="breast-cancer-mlp")
    result = EXTRACTIONS.get("equivalent", queries=queries, seed=0)(target, bc.x)
    out["breast-cancer-mlp"] = {
        "queries": result.queries,
        "agreement_test": fidelity(result.copy, target, bc_test.x),
        "agreement_train": fidelity(result.copy, target, bc.x),
        "n_test": len(bc_test),
        "units": result.details["units"],
    }
    digits, digits_test = load_data("digits", split="train"), load_data("digits", split="test")
    x, y = digits.x.flatten(1), digits.y
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    target = Model(net.eval(), num_classes=10, name="digits-mlp-64")
    result = EXTRACTIONS.get("equivalent", queries=queries, seed=0)(target, x)
    out["digits-mlp-64"] = {
        "queries": result.queries,
        "agreement_test": fidelity(result.copy, target, digits_test.x.flatten(1)),
        "n_test": len(digits_test),
        **weight_error(result.copy, result.details["units"], *net[0].parameters()),
    }
    for name, row in out.items():
        print(
            f"equivalent {name}: "
            + ", ".join(
                f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.4g}" for k, v in row.items()
            )
        )
    return out


if __name__ == "__main__":
    main()
