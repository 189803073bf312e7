"""Poisoning on the built-in MNIST (4,000 training, 1,000 test images): attack success rate
(ASR) and clean accuracy of each backdoor, recall / precision / ROC AUC of each detector on
the BadNets-poisoned training set, STRIP's AUC on triggered test inputs, and the seconds of
every step.

Victims are the narrow SmallCNN of `adversa.poisoning.surrogate.fit_classifier` (8 and 16
channels, 64 hidden units), Adam 3e-3, batch 64, `--epochs` passes (default 8), one thread.

Reference (Gu et al. 2017, "BadNets", arXiv:1708.06733, Table 1): MNIST with 10% poisoning,
clean accuracy 98.2% and ASR 99.95% (their baseline network, full 60,000-image MNIST).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_poisoning.py [--epochs 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from adversa.data import load_data
from adversa.poisoning import (
    POISONS,
    STRIP,
    apply_trigger,
    attack_success_rate,
    get_detector,
    roc_auc,
)
from adversa.poisoning.base import predict_labels
from adversa.poisoning.surrogate import fit_classifier

BACKDOORS = {
    "badnets": {"rate": 0.1},
    "blend": {"rate": 0.1, "alpha": 0.2},
    "clean-label": {"rate": 0.08},  # 320 of the 400 images of class 0
}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = load_data("mnist", split="train"), load_data("mnist", split="test")

    clean, t_clean = timed(fit_classifier, train.x, train.y, 10, epochs=args.epochs, seed=1)
    clean_acc = float((predict_labels(clean, test.x) == test.y).float().mean())
    print(f"clean model: accuracy {100 * clean_acc:.1f}%  (train {t_clean:.1f} s)")
    print(
        f"{'backdoor':<12} {'rate':>5} {'poison s':>8} {'train s':>7} {'clean acc':>9} {'ASR':>6}"
    )
    models = {}
    for name, options in BACKDOORS.items():
        attack = POISONS.get(name, target_class=0, **options)
        poisoned, t_poison = timed(attack, train, seed=args.seed)
        net, t_train = timed(fit_classifier, poisoned.x, poisoned.y, 10, epochs=args.epochs, seed=1)
        acc = float((predict_labels(net, test.x) == test.y).float().mean())
        asr = attack_success_rate(net, test.x, test.y, poisoned.trigger, 0)
        models[name] = (poisoned, net)
        print(
            f"{name:<12} {options['rate']:>5.2f} {t_poison:>8.1f} {t_train:>7.1f} "
            f"{100 * acc:>8.1f}% {100 * asr:>5.1f}%"
        )

    badnets_5, _ = timed(POISONS.get("badnets", rate=0.05, target_class=0), train, seed=args.seed)
    net_5 = fit_classifier(badnets_5.x, badnets_5.y, 10, epochs=args.epochs, seed=1)
    for rate, (poisoned, net) in ((0.05, (badnets_5, net_5)), (0.1, models["badnets"])):
        print(f"\ndetectors on the BadNets set ({rate:.0%} poisons, all relabelled to class 0)")
        print(f"{'detector':<22} {'recall':>6} {'precision':>9} {'AUC':>6} {'seconds':>7}")
        for name, options in (
            ("spectral", {"rate": rate}),
            ("activation-clustering", {}),
            ("loss", {"rate": rate}),
        ):
            detection, seconds = timed(get_detector(name, **options), net, poisoned.x, poisoned.y)
            m = detection.metrics(poisoned.poisoned_idx)
            print(
                f"{name:<22} {m['recall']:>6.3f} {m['precision']:>9.3f} {m['auc']:>6.3f} "
                f"{seconds:>7.2f}"
            )
    poisoned, net = models["badnets"]
    triggered = apply_trigger(test.x[test.y != 0][:500], poisoned.trigger)
    strip = STRIP(n_overlays=16, seed=args.seed)
    scores, seconds = timed(
        lambda: torch.cat(
            [
                strip.scores(net, triggered, train.x[:500]),
                strip.scores(net, test.x[:500], train.x[:500]),
            ]
        )
    )
    auc = roc_auc(scores, torch.arange(1000) < 500)
    print(f"{'strip (test inputs)':<22} {'':>6} {'':>9} {auc:>6.3f} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
