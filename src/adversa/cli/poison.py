"""`adversa poison`, `adversa backdoor-eval` and `adversa inspect-data`.

adversa poison --data D --attack badnets --rate 0.05 --target-class 0 --out DIR
    writes DIR/poisoned.npz (x, y, poisoned_idx), DIR/trigger.npz (pattern, mask) and
    DIR/manifest.json; `adversa train --data DIR/poisoned.npz --test-data D` trains on it.
    DIR/report.html shows the poisons per class, the trigger and poisoned samples.
adversa backdoor-eval --model M --backdoor DIR [--data D] [--out OUT]
    clean accuracy and attack success rate, always both (test split of the manifest's data);
    OUT/report.json and OUT/report.html with triggered examples.
adversa inspect-data --data DIR/poisoned.npz --model M --detector spectral [--rate R]
                     [--retrain [--retrain-epochs K]] [--out OUT]
    per-sample scores and flagged indices (OUT/inspect.json and OUT/report.html with --out);
    precision, recall and ROC AUC when the .npz carries poisoned_idx. `--detector strip`
    screens test inputs instead (the test split of the manifest's data, half triggered) and
    reports its ROC AUC. --retrain trains a fresh small network
    (the built-in recipe of `adversa.poisoning.surrogate.fit_classifier`) on the data with the
    flagged samples removed and reports clean accuracy and ASR of the given model ("before")
    and of the retrained one ("after"); the trigger and test data come from the manifest.json
    next to the .npz.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adversa.cli.common import EXIT_OK, add_model_options, model_options
from adversa.data import load_data
from adversa.errors import BadInput
from adversa.jobs.poison import (
    POISON_OPTIONS,
    Backdoor,
    InspectPlan,
    PoisonPlan,
    write_backdoor_report,
    write_inspect,
)
from adversa.load import load_model


def add_poison_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    po = commands.add_parser(
        "poison", parents=[common], help="poison a training set (backdoor or label flips)"
    )
    po.add_argument("--data", required=True, help="built-in name (train split) or file")
    po.add_argument("--label-column", help="the label column of a .csv dataset")
    po.add_argument("--attack", required=True, help="badnets, blend, clean-label, label-flip")
    po.add_argument("--rate", type=float, required=True, help="share of samples, in (0, 1)")
    po.add_argument("--target-class", type=int, help="backdoor / targeted-flip target")
    po.add_argument("--source-class", type=int, help="targeted label flipping source")
    po.add_argument("--mode", help="label-flip mode: random, targeted, loss")
    po.add_argument("--patch-size", type=int, help="badnets patch side")
    po.add_argument("--alpha", type=float, help="blend weight of the trigger")
    po.add_argument("--eps", type=float, help="clean-label: radius of the PGD perturbation")
    po.add_argument("--seed", type=int, default=0)
    po.add_argument("--out", required=True)
    po.set_defaults(handler=cmd_poison)

    _add_backdoor_eval_parser(commands, common)
    _add_inspect_parser(commands, common)


def _add_backdoor_eval_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    be = commands.add_parser(
        "backdoor-eval", parents=[common], help="clean accuracy and attack success rate"
    )
    add_model_options(be)
    be.add_argument("--backdoor", required=True, help="directory written by `adversa poison`")
    be.add_argument("--data", help="test data (default: the manifest's data, test split)")
    be.add_argument("--label-column", help="the label column of a .csv --data")
    be.add_argument("--out", help="write OUT/report.json and OUT/report.html")
    be.set_defaults(handler=cmd_backdoor_eval)


def _add_inspect_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    ins = commands.add_parser(
        "inspect-data", parents=[common], help="score training samples for poisoning"
    )
    ins.add_argument("--data", required=True)
    ins.add_argument("--label-column", help="the label column of a .csv dataset")
    add_model_options(ins)
    ins.add_argument(
        "--detector",
        default="spectral",
        help="spectral, activation-clustering, loss (score the training samples of --data); "
        "strip screens test inputs, not the training set: the test split of the data named in "
        "the manifest.json next to --data, half of it stamped with the trigger (ROC AUC)",
    )
    ins.add_argument(
        "--rate",
        type=float,
        help="expected poison share (spectral, loss; activation-clustering: assume poisons)",
    )
    ins.add_argument(
        "--retrain",
        action="store_true",
        help="retrain a small network without the flagged samples; ASR and accuracy before/after",
    )
    ins.add_argument(
        "--retrain-epochs", type=int, help="epochs of the retraining (default 4; with --retrain)"
    )
    ins.add_argument("--seed", type=int, default=0, help="seed of the retraining and of strip")
    ins.add_argument("--out", help="write OUT/inspect.json and OUT/report.html")
    ins.set_defaults(handler=cmd_inspect_data)


def cmd_poison(args: argparse.Namespace) -> int:
    plan = PoisonPlan(
        attack=args.attack,
        rate=args.rate,
        **{name: getattr(args, name) for name in POISON_OPTIONS},
        seed=args.seed,
        provenance={"data": args.data, "label_column": args.label_column},
    )
    dataset = load_data(args.data, split="train", label_column=args.label_column)
    run = plan.run(dataset)
    manifest_path = run.write(args.out)
    manifest = run.manifest
    print(
        f"{manifest['attack']}: poisoned {manifest['n_poisoned']} of {manifest['n']} samples; "
        f"wrote {Path(args.out) / 'poisoned.npz'}, {manifest_path} and "
        f"{Path(args.out) / 'report.html'}"
    )
    return EXIT_OK


def cmd_backdoor_eval(args: argparse.Namespace) -> int:
    backdoor = Backdoor.read(args.backdoor)
    label_column = args.label_column if args.data else None
    test = backdoor.test_data(args.data, label_column)
    model = load_model(args.model, **model_options(args))
    m = backdoor.report(model, test, f"--data {args.data or backdoor.manifest['data']}")
    print(
        f"clean accuracy {100 * m['clean_accuracy']:5.1f}%   "
        f"attack success rate {100 * m['asr']:5.1f}%"
    )
    if args.out:
        print(f"wrote {write_backdoor_report(args.out, m)}")
    return EXIT_OK


def cmd_inspect_data(args: argparse.Namespace) -> int:
    if args.retrain_epochs is not None and not args.retrain:
        raise BadInput(f"--retrain-epochs {args.retrain_epochs}: applies with --retrain only")
    if args.retrain_epochs is not None and args.retrain_epochs < 1:
        raise BadInput(f"--retrain-epochs must be >= 1, got {args.retrain_epochs}")
    dataset = load_data(args.data, split="train", label_column=args.label_column)
    plan = InspectPlan(
        detector=args.detector,
        rate=args.rate,
        retrain=args.retrain,
        retrain_epochs=4 if args.retrain_epochs is None else args.retrain_epochs,
        seed=args.seed,
    )
    model = load_model(args.model, **model_options(args))
    report = plan.run(model, dataset, source=args.data)
    _print_inspection(report, len(dataset))
    if args.out:
        print(f"wrote {write_inspect(args.out, report, dataset, args.data)}")
    return EXIT_OK


def _print_inspection(report: dict[str, Any], n: int) -> None:
    if report["detector"] == "strip":
        m = report["metrics"]
        print(
            f"strip on the {report['inputs']}: {m['n_triggered']} triggered, {m['n_clean']} "
            f"clean inputs; ROC AUC {m['auc']:.3f}; at {100 * m['fpr_target']:.0f}% target FPR "
            f"flags {100 * m['tpr']:.1f}% of triggered, {100 * m['fpr']:.1f}% of clean"
        )
        return
    print(f"{report['detector']}: flagged {len(report['flagged'])} of {n} samples")
    if "metrics" in report:
        m = report["metrics"]
        print(f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  ROC AUC {m['auc']:.3f}")
    if "retrain" in report:
        for label in ("before", "after"):
            m = report["retrain"][label]
            print(
                f"{label:<6} clean accuracy {100 * m['clean_accuracy']:5.1f}%   "
                f"attack success rate {100 * m['asr']:5.1f}%"
            )
