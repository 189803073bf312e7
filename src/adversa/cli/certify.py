"""`adversa certify`: the command line of `adversa.jobs.certify.CertifyPlan`.

    adversa certify --model M --data D --method smoothing|ibp|crown|crown-ibp|alpha-crown
                    [--eps E[,E2]] [--norm linf|l2] [--sigma S --n0 100 --samples 10000
                    --alpha 0.001] [--batch-size B] [--n N] [--attack-check
                    [--attacks pgd,apgd-ce] [--eot K]] [--seed S] [--device D] --out DIR

--n is the number of test points, as in every other command (`--n-points` is accepted too);
the smoothing noise draws per point are --samples (up to 0.1.0, `certify --n` meant these).

Writes DIR/certify.json and DIR/certify.html. With --attack-check, attacks run at the same
eps on the same points and any certificate they contradict is reported as a BUG (also on
stderr); the exit code stays 0 since the report was written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from adversa.certify.report import write_certify_reports
from adversa.cli.common import (
    EXIT_OK,
    RichProgress,
    add_normalize_option,
    check_device,
    check_positive,
    parse_attacks,
    parse_bounds,
    parse_eps,
)
from adversa.data import load_data
from adversa.data.files import check_labelled_folder
from adversa.errors import BadInput
from adversa.jobs.certify import CertifyPlan
from adversa.load import load_model

BOUND_METHODS = ("ibp", "crown", "crown-ibp", "alpha-crown")


def add_certify_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    ce = commands.add_parser(
        "certify",
        parents=[common],
        help="certified accuracy by randomized smoothing or IBP/CROWN bounds; writes "
        "certify.json and certify.html",
        description="Certify a model's predictions: randomized smoothing (Cohen et al. 2019; "
        "L2 radii) or bound propagation (IBP, CROWN, alpha-CROWN; Linf or L2 balls). "
        "--attack-check also "
        "attacks the same points at the same eps and flags any contradiction as a BUG.",
    )
    ce.add_argument("--model", required=True, help="zoo name, file.py:factory (with --weights)")
    ce.add_argument("--weights", help="state_dict for a file.py:factory model")
    add_normalize_option(ce)
    ce.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
        "which runs code from the file",
    )
    ce.add_argument("--data", required=True, help="built-in name, .npz, .csv or image folder")
    ce.add_argument("--label-column", help="the label column of a .csv dataset")
    ce.add_argument("--bounds", help="input range LO,HI (default: the dataset's)")
    _add_method_options(ce)
    ce.add_argument(
        "--n",
        "--n-points",
        dest="n_points",
        type=int,
        help="certify the first N test points (default all); smoothing noise draws: --samples",
    )
    ce.add_argument("--attack-check", action="store_true", help="also attack at the same eps")
    ce.add_argument(
        "--attacks",
        help="attacks of the check for ibp/crown (default pgd,apgd-ce; smoothing: always L2 "
        "PGD with EOT); with --attack-check only",
    )
    ce.add_argument(
        "--eot", type=int, help="smoothing check: EOT noise draws (default 16; with --attack-check)"
    )
    ce.add_argument("--seed", type=int, default=0, help="seeds noise and attacks (default 0)")
    ce.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default cpu)")
    ce.add_argument("--out", required=True, help="output directory (created if missing)")
    ce.set_defaults(handler=cmd_certify)


def _add_method_options(ce: argparse.ArgumentParser) -> None:
    """--method, its radii and norm, and the smoothing options."""
    ce.add_argument("--method", required=True, choices=("smoothing", *BOUND_METHODS))
    ce.add_argument(
        "--eps",
        help="radius or comma-separated radii (required for ibp/crown; for smoothing the L2 "
        "radii to report and attack, default sigma/2)",
    )
    ce.add_argument("--norm", choices=("linf", "l2"), help="default linf (smoothing: l2)")
    ce.add_argument("--sigma", type=float, help="smoothing: noise standard deviation")
    ce.add_argument("--n0", type=int, default=100, help="smoothing: selection samples")
    ce.add_argument(
        "--samples",
        type=int,
        default=10_000,
        help="smoothing: estimation noise samples per point (Cohen et al.'s n)",
    )
    ce.add_argument("--alpha", type=float, default=0.001, help="smoothing: failure probability")
    ce.add_argument(
        "--batch-size",
        type=int,
        help="noisy inputs per forward pass (smoothing, default 1000) or points per bound "
        "batch (default 64)",
    )


def cmd_certify(args: argparse.Namespace) -> int:
    plan = _plan(args)
    dataset = load_data(args.data, split="test", label_column=args.label_column).take(args.n_points)
    check_labelled_folder(dataset)
    bounds = plan.threat(dataset).bounds  # a bad eps or bounds fails before the model loads
    with RichProgress() as progress:
        model = load_model(
            args.model,
            weights=args.weights,
            device=args.device,
            progress=progress,
            bounds=bounds,
            trust_model_file=args.trust_model_file,
            normalize=args.normalize,
        )
        report = plan.run(model, dataset, progress)
    json_path, html_path = write_certify_reports(args.out, report)
    print(summary(report))
    for warning in report["warnings"]:
        if warning.startswith("BUG"):
            print(f"adversa: {warning}", file=sys.stderr)
    print(f"report: {html_path} (and {json_path})")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> CertifyPlan:
    """The flag-level checks, named by flag, then the options as a plan."""
    smoothing = args.method == "smoothing"
    norm = args.norm or ("l2" if smoothing else "linf")
    if smoothing and norm != "l2":
        raise BadInput("--method smoothing certifies L2 radii; use --norm l2")
    if smoothing and args.sigma is None:
        raise BadInput("--method smoothing needs --sigma")
    if not smoothing and args.eps is None:
        raise BadInput(f"--method {args.method} needs --eps")
    if not smoothing and args.sigma is not None:
        raise BadInput(f"--sigma {args.sigma:g}: applies to --method smoothing only")
    for flag, value in (("--n", args.n_points), ("--batch-size", args.batch_size)):
        if value is not None:
            check_positive(flag, value)
    for flag, value in (("--attacks", args.attacks), ("--eot", args.eot)):
        if value is not None and not args.attack_check:
            raise BadInput(f"{flag} {value}: applies with --attack-check only")
    if args.eot is not None:
        check_positive("--eot", args.eot)
    check_positive("--samples", args.samples)
    check_device(args.device)
    provenance = {
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "label_column": args.label_column,
        "device": args.device,
    }
    return CertifyPlan(
        method=args.method,
        eps=tuple(parse_eps(args.eps)) if args.eps else (),
        norm=norm,
        bounds=parse_bounds(args.bounds) if args.bounds else None,
        sigma=args.sigma,
        n0=args.n0,
        n=args.samples,
        alpha=args.alpha,
        batch_size=args.batch_size,
        attack_check=args.attack_check,
        attacks=tuple(parse_attacks(args.attacks or "pgd,apgd-ce")) if args.attack_check else (),
        eot=16 if args.eot is None else args.eot,
        seed=args.seed,
        provenance=provenance,
    )


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: certified (and empirical) accuracy per eps, warnings."""
    config, smoothing = report["config"], report["smoothing"]
    # the points are "points"; "n=" is the smoothing noise samples, as in its warnings
    draws = "" if smoothing is None else f"n={smoothing['n']} noise samples per point, "
    lines = [
        f"{config.get('model')} on {config.get('data')}: {report['method']}, "
        f"{report['n']} points, {draws}{report['norm']}, seed {report['seed']}, "
        f"{report['seconds']:.1f} s",
        f"clean accuracy (base model)  {100 * report['clean_accuracy']:5.1f}%",
    ]
    if smoothing is not None:
        lines.append(f"abstention rate              {100 * report['abstention_rate']:5.1f}%")
    label = "certified" if report["method"] == "smoothing" else "verified "
    for entry in report["results"]:
        accuracy = 100 * entry["certified_accuracy"]
        line = f"{label} accuracy           {accuracy:5.1f}% at eps={entry['eps']:g}"
        if "empirical_robust_accuracy" in entry:
            line += f"  (empirical robust {100 * entry['empirical_robust_accuracy']:.1f}%)"
        lines.append(line)
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)
