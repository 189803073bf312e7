"""`adversa certify`: the command line of `adversa.certify.run_certification`.

    adversa certify --model M --data D --method smoothing|ibp|crown|crown-ibp
                    [--eps E[,E2]] [--norm linf|l2] [--sigma S --n0 100 --n 10000
                    --alpha 0.001] [--batch-size B] [--n-points N] [--attack-check
                    [--attacks pgd,apgd-ce] [--eot K]] [--seed S] [--device D] --out DIR

Writes DIR/certify.json and DIR/certify.html. With --attack-check, attacks run at the same
eps on the same points and any certificate they contradict is reported as a BUG (also on
stderr); the exit code stays 0 since the report was written.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

from adversa.errors import BadInput

BOUND_METHODS = ("ibp", "crown", "crown-ibp")


def add_certify_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    ce = commands.add_parser(
        "certify",
        parents=[common],
        help="certified accuracy by randomized smoothing or IBP/CROWN bounds; writes "
        "certify.json and certify.html",
        description="Certify a model's predictions: randomized smoothing (Cohen et al. 2019; "
        "L2 radii) or bound propagation (IBP, CROWN; Linf or L2 balls). --attack-check also "
        "attacks the same points at the same eps and flags any contradiction as a BUG.",
    )
    ce.add_argument("--model", required=True, help="zoo name, file.py:factory (with --weights)")
    ce.add_argument("--weights", help="state_dict for a file.py:factory model")
    ce.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
        "which runs code from the file",
    )
    ce.add_argument("--data", required=True, help="built-in name, .npz, .csv or image folder")
    ce.add_argument("--label-column", help="the label column of a .csv dataset")
    ce.add_argument("--bounds", help="input range LO,HI (default: the dataset's)")
    ce.add_argument("--method", required=True, choices=("smoothing", *BOUND_METHODS))
    ce.add_argument(
        "--eps",
        help="radius or comma-separated radii (required for ibp/crown; for smoothing the L2 "
        "radii to report and attack, default sigma/2)",
    )
    ce.add_argument("--norm", choices=("linf", "l2"), help="default linf (smoothing: l2)")
    ce.add_argument("--sigma", type=float, help="smoothing: noise standard deviation")
    ce.add_argument("--n0", type=int, default=100, help="smoothing: selection samples")
    ce.add_argument("--n", type=int, default=10_000, help="smoothing: estimation samples")
    ce.add_argument("--alpha", type=float, default=0.001, help="smoothing: failure probability")
    ce.add_argument(
        "--batch-size",
        type=int,
        help="noisy inputs per forward pass (smoothing, default 1000) or points per bound "
        "batch (default 64)",
    )
    ce.add_argument("--n-points", type=int, help="certify the first N test points (default all)")
    ce.add_argument("--attack-check", action="store_true", help="also attack at the same eps")
    ce.add_argument(
        "--attacks",
        default="pgd,apgd-ce",
        help="attacks of the check for ibp/crown (smoothing: always L2 PGD with EOT)",
    )
    ce.add_argument("--eot", type=int, default=16, help="smoothing check: EOT noise draws")
    ce.add_argument("--seed", type=int, default=0, help="seeds noise and attacks (default 0)")
    ce.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default cpu)")
    ce.add_argument("--out", required=True, help="output directory (created if missing)")
    ce.set_defaults(handler=cmd_certify)


def cmd_certify(args: argparse.Namespace) -> int:
    from adversa.certify import CertificationWarning, Smooth, run_certification
    from adversa.certify.report import certify_report, write_certify_reports
    from adversa.cli.common import (
        EXIT_OK,
        RichProgress,
        check_device,
        check_positive,
        parse_attacks,
        parse_bounds,
        parse_eps,
    )
    from adversa.data import load_data
    from adversa.data.files import check_labelled_folder
    from adversa.load import load_model
    from adversa.threat import ThreatModel

    start = time.perf_counter()
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
    for flag, value in (("--n-points", args.n_points), ("--batch-size", args.batch_size)):
        if value is not None:
            check_positive(flag, value)
    check_positive("--eot", args.eot)
    check_device(args.device)
    batch_size = args.batch_size or (1000 if smoothing else 64)
    smooth = None
    if smoothing:
        smooth = Smooth(
            sigma=args.sigma,
            n0=args.n0,
            n=args.n,
            alpha=args.alpha,
            batch_size=batch_size,
            seed=args.seed,
        )
    eps_values = parse_eps(args.eps) if args.eps else [args.sigma / 2]
    attacks = parse_attacks(args.attacks) if args.attack_check else []
    dataset = load_data(args.data, split="test", label_column=args.label_column).take(args.n_points)
    check_labelled_folder(dataset)
    bounds = parse_bounds(args.bounds) if args.bounds else tuple(dataset.bounds)
    threat = ThreatModel(norm=norm, eps=max(eps_values), bounds=bounds)  # type: ignore[arg-type]
    with RichProgress() as progress, warnings.catch_warnings():
        warnings.simplefilter("ignore", CertificationWarning)  # reported below, once
        model = load_model(
            args.model,
            weights=args.weights,
            device=args.device,
            progress=progress,
            bounds=bounds,
            trust_model_file=args.trust_model_file,
        )
        result = run_certification(
            model,
            dataset.x,
            dataset.y,
            threat,
            eps_values,
            method=args.method,
            smooth=smooth,
            attacks=attacks,
            batch_size=64 if smoothing else batch_size,
            seed=args.seed,
            eot=args.eot,
            progress=progress,
        )
    config: dict[str, Any] = {
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "label_column": args.label_column,
        "method": args.method,
        "norm": norm,
        "eps": eps_values,
        "bounds": list(bounds),
        "n": len(dataset),
        "batch_size": batch_size,
        "attack_check": args.attack_check,
        "attacks": list(result.attacks),
        "seed": args.seed,
        "device": args.device,
        "class_names": list(dataset.class_names) if dataset.class_names else None,
    }
    if "class_map" in dataset.meta:  # an image folder: which folder is which label, and why
        config["class_map"] = dataset.meta["class_map"]
        config["labels_from"] = dataset.meta["labels_from"]
    if smoothing:
        config |= {"sigma": args.sigma, "n0": args.n0, "n_samples": args.n, "alpha": args.alpha}
        config |= {"eot": args.eot}
    report = certify_report(result, config=config, seconds=time.perf_counter() - start)
    json_path, html_path = write_certify_reports(args.out, report)
    print(summary(report))
    for warning in report["warnings"]:
        if warning.startswith("BUG"):
            print(f"adversa: {warning}", file=sys.stderr)
    print(f"report: {html_path} (and {json_path})")
    return EXIT_OK


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: certified (and empirical) accuracy per eps, warnings."""
    config = report["config"]
    lines = [
        f"{config.get('model')} on {config.get('data')}: {report['method']}, n={report['n']}, "
        f"{report['norm']}, seed {report['seed']}, {report['seconds']:.1f} s",
        f"clean accuracy (base model)  {100 * report['clean_accuracy']:5.1f}%",
    ]
    if report["smoothing"] is not None:
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
