"""`adversa certify`: the command line of `adversa.jobs.certify.CertifyPlan`.

    adversa certify --model M --data D --method smoothing|ibp|crown|crown-ibp|alpha-crown
                    [--eps E[,E2]] [--norm linf|l2] [--sigma S --n0 100 --samples 10000
                    --alpha 0.001] [--batch-size B] [--n N] [--attack-check
                    [--attacks pgd,apgd-ce] [--eot K]] [--seed S] [--device D] --out DIR
    adversa certify --model M --data D --method patch-smoothing --size S[,S2]
                    [--ablation column|block] [--band B] [--threshold T|argmax]
                    [--attack-check] ... --out DIR

--size is a patch side in pixels (an integer, e.g. 5 for 5x5 patches) or, below 1, a share
of the image area (0.05: the smallest square covering 5% of it); --ablation and --band
default to those the model (an ablated architecture such as mnist-cnn-ablated) was trained
with; --threshold is the softmax level at which a band votes for a class (0.2, the paper's
code default; 'argmax': one vote per band). With --attack-check, a PGD patch attack at a grid
of locations checks the certificates.

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

from adversa.certify.ablation import ABLATIONS, check_ablation
from adversa.certify.patch_smoothing import THRESHOLD
from adversa.certify.report import write_certify_reports
from adversa.cli.common import (
    EXIT_OK,
    RichProgress,
    add_model_options,
    check_device,
    check_positive,
    model_options,
    parse_attacks,
    parse_bounds,
    parse_eps,
)
from adversa.data import load_data
from adversa.data.dataset import Dataset
from adversa.data.files import check_labelled_folder
from adversa.errors import BadInput
from adversa.jobs.certify import CertifyPlan
from adversa.load import load_model

BOUND_METHODS = ("ibp", "crown", "crown-ibp", "alpha-crown")
PATCH = "patch-smoothing"


def add_certify_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    ce = commands.add_parser(
        "certify",
        parents=[common],
        help="certified accuracy by randomized smoothing, IBP/CROWN bounds or patch smoothing; "
        "writes "
        "certify.json and certify.html",
        description="Certify a model's predictions: randomized smoothing (Cohen et al. 2019; "
        "L2 radii), bound propagation (IBP, CROWN, alpha-CROWN; Linf or L2 balls) or "
        "(de)randomized smoothing against m x m patches (Levine & Feizi 2020). "
        "--attack-check also "
        "attacks the same points at the same eps and flags any contradiction as a BUG.",
    )
    add_model_options(ce, model_help="zoo name, file.py:factory (with --weights)")
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
    ce.add_argument(
        "--attack-check",
        action="store_true",
        help="also attack at the same eps (patch-smoothing: PGD in the patch at a 3x3 grid of "
        "places, judged by the vote count)",
    )
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
    ce.add_argument("--method", required=True, choices=("smoothing", *BOUND_METHODS, PATCH))
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
        "(or patch-smoothing vote) batch (default 64)",
    )
    ce.add_argument(
        "--size",
        help="patch-smoothing: patch side(s) in pixels (5: 5x5 patches), or shares of the image "
        "area below 1 (0.05), comma-separated",
    )
    ce.add_argument(
        "--ablation", choices=ABLATIONS, help="patch-smoothing: default the model's (column)"
    )
    ce.add_argument("--band", type=int, help="patch-smoothing: band width; default the model's")
    ce.add_argument(
        "--threshold",
        help="patch-smoothing: a band votes for every class whose softmax is >= this level in "
        f"(0, 1] (default {THRESHOLD:g}, as Levine & Feizi), or 'argmax' for one vote per band",
    )


def cmd_certify(args: argparse.Namespace) -> int:
    plan = _plan(args)
    dataset = load_data(args.data, split="test", label_column=args.label_column).take(args.n_points)
    check_labelled_folder(dataset)
    _check_patches_fit(args, plan, dataset)
    bounds = plan.threat(dataset).bounds  # a bad eps or bounds fails before the model loads
    with RichProgress() as progress:
        model = load_model(
            args.model, device=args.device, progress=progress, bounds=bounds, **model_options(args)
        )
        report = plan.run(model, dataset, progress)
    json_path, html_path = write_certify_reports(args.out, report)
    print(patch_summary(report) if args.method == PATCH else summary(report))
    for warning in report["warnings"]:
        if warning.startswith("BUG"):
            print(f"adversa: {warning}", file=sys.stderr)
    print(f"report: {html_path} (and {json_path})")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> CertifyPlan:
    """The flag-level checks, named by flag, then the options as a plan."""
    if args.method == PATCH:
        return CertifyPlan(**_patch_options(args))
    patch_flags = (("--size", args.size), ("--ablation", args.ablation), ("--band", args.band))
    patch_flags += (("--threshold", args.threshold),)
    for flag, value in patch_flags:
        if value is not None:
            raise BadInput(f"{flag} {value}: applies to --method {PATCH} only")
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
        provenance=_provenance(args),
    )


def _provenance(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("model", "weights", "data", "label_column", "device")
    return {key: getattr(args, key) for key in keys}


def _patch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The patch-smoothing flags, checked by name, as CertifyPlan options."""
    if args.size is None:
        raise BadInput(f"--method {PATCH} needs --size (a patch side in pixels, e.g. 5)")
    for flag, value in (("--eps", args.eps), ("--norm", args.norm), ("--sigma", args.sigma)):
        if value is not None:
            raise BadInput(f"{flag} {value}: does not apply to --method {PATCH} (give --size)")
    for flag, value in (("--attacks", args.attacks), ("--eot", args.eot)):
        if value is not None:
            raise BadInput(f"{flag} {value}: the {PATCH} check is a PGD patch attack of its own")
    for flag, value in (("--n", args.n_points), ("--batch-size", args.batch_size)):
        if value is not None:
            check_positive(flag, value)
    if args.band is not None:
        check_positive("--band", args.band)
    check_device(args.device)
    return {
        "method": PATCH,
        "size": tuple(_parse_size(part) for part in args.size.split(",")),
        "ablation": args.ablation,
        "band": args.band,
        "threshold": _parse_threshold(args.threshold),
        "bounds": parse_bounds(args.bounds) if args.bounds else None,
        "batch_size": args.batch_size,
        "attack_check": args.attack_check,
        "seed": args.seed,
        "provenance": _provenance(args),
    }


def _parse_threshold(text: str | None) -> float | None:
    if text is None:
        return THRESHOLD
    if text.strip().lower() == "argmax":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise BadInput(
            f"--threshold {text.strip()!r}: expected a softmax level in (0, 1] or 'argmax'"
        )
    return value


def _parse_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < 1 or (value >= 1 and value.is_integer())):
        raise BadInput(
            f"--size {text.strip()!r}: expected a patch side in pixels (an integer >= 1) or a "
            "share of the image area in (0, 1)"
        )
    return value


def _check_patches_fit(args: argparse.Namespace, plan: CertifyPlan, data: Dataset) -> None:
    """--size and --band against the images, named by flag, before the model loads."""
    if args.method != PATCH:
        return
    shape = tuple(data.input_shape)
    if len(shape) != 3:
        raise BadInput(f"--method {PATCH} needs images (C, H, W), got data of shape {shape}")
    h, w = shape[1:]
    for text, side in zip(args.size.split(","), plan.sides(data), strict=True):
        if side > min(h, w):
            raise BadInput(
                f"--size {text.strip()}: a {side}x{side} patch does not fit {h}x{w} images; "
                f"expected a side of 1 to {min(h, w)} pixels or an area share in (0, 1)"
            )
    if args.band is not None:
        check_ablation(args.ablation or "column", args.band, (h, w), flag="--band")


def patch_summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: clean, base and certified accuracy per patch side."""
    config, patch = report["config"], report["patch_smoothing"]
    lines = [
        f"{config.get('model')} on {config.get('data')}: patch smoothing, {patch['ablation']} "
        f"ablation, band {patch['band']} ({patch['positions']} positions), {report['n']} "
        f"points, seed {report['seed']}, {report['seconds']:.1f} s; votes: "
        f"{patch.get('vote', 'argmax')}",
        f"clean accuracy (smoothed)    {100 * report['clean_accuracy']:5.1f}%",
        f"base classifier (ablated)    {100 * report['base_accuracy']:5.1f}%",
    ]
    for entry in report["results"]:
        side = entry["size"]
        line = f"certified accuracy           {100 * entry['certified_accuracy']:5.1f}% "
        line += f"against {side}x{side} patches"
        if "empirical_robust_accuracy" in entry:
            line += f"  (patch attack: {100 * entry['empirical_robust_accuracy']:.1f}%)"
        lines.append(line)
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


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
