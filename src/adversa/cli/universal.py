"""`adversa universal`: one perturbation that fools a model on most inputs of a distribution.

adversa universal --model M --data D --norm linf|l2 --eps E [--method sgd-uap|uap] [--n N]
                  [--n-eval N] [--epochs K] [--restarts R] [--transforms SPEC] [--seed S]
                  --out DIR
    trains on the training split of a built-in D (or on half of a data file, a seeded split)
    and writes DIR/report.json (fooling_rate on held-out points, per class, the random
    baseline, accuracy clean and perturbed, cost, config, seed, versions), DIR/report.html
    and DIR/perturbation.pt.

The work is `adversa.jobs.universal.UniversalPlan`.
"""

from __future__ import annotations

import argparse
from typing import Any

from adversa.cli.common import EXIT_OK, RichProgress, add_model_options, model_options, parse_eps
from adversa.data import list_datasets, load_data
from adversa.errors import BadInput
from adversa.jobs.universal import UniversalPlan, split_held_out
from adversa.load import load_model
from adversa.physical.universal import UNIVERSAL_METHODS
from adversa.physical.universal_report import universal_summary, write_universal_reports


def add_universal_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    un = commands.add_parser(
        "universal",
        parents=[common],
        help="universal adversarial perturbation (SGD-UAP, UAP): one perturbation for all "
        "inputs; held-out fooling rate per class beside a random control; writes report.json "
        "and report.html",
    )
    add_model_options(un)
    un.add_argument("--data", required=True, help="built-in name (train/test splits) or a file")
    un.add_argument(
        "--test-data",
        help="held-out data (default: the test split of a built-in --data, else "
        "a seeded half of it)",
    )
    un.add_argument("--norm", required=True, help="linf or l2")
    un.add_argument("--eps", required=True, help="radius of the perturbation, e.g. 0.2 or 8/255")
    un.add_argument("--method", default="sgd-uap", help=f"{', '.join(UNIVERSAL_METHODS.list())}")
    un.add_argument(
        "--n", "--n-points", type=int, default=4000, help="training points (at most the split)"
    )
    un.add_argument("--n-eval", type=int, default=1000, help="held-out points")
    un.add_argument(
        "--epochs", "--steps", type=int, help="sgd-uap epochs or uap passes (method default)"
    )
    un.add_argument("--batch-size", type=int, default=128, help="training mini-batch")
    un.add_argument(
        "--restarts", type=int, default=1, help="sgd-uap: perturbations trained side by side"
    )
    un.add_argument(
        "--transforms", default="none", help="EOT for sgd-uap, e.g. rotate=10,noise=0.02"
    )
    un.add_argument("--seed", type=int, default=0, help="seeds sampling, training, control")
    un.add_argument("--out", required=True, help="output directory (created if missing)")
    un.set_defaults(handler=cmd_universal)


def cmd_universal(args: argparse.Namespace) -> int:
    eps = parse_eps(args.eps)
    if len(eps) != 1:
        raise BadInput(f"--eps takes one value, got {args.eps!r}")
    plan = UniversalPlan(
        norm=args.norm,
        eps=eps[0],
        method=args.method,
        n=args.n,
        n_eval=args.n_eval,
        epochs=args.epochs,
        batch_size=args.batch_size,
        restarts=args.restarts,
        transforms=args.transforms,
        seed=args.seed,
        provenance={k: v for k, v in vars(args).items() if k not in ("handler", "debug")},
    )
    if args.test_data is not None:
        train, test = load_data(args.data, split="all"), load_data(args.test_data)
    elif args.data in list_datasets():
        train, test = load_data(args.data, split="train"), load_data(args.data, split="test")
    else:
        train, test = split_held_out(load_data(args.data), args.seed)
    model = load_model(
        args.model,
        **model_options(args),
        num_classes=test.num_classes,
        bounds=test.bounds,
    )
    with RichProgress() as progress:
        outcome = plan.run(model, train, test, progress=progress)
    _, html_path, _ = write_universal_reports(
        args.out, outcome.report, outcome.perturbation, outcome.examples
    )
    print(universal_summary(outcome.report))
    print(f"report: {html_path}")
    return EXIT_OK
