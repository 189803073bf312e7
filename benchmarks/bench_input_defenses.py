"""Input-side defenses and detectors on the zoo's `mnist-cnn`: naive versus adaptive.

For each defense: clean accuracy, robust accuracy under the plain attack (naive), robust
accuracy under the adaptive attack (BPDA for non-differentiable parts, EOT over 20 draws for
randomised ones), and the wall time of both runs. For each detector (fitted on 1,000 clean
training digits, threshold at 5% FPR on 1,000 more): ROC AUC against the plain attack's
examples, robust accuracy counting a flagged example as a correct rejection (naive), and
against PGD on classifier and detector together (adaptive, 100 steps, 3 restarts).

Threat model: linf eps 0.3 (where MNIST defenses are usually claimed); attack: PGD, 40 steps,
step 2.5 eps / 40, one random start, on the first n test digits (default 300).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_input_defenses.py [--n 300] [--eps 0.3]
       [--out bench.json] [--reformer DIR] [--only jpeg,lid]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from adversa import Model, ThreatModel, get_attack
from adversa.data import load_data
from adversa.evaluation.adaptive_eval import evaluate_defense
from adversa.input_defenses.reformer import ReformerConfig, save_reformer, train_reformer
from adversa.input_defenses.spec import BuildContext, build_detector, defended
from adversa.zoo import load_zoo_model

DEFENSES = [
    "none",
    "squeeze:bits=1",
    "squeeze:bits=4",
    "median:size=2",
    "smooth:sigma=1",
    "jpeg:quality=75",
    "tvm:weight=0.05",
    "resize-pad:low=0.8",
    "noise:sigma=0.1",
    "dropout:p=0.3",
    "magnet:dir={reformer}",
]
DETECTORS = [
    ("none", "magnet:dir={reformer}"),
    ("none", "squeeze"),
    ("none", "mahalanobis"),
    ("none", "lid"),
    ("magnet:dir={reformer}", "magnet:dir={reformer}"),  # MagNet: reformer and detector
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--eot", type=int, default=20)
    parser.add_argument("--reformer", help="a train-reformer directory (default: train one)")
    parser.add_argument("--only", help="comma-separated substrings of the rows to run")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = Model(load_zoo_model("mnist-cnn").eval(), num_classes=10, name="mnist-cnn")
    test, train = load_data("mnist", split="test"), load_data("mnist", split="train")
    x, y = test.x[: args.n], test.y[: args.n]
    threat = ThreatModel(norm="linf", eps=args.eps)
    pgd = get_attack("pgd", threat, steps=40, seed=0)

    reformer = args.reformer
    if reformer is None:
        start = time.perf_counter()
        net, card = train_reformer(train.x, ReformerConfig())
        reformer = str(save_reformer(net, card, tempfile.mkdtemp(prefix="reformer-")))
        print(f"reformer: {time.perf_counter() - start:.1f} s, clean MSE {card['clean_mse']:.4f}")
    wanted = [w for w in (args.only or "").split(",") if w]

    def run(spec: str, detector_spec: str | None) -> dict:
        start = time.perf_counter()
        target = model if spec == "none" else defended(model, spec.format(reformer=reformer))
        detector = None
        if detector_spec is not None:
            ctx = BuildContext(device=model.device)
            detector = build_detector(detector_spec.format(reformer=reformer), model.module, ctx)
            with torch.no_grad():
                detector.fit(train.x[:1000], train.y[:1000])
            detector.calibrate(train.x[1000:2000], fpr=0.05)
        evaluation = evaluate_defense(
            target, x, y, threat, [args.eps], [pgd], spec=spec, eot=args.eot, detector=detector
        )
        seconds = time.perf_counter() - start
        naive = evaluation.naive.results[0]
        row = {
            "defense": spec.replace("{reformer}", "DIR"),
            "detector": (detector_spec or "").replace("{reformer}", "DIR") or None,
            "clean_accuracy": naive.clean_accuracy,
            "naive_robust_accuracy": evaluation.naive_robust_accuracy,
            "adaptive_robust_accuracy": evaluation.adaptive_robust_accuracy,
            "adaptive_method": evaluation.to_dict()["adaptive_method"],
            "auc": None,
            "seconds": seconds,
        }
        if evaluation.detection is not None:
            det = evaluation.detection
            row["auc"] = det.metrics.auc if det.metrics is not None else None
            row["tpr_at_5fpr"] = det.metrics.tpr_at_fpr if det.metrics is not None else None
            row["clean_flagged"] = det.clean_flagged
            row["naive_robust_accuracy"] = det.naive_robust_accuracy
            row["adaptive_robust_accuracy"] = det.adaptive_robust_accuracy
        print(_line(row), flush=True)
        return row

    print(f"mnist-cnn, linf eps {args.eps:g}, PGD-40, n={args.n}, EOT {args.eot}\n")
    print(_header())
    rows = []
    for spec in DEFENSES:
        if not wanted or any(w in spec for w in wanted):
            rows.append(run(spec, None))
    for spec, detector_spec in DETECTORS:
        if not wanted or any(w in f"{spec} {detector_spec}" for w in wanted):
            rows.append(run(spec, detector_spec))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


def _header() -> str:
    return (
        "| defense | detector | clean acc | naive robust acc | adaptive robust acc | "
        "detector AUC | seconds |\n|---|---|---|---|---|---|---|"
    )


def _line(row: dict) -> str:
    auc = f"{row['auc']:.3f}" if row["auc"] is not None else "-"
    return (
        f"| `{row['defense']}` | {'`' + row['detector'] + '`' if row['detector'] else '-'} | "
        f"{row['clean_accuracy']:.1%} | {row['naive_robust_accuracy']:.1%} | "
        f"{row['adaptive_robust_accuracy']:.1%} | {auc} | {row['seconds']:.1f} |"
    )


if __name__ == "__main__":
    main()
