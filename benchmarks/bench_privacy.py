"""Membership inference on the built-in MNIST data: AUC and TPR at 1% / 0.1% FPR of the
loss-threshold baseline, shadow models, LiRA online/offline with MLP references and with
references of the target's own architecture, and label-only boundary distance; the time per
reference model.

Setup (LiRA paper's protocol, Carlini et al. 2022, scaled to one CPU): the 4,000-image MNIST
train split is the candidate pool. A target trains on a random half (2,000 members, the
other 2,000 are non-members); M reference models train on other random halves of the same
pool, so every candidate is IN for half of them (complementary pairs).

- MLP target: target and M references share one recipe (an MLP 784-H-10, full-batch Adam),
  trained together as one `StackedMLP` of M + 1 models. The shadow attack (Shokri et al.
  2017) trains its M shadow models on halves of the 1,000-image test split.
- SmallCNN target: the zoo's "mnist-cnn" recipe (SmallCNN, 20 epochs, batch 64, Adam at
  2e-3 with cosine decay), trained with M same-architecture references as one `ArchStack`
  of M + 1 models (vmap over the stacked parameters). It is attacked by LiRA with those
  references ("same") and with the MLP references of the first part ("mlp").
- Scaling: `--more-references` further SmallCNN references (other random halves, in pairs)
  join the 16 for a second LiRA run, as the paper's gains with more references suggest.
- Boundary distance (Choquette-Choo et al. 2021): DeepFool (gradients) on every candidate,
  HopSkipJump (labels only, `--hsj-queries` per candidate) on `--hsj-n` candidates.

Usage: python benchmarks/bench_privacy.py [--shadows 16] [--steps 300] [--hidden 128]
       [--cnn-epochs 20] [--more-references 48] [--hsj-n 400] [--threads 2] [--no-cnn]
       [--out results.json]

About 6 minutes on a quiet 2-core machine (3 without the 48 extra references); far longer
when other jobs load it (the JSON records the load average).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from adversa import Model
from adversa.data import load_data
from adversa.privacy import (
    ArchStack,
    ArchTraining,
    BoundaryDistance,
    LiRA,
    References,
    ShadowAttack,
    StackedTraining,
    ThresholdAttack,
    random_halves,
    train_arch_stack,
    train_stacked,
)
from adversa.zoo import zoo_entry


def row(result, members) -> dict:
    m = result.metrics(members)
    return {
        "auc": round(m.auc, 4),
        "tpr_at_1pct_fpr": round(m.tpr_at_fpr[0.01], 4),
        "tpr_at_0.1pct_fpr": round(m.tpr_at_fpr[0.001], 4),
    }


def boundary_rows(model: Model, x, y, members, hsj_n: int, hsj_queries: int) -> dict:
    """Boundary distance by DeepFool on every candidate and by HSJ on a balanced subsample."""
    out = {}
    start = time.perf_counter()
    out["boundary-deepfool"] = row(BoundaryDistance(attack="deepfool")(model, x, y), members)
    out["boundary-deepfool"]["seconds"] = round(time.perf_counter() - start, 1)
    if hsj_n > 0:
        half = hsj_n // 2
        pick = torch.cat([members.nonzero()[:half, 0], (~members).nonzero()[:half, 0]])
        start = time.perf_counter()
        attack = BoundaryDistance(attack="hsj", max_queries=hsj_queries)
        out["boundary-hsj"] = row(attack(model.labels_only(), x[pick], y[pick]), members[pick])
        out["boundary-hsj"]["seconds"] = round(time.perf_counter() - start, 1)
        out["boundary-hsj"]["candidates"] = len(pick)
        base = ThresholdAttack()(model, x[pick], y[pick])
        out["boundary-hsj"]["threshold_auc_same_candidates"] = row(base, members[pick])["auc"]
    return out


def lira_rows(model: Model, x, y, members, refs: References, tag: str) -> dict:
    out = {}
    for online in (True, False):
        result = LiRA(num_references=refs.net.num_models, online=online)(model, x, y, refs)
        out[f"{result.name} ({tag} references)"] = row(result, members)
    return out


def accuracy(model: Model, x, y) -> float:
    return round(float((model.predict(x) == y).float().mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--cnn-epochs", type=int, default=None, help="default: the zoo's 20")
    parser.add_argument(
        "--more-references", type=int, default=48, help="CNN: extra same-arch references (0: skip)"
    )
    parser.add_argument("--hsj-n", type=int, default=400, help="HSJ candidates (0: skip)")
    parser.add_argument("--hsj-queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cnn", action="store_true", help="skip the SmallCNN target")
    parser.add_argument("--out", help="also write the numbers as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, test = load_data("mnist", split="train"), load_data("mnist", split="test")
    x, y = train.x, train.y
    masks = random_halves(args.shadows + 1, len(y), seed=0)  # row 0: the target
    members = masks[0]
    others = list(range(1, args.shadows + 1))
    training = StackedTraining(hidden=(args.hidden,), steps=args.steps, seed=1)
    start = time.perf_counter()
    stack = train_stacked(x, y, masks, training, 10)
    mlp_seconds = time.perf_counter() - start
    target = Model(stack.member(0), num_classes=10, name="mlp-target")
    mlp_refs = References(net=stack.select(others), masks=masks[1:])
    out: dict = {
        "setup": {
            "pool": len(y),
            "members": int(members.sum()),
            "references": args.shadows,
            "mlp_training": dataclasses.asdict(training),
            "threads": args.threads,
        },
        "mlp_seconds_per_model": round(mlp_seconds / (args.shadows + 1), 2),
        "load_average_after_mlp_stack": [round(v, 2) for v in os.getloadavg()],
    }
    attacks = {"loss-threshold": row(ThresholdAttack()(target, x, y), members)}
    start = time.perf_counter()
    shadow = ShadowAttack(num_shadows=args.shadows, training=training)(target, x, y, test.x, test.y)
    attacks["shadow"] = row(shadow, members)
    attacks["shadow"]["seconds_incl_attack_models"] = round(time.perf_counter() - start, 1)
    attacks.update(lira_rows(target, x, y, members, mlp_refs, "mlp"))
    attacks.update(boundary_rows(target, x, y, members, args.hsj_n, args.hsj_queries))
    out["mlp_target"] = {
        "train_accuracy": accuracy(target, x[members], y[members]),
        "test_accuracy": accuracy(target, test.x, test.y),
        "attacks": attacks,
    }
    print(json.dumps(out, indent=2), flush=True)
    if not args.no_cnn:
        recipe = ArchTraining.from_train_config(
            zoo_entry("mnist-cnn").train_config(), epochs=args.cnn_epochs
        )
        recipe = dataclasses.replace(recipe, seed=2)
        start = time.perf_counter()
        cnns = train_arch_stack(x, y, masks, recipe, 10)
        cnn_seconds = time.perf_counter() - start
        start = time.perf_counter()  # one model alone: what the vmap over 17 saves
        train_arch_stack(x, y, masks[:1], recipe, 10)
        alone_seconds = time.perf_counter() - start
        cnn = Model(cnns.member(0), num_classes=10, name="small-cnn")
        same_refs = References(net=cnns.select(others), masks=masks[1:])
        attacks = {"loss-threshold": row(ThresholdAttack()(cnn, x, y), members)}
        attacks.update(lira_rows(cnn, x, y, members, mlp_refs, "mlp"))
        attacks.update(lira_rows(cnn, x, y, members, same_refs, "same-arch"))
        more_seconds = None
        if args.more_references > 0:  # scaling: 16 + more references, still in pairs
            extra = random_halves(args.more_references, len(y), seed=1)
            start = time.perf_counter()
            stack = train_arch_stack(x, y, extra, dataclasses.replace(recipe, seed=3), 10)
            more_seconds = round(time.perf_counter() - start, 1)
            params = {k: torch.cat([v, stack.params[k]]) for k, v in same_refs.net.params.items()}
            many = References(
                net=ArchStack(stack.template, params), masks=torch.cat([masks[1:], extra])
            )
            tag = f"{many.net.num_models} same-arch"
            attacks.update(lira_rows(cnn, x, y, members, many, tag))
        attacks.update(boundary_rows(cnn, x, y, members, args.hsj_n, args.hsj_queries))
        out["cnn_target"] = {
            "recipe": {k: v for k, v in dataclasses.asdict(recipe).items()},
            "seconds_stack_of_all_models": round(cnn_seconds, 1),
            "seconds_per_model": round(cnn_seconds / (args.shadows + 1), 2),
            "seconds_one_model_alone": round(alone_seconds, 2),
            "seconds_more_references": more_seconds,
            "train_accuracy": accuracy(cnn, x[members], y[members]),
            "test_accuracy": accuracy(cnn, test.x, test.y),
            "attacks": attacks,
        }
        print(json.dumps(out["cnn_target"], indent=2), flush=True)
    out["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
