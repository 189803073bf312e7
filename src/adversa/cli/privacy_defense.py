"""`adversa privacy-defense`: what label smoothing, early stopping and DP-SGD buy against
membership inference, and what they cost in accuracy.

adversa privacy-defense --data digits --defenses none,label-smoothing,early-stopping,dp-sgd
                        [--members 100] [--epochs 40] [--lira-references 4] --out DIR

Members: the first `--members` images of the data set's train split; non-members: the first
`--members` of its test split (never trained on); validation for early stopping: the next 200
of the train split; test accuracy on the whole test split. Writes DIR/defense.json and
DIR/defense.html.
"""

from __future__ import annotations

import argparse
from typing import Any

from adversa.cli.common import EXIT_OK, check_positive
from adversa.cli.privacy import parse_fprs
from adversa.data import load_data
from adversa.jobs.privacy_defense import DEFENSES, PrivacyDefensePlan
from adversa.privacy.report import (
    DEFENSE_ATTACKS,
    resolution_note,
    tpr_text,
    write_defense_reports,
)


def add_privacy_defense_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    pd = commands.add_parser(
        "privacy-defense",
        parents=[common],
        help="membership-inference AUC and TPR at low FPR before and after label smoothing, "
        "early stopping or DP-SGD, with the accuracy cost; writes defense.json and defense.html",
    )
    pd.add_argument("--data", default="digits", help="built-in data set (default digits)")
    pd.add_argument(
        "--defenses",
        default=",".join(DEFENSES),
        help=f"comma-separated training options, from {', '.join(DEFENSES)} (all by default)",
    )
    pd.add_argument("--members", type=int, default=100, help="members (and non-members), each")
    pd.add_argument("--epochs", type=int, default=40, help="training epochs of every option")
    pd.add_argument("--batch-size", type=int, default=10, help="(expected) batch size")
    pd.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    pd.add_argument("--label-smoothing", type=float, default=0.3, help="for label-smoothing")
    pd.add_argument("--noise-multiplier", type=float, default=2.0, help="DP-SGD's sigma")
    pd.add_argument("--max-grad-norm", type=float, default=1.0, help="DP-SGD's clipping norm")
    pd.add_argument("--dp-lr", type=float, default=1e-2, help="DP-SGD's learning rate")
    pd.add_argument(
        "--lira-references",
        type=int,
        default=0,
        help="also score each option with offline LiRA on this many references (>= 4; 0: off)",
    )
    pd.add_argument("--fpr", default="0.01,0.001", help="FPR targets for TPR, each in (0, 1)")
    pd.add_argument("--seed", type=int, default=0, help="seeds training and the reference halves")
    pd.add_argument("--out", required=True, help="output directory (created if missing)")
    pd.set_defaults(handler=cmd_privacy_defense)


def cmd_privacy_defense(args: argparse.Namespace) -> int:
    check_positive("--members", args.members)
    check_positive("--epochs", args.epochs)
    plan = PrivacyDefensePlan(
        defenses=tuple(n.strip() for n in args.defenses.split(",") if n.strip()),
        members=args.members,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        label_smoothing=args.label_smoothing,
        noise_multiplier=args.noise_multiplier,
        max_grad_norm=args.max_grad_norm,
        dp_lr=args.dp_lr,
        lira_references=args.lira_references,
        fprs=parse_fprs(args.fpr),
        seed=args.seed,
        provenance={k: v for k, v in vars(args).items() if k not in ("handler", "debug")},
    )
    train, test = load_data(args.data, split="train"), load_data(args.data, split="test")
    report = plan.run(train, test)
    _, html_path = write_defense_reports(args.out, report)
    print(defense_summary(report))
    print(f"report: {html_path}")
    return EXIT_OK


def defense_summary(report: dict[str, Any]) -> str:
    """Per option: test accuracy and its cost, epsilon, and per attack its AUC and TPR at each
    FPR (n/a where the non-members cannot resolve it); then the smallest FPR the non-members
    resolve, and the warnings (an AUC below 0.5)."""
    lines = []
    for row in report["options"]:
        eps = "" if row["epsilon"] is None else f"  epsilon {row['epsilon']:.2f}"
        lines.append(
            f"{row['name']:<16} test accuracy {100 * row['test_accuracy']:5.1f}% "
            f"(cost {100 * row['accuracy_cost']:+5.1f} pts){eps}"
        )
        for p, label in DEFENSE_ATTACKS:
            if f"{p}auc" in row:
                tprs = "  ".join(
                    f"TPR@{100 * f:g}%FPR {tpr_text(row, f, p)}" for f in report["fprs"]
                )
                lines.append(f"  {label:<15} AUC {row[p + 'auc']:.3f}  {tprs}")
    if report["options"] and "n_nonmembers" in report["options"][0]:
        lines.append(resolution_note(report["options"][0]))
    return "\n".join([*lines, *(f"warning: {w}" for w in report.get("warnings") or [])])
