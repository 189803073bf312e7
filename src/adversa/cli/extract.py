"""`adversa extract`: steal a model through its predictions, against an optional API-side
defense, and use the copy as the surrogate of a transfer attack.

adversa extract --model M --data POOL --test-data D
                --method copycat|knockoff|knockoff-adaptive|jbda|equivalent[,...] --queries Q
                [--defense top1|round:2|reverse-sigmoid:beta=..,gamma=..|poison:eps=E[,argmax=1]]
                [--arch A] [--curve 4] [--eps 0.3] [--transfer-attack fgsm]
                [--blackbox-attack square|simba|none] [--surrogate-data D|none] --seed S --out DIR
    writes DIR/report.json (fidelity, accuracy, queries, the defense's cost, transfer) and
    DIR/report.html (fidelity versus queries per method, with and without the defense).

The work is `adversa.jobs.extract.ExtractPlan`; pools: `adversa.extraction.pools`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from adversa.cli.common import EXIT_OK, add_model_options, check_positive, model_options
from adversa.data import list_datasets, load_data
from adversa.extraction import POOLS, load_pool_groups
from adversa.extraction.report import extract_summary, write_extract_reports
from adversa.jobs.extract import ExtractPlan
from adversa.load import load_model


def add_extract_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    ex = commands.add_parser(
        "extract",
        parents=[common],
        help="model extraction (Copycat, Knockoff Nets, JBDA, equivalent) through query access, "
        "API-side defenses and the copy as a transfer surrogate; writes report.json and "
        "report.html",
    )
    add_model_options(ex)
    ex.add_argument(
        "--data",
        default="digits-28",
        help=f"query pool: {', '.join(POOLS)} (generated offline) or any data spec (inputs only)",
    )
    ex.add_argument("--test-data", required=True, help="labelled data for fidelity and accuracy")
    ex.add_argument(
        "--method",
        default="knockoff",
        help="copycat, knockoff, knockoff-adaptive, jbda, equivalent (comma list)",
    )
    ex.add_argument("--queries", type=int, default=5000, help="query budget of the final copy")
    ex.add_argument(
        "--defense",
        action="append",
        help="none, top1, round:D, reverse-sigmoid[:beta=B,gamma=G], poison:eps=E[,argmax=1]; "
        "repeat for several (each method then runs against each)",
    )
    ex.add_argument("--arch", help="the copy's architecture (default: small-cnn or mlp)")
    ex.add_argument("--curve", type=int, default=4, help="budgets on the curve: Q, Q/2, Q/4, ...")
    ex.add_argument("--epochs", type=int, default=10, help="copy training passes")
    ex.add_argument("--eps", type=float, default=0.3, help="transfer attack: linf radius")
    ex.add_argument(
        "--transfer-attack", default="fgsm", help="white-box attack run on the copy (fgsm, apgd-ce)"
    )
    ex.add_argument("--transfer-n", type=int, default=500, help="transfer attack: test points")
    ex.add_argument(
        "--blackbox-attack",
        default="square",
        help="score-based attack on the target with the extraction's queries (simba; none: skip)",
    )
    ex.add_argument(
        "--surrogate-data",
        help="labelled data for an independently trained surrogate (default: the train split of "
        "a built-in --test-data; none: skip)",
    )
    ex.add_argument("--seed", type=int, default=0, help="seeds the pool, methods and copies")
    ex.add_argument("--out", required=True, help="output directory (created if missing)")
    ex.set_defaults(handler=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    for flag in ("queries", "curve", "epochs", "transfer_n"):
        check_positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
    plan = ExtractPlan(
        methods=tuple(m.strip() for m in args.method.split(",") if m.strip()),
        queries=args.queries,
        curve=args.curve,
        defense=tuple(args.defense or ["none"]),
        arch=args.arch,
        epochs=args.epochs,
        eps=args.eps,
        transfer_attack=args.transfer_attack,
        transfer_n=args.transfer_n,
        blackbox_attack=args.blackbox_attack,
        seed=args.seed,
        provenance={k: v for k, v in vars(args).items() if k not in ("handler", "debug")},
    )
    test = load_data(args.test_data)
    surrogate = args.surrogate_data
    if surrogate is None and args.test_data in list_datasets():
        surrogate = args.test_data
    surrogate_data = None if surrogate in (None, "none") else load_data(surrogate, split="train")
    pool, groups = load_pool_groups(args.data, args.queries, args.seed)
    model = load_model(
        args.model,
        **model_options(args),
        num_classes=test.num_classes,
        bounds=test.bounds,
    )
    report = plan.run(
        model,
        pool,
        test,
        surrogate_data,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
        groups=groups,
    )
    _, html_path = write_extract_reports(args.out, report)
    print(extract_summary(report))
    print(f"report: {html_path}")
    return EXIT_OK
