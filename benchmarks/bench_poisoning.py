"""Poisoning on the built-in MNIST (4,000 training, 1,000 test images): attack success rate
(ASR) and clean accuracy of each backdoor, recall / precision / ROC AUC of each detector on
the BadNets-poisoned training set, STRIP's AUC on triggered test inputs, and the seconds of
every step; then the targeted clean-label poisons in transfer learning: feature collision
and gradient matching crafted on the clean model, whose penultimate features are frozen while
the victim retrains its last layer on the poisoned set (from scratch, and fine-tuned from the
clean head), over `--targets` seeded test instances each pushed into a random other class.

Victims are the narrow SmallCNN of `adversa.poisoning.surrogate.fit_classifier` (8 and 16
channels, 64 hidden units), Adam 3e-3, batch 64, `--epochs` passes (default 8), one thread.

Reference (Gu et al. 2017, "BadNets", arXiv:1708.06733, Table 1): MNIST with 10% poisoning,
clean accuracy 98.2% and ASR 99.95% (their baseline network, full 60,000-image MNIST).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_poisoning.py [--epochs 8] [--seed 0] [--targets 20]
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
from adversa.poisoning.detect import last_linear, penultimate_features
from adversa.poisoning.surrogate import fit_classifier, fit_linear_head

BACKDOORS = {
    "badnets": {"rate": 0.1},
    "blend": {"rate": 0.1, "alpha": 0.2},
    "clean-label": {"rate": 0.08},  # 320 of the 400 images of class 0
}

# targeted poisons (label, registry name, options): feature collision; gradient matching in
# Linf 0.3 with the default parameter draws and gradient-norm bases, and matched at the
# surrogate's head alone with random bases (the previous default) for comparison
GM = {"eps": 0.3, "steps": 100, "restarts": 2}
OLD = {**GM, "ensemble": 0, "bases": "random"}
TARGETED = [
    ("feature-collision, 20 poisons", "feature-collision", {"n_poisons": 20, "steps": 300}),
    ("feature-collision, 40 poisons", "feature-collision", {"n_poisons": 40, "steps": 300}),
    ("gradient-matching, 40 poisons", "gradient-matching", {**GM, "n_poisons": 40}),
    ("gradient-matching, 80 poisons", "gradient-matching", {**GM, "n_poisons": 80}),
    ("gm surrogate head only, 40 poisons", "gradient-matching", {**OLD, "n_poisons": 40}),
    ("gm surrogate head only, 80 poisons", "gradient-matching", {**OLD, "n_poisons": 80}),
]
HEAD = {"steps": 150, "lr": 2e-2}  # the victim's retraining of its last layer


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", type=int, default=20, help="targeted-poison trials")
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
    targeted(clean, train, test, args.targets, args.seed)


def targeted(clean, train, test, n_targets: int, seed: int) -> None:
    """Success share, clean accuracy (mean and worst over targets) and crafting seconds of
    each targeted poison against heads retrained on `clean`'s frozen features."""
    feats, test_feats = penultimate_features(clean, train.x), penultimate_features(clean, test.x)
    victims = {"scratch": None, "fine-tune": last_linear(clean)}

    def accuracy(head) -> float:
        with torch.no_grad():
            return float((head(test_feats).argmax(1) == test.y).float().mean())

    clean_heads = {
        v: fit_linear_head(feats, train.y, 10, init=i, **HEAD) for v, i in victims.items()
    }
    correct = predict_labels(clean, test.x) == test.y
    for head in clean_heads.values():
        with torch.no_grad():
            correct &= head(test_feats).argmax(1) == test.y
    gen = torch.Generator().manual_seed(seed)
    pool = torch.nonzero(correct).flatten()
    index = pool[torch.randperm(pool.numel(), generator=gen)[:n_targets]]
    goal = (test.y[index] + 1 + torch.randint(9, (n_targets,), generator=gen)) % 10
    print(
        f"\ntargeted poisons, transfer learning ({n_targets} targets; clean head accuracy "
        + ", ".join(f"{v} {100 * accuracy(h):.1f}%" for v, h in clean_heads.items())
        + ")"
    )
    print(
        f"{'attack':<36} {'victim':<9} {'success':>8} {'clean acc':>9} {'worst':>6} {'craft s':>7}"
    )
    for label, name, options in TARGETED:
        hits = dict.fromkeys(victims, 0)
        accs: dict[str, list[float]] = {v: [] for v in victims}
        seconds = 0.0
        for trial, (i, a) in enumerate(zip(index.tolist(), goal.tolist(), strict=True)):
            attack = POISONS.get(name, model=clean, target_x=test.x[i], target_class=a, **options)
            poisoned, t = timed(attack, train, seed=seed + trial)
            seconds += t
            poisoned_feats = feats.clone()
            idx = poisoned.poisoned_idx
            poisoned_feats[idx] = penultimate_features(clean, poisoned.x[idx])
            for victim, init in victims.items():
                head = fit_linear_head(
                    poisoned_feats, poisoned.y, 10, seed=trial, init=init, **HEAD
                )
                with torch.no_grad():
                    hits[victim] += int(head(test_feats[i : i + 1]).argmax()) == a
                accs[victim].append(accuracy(head))
        for victim in victims:
            print(
                f"{label:<36} {victim:<9} {hits[victim]:>4}/{n_targets:<3} "
                f"{100 * sum(accs[victim]) / n_targets:>8.1f}% {100 * min(accs[victim]):>5.1f}% "
                f"{seconds / n_targets:>7.2f}"
            )


if __name__ == "__main__":
    main()
