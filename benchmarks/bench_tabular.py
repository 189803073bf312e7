"""Attacks on the built-in tabular tasks: success, cost and time per attack and model.

Tasks (test splits, all rows):
- breast-cancer: 113 rows, 30 continuous features scaled to [0, 1], plain linf ball eps 0.1.
- fraud: 800 rows (39 frauds) of the synthetic table, linf eps 0.05 under the data set's
  constraints (`ConstrainedThreat`: immutable account age, increase-only and integer counts,
  one-hot merchant and channel; categorical switches are outside the ball).

Models: an MLP trained here (full batch, seeded; fraud with class weights 1:5) and
scikit-learn RandomForest, HistGradientBoosting and LogisticRegression (fraud: class weights
1:5). The MLP faces every attack; the scikit-learn models, which grant scores only, face the
black-box ones (square, hsj, categorical search with square inside) and transfer from an MLP
distilled from their labels (`fit_surrogate`).

Columns: clean and robust accuracy (correct and not fooled), success on the correctly
classified rows, fraud recall after the attack (fraud only), forward/backward passes and
queries per row, seconds, and the mean importance-weighted l2 norm ||v * (x_adv - x)||_2 of
the successful examples (v: LowProFool's feature importance on the train split).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_tabular.py [--out bench_tabular.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from torch import nn

from adversa import Model, ThreatModel, get_attack
from adversa.attacks.lowprofool import feature_importance
from adversa.data import load_data
from adversa.tabular import ConstrainedThreat, SklearnModel, constraints_for, fit_surrogate


def train_mlp(x: torch.Tensor, y: torch.Tensor, hidden: int, weight: list[float], seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        net.append(nn.ReLU())
        net.append(nn.Linear(hidden, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y, weight=torch.tensor(weight)).backward()
        opt.step()
    return net.eval()


def sklearn_models(weight: dict[int, float] | None) -> dict[str, Callable[[], Any]]:
    return {
        "RandomForest": lambda: RandomForestClassifier(
            n_estimators=100, max_depth=8, random_state=0, class_weight=weight
        ),
        "HistGradientBoosting": lambda: HistGradientBoostingClassifier(
            max_iter=100, random_state=0, class_weight=weight
        ),
        "LogisticRegression": lambda: LogisticRegression(C=10, max_iter=5000, class_weight=weight),
    }


def attacks_for(white_box: bool, surrogate: Model, v: torch.Tensor) -> list[tuple[str, dict]]:
    box = [
        ("square", {"queries": 1000, "p_init": 0.3}),
        ("hsj", {"max_queries": 1000}),
        ("categorical-search", {"continuous": "square", "queries": 300}),
        ("transfer", {"surrogate": surrogate, "attack": "pgd"}),
    ]
    if not white_box:
        return box
    return [
        ("pgd", {"steps": 40}),
        ("apgd-ce", {"steps": 40}),
        ("lowprofool", {"importance": tuple(v.tolist())}),
        ("categorical-search", {"continuous": "pgd", "steps": 20}),
        *box,
    ]


def run_task(name: str, threat: ThreatModel, weight: list[float]) -> list[dict[str, Any]]:
    train, test = load_data(name, split="train"), load_data(name)
    x, y = test.x, test.y
    v = feature_importance(train.x, train.y)
    rows = []
    mlp = Model(train_mlp(train.x, train.y, 32, weight, seed=0), name="MLP")
    class_weight = {0: weight[0], 1: weight[1]} if weight[1] != weight[0] else None
    targets: list[tuple[str, Model, bool]] = [("MLP", mlp, True)]
    for est_name, make in sklearn_models(class_weight).items():
        fitted = make().fit(train.x.numpy(), train.y.numpy())
        targets.append((est_name, SklearnModel(fitted), False))
    for model_name, model, white_box in targets:
        if white_box:
            surrogate = Model(train_mlp(train.x, train.y, 32, weight, seed=1), name="MLP-seed1")
        else:
            surrogate = fit_surrogate(model, train.x, seed=0)
        clean_pred = model.predict(x)
        correct = clean_pred == y
        for attack_name, options in attacks_for(white_box, surrogate, v):
            attack = get_attack(attack_name, threat, seed=0, **options)
            start = time.perf_counter()
            result = attack(model, x, y)
            seconds = time.perf_counter() - start
            assert bool(threat.contains(result.x_adv, x).all()), "infeasible output"
            fooled = result.success & correct
            robust = correct & ~result.success
            frauds = y == 1
            norm = (v * (result.x_adv - x)).norm(dim=1)[fooled]
            label = attack_name
            if attack_name == "categorical-search":
                label += f" ({options['continuous']})"
            rows.append(
                {
                    "task": name,
                    "model": model_name,
                    "attack": label,
                    "n": len(y),
                    "clean_accuracy": float(correct.float().mean()),
                    "robust_accuracy": float(robust.float().mean()),
                    "success_on_correct": float(fooled.sum() / correct.sum().clamp_min(1)),
                    "fraud_recall": float((result.pred[frauds] == 1).float().mean())
                    if name == "fraud"
                    else None,
                    "clean_fraud_recall": float((clean_pred[frauds] == 1).float().mean())
                    if name == "fraud"
                    else None,
                    "forward_per_row": result.cost.forward / len(y),
                    "backward_per_row": result.cost.backward / len(y),
                    "queries_per_row": result.cost.queries / len(y),
                    "seconds": seconds,
                    "weighted_norm": float(norm.mean()) if norm.numel() else None,
                }
            )
            print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r: dict[str, Any]) -> str:
    recall = (
        f" | {r['clean_fraud_recall']:.2f} → {r['fraud_recall']:.2f}"
        if r["fraud_recall"] is not None
        else " | –"
    )
    norm = f"{r['weighted_norm']:.4f}" if r["weighted_norm"] is not None else "–"
    return (
        f"| {r['task']} | {r['model']} | {r['attack']} | {r['clean_accuracy']:.3f} | "
        f"{r['robust_accuracy']:.3f} | {r['success_on_correct']:.3f}{recall} | "
        f"{r['forward_per_row']:.0f} | {r['backward_per_row']:.0f} | "
        f"{r['queries_per_row']:.0f} | {r['seconds']:.2f} | {norm} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    print(
        "| task | model | attack | clean | robust | success (correct) | fraud recall | "
        "fwd/row | bwd/row | queries/row | s | weighted norm |"
    )
    print("|" + "---|" * 12)
    fraud = load_data("fraud")
    rows = run_task("breast-cancer", ThreatModel(norm="linf", eps=0.1), [1.0, 1.0])
    constrained = ConstrainedThreat(
        norm="linf", eps=0.05, constraints=constraints_for(fraud, from_meta=True)
    )
    rows += run_task("fraud", constrained, [1.0, 5.0])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
