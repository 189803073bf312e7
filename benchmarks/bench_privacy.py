"""Membership inference on the built-in MNIST data: AUC and TPR at 1% / 0.1% FPR of the
loss-threshold baseline, shadow models and LiRA online/offline, and the time per shadow model.

Setup (LiRA paper's protocol, Carlini et al. 2022, scaled to one CPU): the 4,000-image MNIST
train split is the candidate pool. The target trains on a random half (2,000 members, the
other 2,000 are non-members); M reference models train on other random halves of the same
pool, so every candidate is IN for half of them (complementary pairs). The target and the
references share one recipe (an MLP 784-H-10, full-batch Adam), trained together as one
`StackedMLP`. The shadow attack (Shokri et al. 2017) trains its M shadow models on halves of
the 1,000-image test split, disjoint from the candidates.

A second target, the zoo's SmallCNN recipe ("mnist-cnn", 20 epochs) trained on the same
2,000 members, is attacked with the same MLP references: LiRA with mismatched reference
architectures, as a user of a zoo model would run it.

Usage: python benchmarks/bench_privacy.py [--shadows 16] [--steps 300] [--hidden 128]
       [--threads 2] [--no-cnn] [--cnn-shadow] [--out results.json]

About 5 minutes on a quiet 2-core machine (the 17-model stack dominates); 13 minutes with
--cnn-shadow under heavy load from other jobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from adversa import Model
from adversa.data import load_data
from adversa.privacy import (
    LiRA,
    References,
    ShadowAttack,
    StackedTraining,
    ThresholdAttack,
    random_halves,
    train_stacked,
)


def attack_all(model: Model, x, y, members, refs, shadow_pool, training, shadows) -> dict:
    """Every attack's AUC and TPR at 1% / 0.1% FPR; `shadow_pool=None` skips the shadow
    attack (its shadow models do not depend on the target, but the API retrains them)."""
    rows = {}
    results = [ThresholdAttack()(model, x, y)]
    start = time.perf_counter()
    if shadow_pool is not None:
        attack = ShadowAttack(num_shadows=shadows, training=training)
        results.append(attack(model, x, y, *shadow_pool))
    shadow_seconds = time.perf_counter() - start
    for online in (True, False):
        results.append(LiRA(num_references=shadows, online=online)(model, x, y, refs))
    for r in results:
        m = r.metrics(members)
        rows[r.name] = {
            "auc": round(m.auc, 4),
            "tpr_at_1pct_fpr": round(m.tpr_at_fpr[0.01], 4),
            "tpr_at_0.1pct_fpr": round(m.tpr_at_fpr[0.001], 4),
        }
    if "shadow" in rows:
        rows["shadow"]["seconds_incl_attack_models"] = round(shadow_seconds, 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cnn", action="store_true", help="skip the SmallCNN target")
    parser.add_argument("--cnn-shadow", action="store_true", help="shadow attack on the CNN too")
    parser.add_argument("--out", help="also write the numbers as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, test = load_data("mnist", split="train"), load_data("mnist", split="test")
    x, y = train.x, train.y
    training = StackedTraining(hidden=(args.hidden,), steps=args.steps, seed=1)
    masks = random_halves(args.shadows + 1, len(y), seed=0)  # row 0: the target
    start = time.perf_counter()
    stack = train_stacked(x, y, masks, training, 10)
    train_seconds = time.perf_counter() - start
    per_model = train_seconds / (args.shadows + 1)
    members = masks[0]
    target = Model(stack.member(0), num_classes=10, name="mlp-target")
    refs = References(net=stack.select(list(range(1, args.shadows + 1))), masks=masks[1:])
    out = {
        "setup": {
            "pool": len(y),
            "members": int(members.sum()),
            "shadows": args.shadows,
            "reference_training": dataclasses.asdict(training),
            "threads": args.threads,
        },
        "seconds_per_shadow_model": round(per_model, 2),
        "seconds_stack_of_all_models": round(train_seconds, 1),
    }
    acc = float((target.predict(test.x) == test.y).float().mean())
    train_acc = float((target.predict(x[members]) == y[members]).float().mean())
    out["mlp_target"] = {"train_accuracy": train_acc, "test_accuracy": acc}
    out["mlp_target"]["attacks"] = attack_all(
        target, x, y, members, refs, (test.x, test.y), training, args.shadows
    )
    print(json.dumps(out, indent=2))
    if not args.no_cnn:
        from adversa.zoo import build_zoo_module, zoo_entry

        entry = zoo_entry("mnist-cnn")
        net = build_zoo_module(entry, (1, 28, 28), 10)
        opt = torch.optim.Adam(net.parameters(), lr=entry.lr)
        xm, ym = x[members], y[members]
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        steps = entry.epochs * ((len(ym) + entry.batch_size - 1) // entry.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        net.train()
        for _ in range(entry.epochs):
            order = torch.randperm(len(ym), generator=gen)
            for i in range(0, len(ym), entry.batch_size):
                idx = order[i : i + entry.batch_size]
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(net(xm[idx]), ym[idx]).backward()
                opt.step()
                sched.step()
        net.eval()
        cnn = Model(net, num_classes=10, name="small-cnn")
        out["cnn_target"] = {
            "train_seconds": round(time.perf_counter() - start, 1),
            "train_accuracy": float((cnn.predict(xm) == ym).float().mean()),
            "test_accuracy": float((cnn.predict(test.x) == test.y).float().mean()),
            "attacks": attack_all(
                cnn,
                x,
                y,
                members,
                refs,
                (test.x, test.y) if args.cnn_shadow else None,
                training,
                args.shadows,
            ),
        }
        print(json.dumps(out["cnn_target"], indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
