"""`adversa evaluate`: attack a model with a battery of attacks at one or more eps and write
report.json and report.html (optionally beside input-side defenses, certification and a
backdoor's attack success rate).

The command parses its options into an `adversa.jobs.evaluate.EvaluationPlan`, loads the data
and the model(s), runs the plan and prints a summary. Under torchrun it joins the process group
here (rank 0 loads a model first, so a zoo model trains once); every rank runs the plan, and
rank 0 writes the reports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adversa import distributed
from adversa.attacks import ATTACKS
from adversa.class_metrics import evasion_line, recall_line
from adversa.cli.common import (
    AUTO,
    EXIT_OK,
    TRUST_HELP,
    RichProgress,
    add_model_options,
    add_speed_options,
    check_device,
    check_positive,
    parse_attacks,
    parse_batch_size,
    parse_bounds,
    parse_eps,
)
from adversa.cli.input_defenses import add_evaluate_options, defense_summary
from adversa.data import load_data
from adversa.data.files import check_labelled_folder
from adversa.errors import BadInput
from adversa.evaluation.report import REPORT_HTML, REPORT_JSON, Report
from adversa.jobs.defended import detector_pool
from adversa.jobs.evaluate import EvaluationPlan
from adversa.load import load_model
from adversa.model.memory import auto_batch_size
from adversa.tabular.evasion import class_rows, resolve_class
from adversa.threat import NORMS


def add_evaluate_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    ev = commands.add_parser(
        "evaluate",
        parents=[common],
        help="robust accuracy under a cascade of attacks; writes report.json and report.html",
        description="Evaluate a model's robustness: clean accuracy, then a cascade of attacks "
        "(each only on the points still robust) and the per-sample worst case, with sanity "
        "checks for gradient masking. Writes DIR/report.json and DIR/report.html.",
    )
    _add_model_options(ev)
    _add_threat_options(ev)
    _add_attack_options(ev)
    add_evaluate_options(ev)
    _add_extra_options(ev)
    ev.set_defaults(handler=cmd_evaluate)


def _add_model_options(ev: argparse.ArgumentParser) -> None:
    add_model_options(
        ev,
        model_help="zoo name, TorchScript file, .pt2 archive (with --trust-model-file), "
        "path/file.py:factory (with --weights), or sklearn:path.joblib (with --trust-model-file)",
        weights_help="state_dict (.pt, loaded weights-only) or .safetensors for a file.py:factory "
        "model",
        trust_help=f"{TRUST_HELP} (--model and --surrogate)",
    )
    add_speed_options(ev)
    ev.add_argument(
        "--data",
        required=True,
        help="built-in name (mnist, digits, "
        "breast-cancer), .npz with x and y, .csv (with --label-column), or an "
        "image folder root/<class>/*.png",
    )
    ev.add_argument("--label-column", help="the label column of a .csv dataset")
    ev.add_argument(
        "--n",
        "--n-points",  # the spelling torchrun cannot take for an abbreviation of its own
        type=int,
        help="evaluate the first N test points (deterministic: "
        "the dataset's own order; default all)",
    )
    ev.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default cpu)")
    ev.add_argument("--out", required=True, help="output directory (created if missing)")


def _add_threat_options(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--bounds", help="input range LO,HI (default: the dataset's, usually 0,1)")
    ev.add_argument("--norm", required=True, choices=NORMS, help="the threat model's norm")
    ev.add_argument(
        "--eps",
        required=True,
        help="radius, or a comma-separated sweep; "
        "fractions allowed (8/255). The first value is the headline.",
    )
    ev.add_argument(
        "--constraints",
        metavar="SPEC",
        help="tabular feature constraints every attack must respect: 'data' (the data set's "
        "own, e.g. fraud) or a JSON file with immutable/integer/increase_only/categorical/"
        "lower/upper/weights, features by name, values in original units",
    )
    ev.add_argument(
        "--mask",
        metavar="NAME|FILE.png",
        help="perturb only inside a mask: eyeglasses, stickers, square, frame, or a PNG "
        "(white = inside, resized to the images); with linf, eps 1 (the box width) is "
        "unbounded inside the mask",
    )
    ev.add_argument(
        "--transforms",
        metavar="SPEC",
        help="the model sees each input through a fresh random transformation, e.g. "
        "rotate=15,scale=0.9-1.1,brightness=0.1 (with --eot K: attack the mean of K draws)",
    )
    ev.add_argument(
        "--evade-class",
        metavar="CLASS",
        help="the class that must not get through (index or name, e.g. fraud): attack only "
        "its rows and report how many of those the model catches evade (fraud data reports "
        "its frauds by default, over all rows)",
    )


def _add_attack_options(ev: argparse.ArgumentParser) -> None:
    ev.add_argument(
        "--attacks",
        help="comma-separated registry names in cascade order "
        "(default: fgsm,pgd, plus deepfool for linf/l2 and cw for l2 when "
        "available); see `adversa list attacks`",
    )
    ev.add_argument(
        "--batch-size",
        type=parse_batch_size,
        default=256,
        help="points per attack batch, or auto: as many as a quarter of the free memory holds "
        "(measured on the model; recorded in report.json)",
    )
    ev.add_argument("--seed", type=int, default=0, help="seeds every attack (default 0)")
    ev.add_argument("--steps", type=int, help="override the steps of every attack that has them")
    ev.add_argument(
        "--eot",
        type=int,
        metavar="K",
        help="attack the expectation over K random draws of a randomised model (EOT)",
    )
    ev.add_argument(
        "--bpda",
        choices=("identity",),
        help="backward pass through the model's non-differentiable submodules (those marked "
        "non_differentiable=True) as the identity (BPDA)",
    )
    ev.add_argument("--surrogate", help="model the 'transfer' attack crafts its examples on")
    ev.add_argument("--surrogate-weights", help="weights for a file.py:factory --surrogate")
    ev.add_argument(
        "--check-masking",
        action="store_true",
        help="also run the costlier gradient-masking checks: convergence (2x steps, one more "
        "restart) and an eps sweep up to the full input range",
    )


def _add_extra_options(ev: argparse.ArgumentParser) -> None:
    ev.add_argument(
        "--certify",
        choices=("ibp", "crown"),
        help="also verify each point with IBP or CROWN bounds and check certified <= robust",
    )
    ev.add_argument(
        "--backdoor",
        metavar="DIR",
        help="a directory from `adversa poison`: also report the attack success rate of its "
        "trigger (in report.json under config.backdoor)",
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    names = _check_options(args)
    data = load_data(args.data, split="test", label_column=args.label_column).take(args.n)
    check_labelled_folder(data)
    if args.evade_class is not None:
        class_rows(data, resolve_class(data, args.evade_class, "--evade-class"), "--evade-class")
    plan = _plan(args, names, data)
    plan.check(data)  # a bad eps or bounds fails before any model loads (or trains)
    with _process_group(args.device) as main_rank, RichProgress(enabled=main_rank) as progress:
        bounds = plan.threat(data).bounds
        model = _load_on_all_ranks(args.model, args.weights, args, progress, bounds)
        if args.batch_size == AUTO:
            plan = dataclasses.replace(plan, batch_size=auto_batch_size(model, data.x))
        if args.surrogate:
            surrogate = _load_on_all_ranks(
                args.surrogate, args.surrogate_weights, args, progress, bounds
            )
            plan = dataclasses.replace(plan, surrogate=surrogate)
        report = plan.run(model, data, progress, out=args.out if main_rank else None)
    if main_rank:
        print(summary(report, Path(args.out), Path(args.out) / REPORT_HTML))
        if report.defense is not None:
            print(defense_summary(report.defense))
    return EXIT_OK


def _check_options(args: argparse.Namespace) -> list[str]:
    """The flag-level checks, named by flag, before any loading; the attack names."""
    names = parse_attacks(args.attacks) if args.attacks else []
    names = [ATTACKS.canonical(name) for name in names]  # unknown names fail before any work
    if args.batch_size != AUTO:
        check_positive("--batch-size", args.batch_size)
    for flag, value in (("--n", args.n), ("--steps", args.steps), ("--eot", args.eot)):
        if value is not None:
            check_positive(flag, value)
    check_device(args.device)
    if args.surrogate_weights and not args.surrogate:
        raise BadInput(f"--surrogate-weights {args.surrogate_weights}: needs --surrogate MODEL")
    if args.surrogate and "transfer" not in names:
        shown = ",".join(names) if names else "the defaults"
        raise BadInput(
            f"--surrogate {args.surrogate}: only the 'transfer' attack uses a surrogate; add "
            f"transfer to --attacks (got {shown})"
        )
    if "transfer" in names and not args.surrogate:
        raise BadInput("attack 'transfer' needs --surrogate MODEL")
    if args.bpda and args.defense:
        raise BadInput("--bpda is implied by --defense: the adaptive run applies it")
    if args.detector_fpr is not None and not args.detector:
        raise BadInput(f"--detector-fpr {args.detector_fpr:g}: applies with --detector only")
    if args.detector_fpr is not None and not 0 < args.detector_fpr < 1:
        raise BadInput(f"--detector-fpr must be in (0, 1), got {args.detector_fpr}")
    return names


def _plan(args: argparse.Namespace, names: list[str], data: Any) -> EvaluationPlan:
    """The options as a plan (without the surrogate, loaded later); what `provenance`
    records is where the model and data came from."""
    provenance = {
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "label_column": args.label_column,
        "device": args.device,
        "autocast": args.autocast,
        "channels_last": args.channels_last,
        "surrogate": args.surrogate,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    pool = None
    if args.detector:
        pool = detector_pool(args.data, args.label_column, len(data))
    return EvaluationPlan(
        norm=args.norm,
        eps=tuple(parse_eps(args.eps)),
        bounds=parse_bounds(args.bounds) if args.bounds else None,
        attacks=tuple(names),
        steps=args.steps,
        seed=args.seed,
        batch_size=256 if args.batch_size == AUTO else args.batch_size,
        check_masking=args.check_masking,
        eot=args.eot,
        bpda=args.bpda,
        defense=args.defense,
        detector=args.detector,
        detector_fpr=0.05 if args.detector_fpr is None else args.detector_fpr,
        detector_data=pool,
        certify=args.certify,
        constraints=args.constraints,
        mask=args.mask,
        transforms=args.transforms,
        backdoor=args.backdoor,
        evade_class=args.evade_class,
        provenance=provenance,
    )


@contextlib.contextmanager
def _process_group(device: str) -> Iterator[bool]:
    """Join torchrun's process group if launched by it; yields whether this is rank 0."""
    joined = distributed.init_from_env(device)
    main_rank = distributed.is_main()  # the group is gone once shut down: ask now
    try:
        yield main_rank
    finally:
        if joined:
            distributed.shutdown()


def _load_on_all_ranks(
    spec: str,
    weights: str | None,
    args: argparse.Namespace,
    progress: Any,
    bounds: tuple[float, float],
) -> Any:
    """Load a model; under torchrun rank 0 goes first, so a zoo model trains once."""
    if not distributed.is_main():
        distributed.barrier()
    model = load_model(
        spec,
        weights=weights,
        device=args.device,
        progress=progress,
        bounds=bounds,
        trust_model_file=args.trust_model_file,
        normalize=args.normalize,
        autocast=args.autocast,
        channels_last=args.channels_last,
    )
    if distributed.is_main():
        distributed.barrier()
    return model


def summary(report: Report, out: Path, html_path: Path) -> str:
    """A few lines for the terminal: accuracies per eps, warnings, where the report is."""
    config = report.config
    points = f"n={report.n}"
    if config.get("evade_class") is not None and report.evasion is not None:
        points += f" (the {report.evasion['name']} rows only, of {config.get('n_all')})"
    lines = [
        f"{config.get('model')} on {config.get('data')}: {points}, {config.get('norm')}, "
        f"seed {report.seed}, {report.seconds:.1f} s",
        f"clean accuracy   {100 * report.clean_accuracy:5.1f}%",
    ]
    for entry in report.results:
        steps = ", ".join(
            f"{a['name']} {100 * a['robust_accuracy']:.1f}%" for a in entry["attacks"]
        )
        lines.append(
            f"robust accuracy  {100 * entry['robust_accuracy']:5.1f}% at eps={entry['eps']:g}"
            f"  (after {steps})"
        )
    if report.evasion is not None:
        lines.append(evasion_line(report.evasion))
    if report.class_metrics:
        lines.append(f"per class: {recall_line(report.class_metrics)}")
    for entry in report.certified:
        lines.append(
            f"certified ({entry['method']}) {100 * entry['certified_accuracy']:5.1f}% at "
            f"eps={entry['eps']:g}"
        )
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    mask = config.get("mask")
    if mask is not None:
        lines.append(f"mask: {mask['spec']}, {mask['pixels']} pixels ({mask['area_share']:.1%})")
    lines.append(f"report: {html_path} (and {out / REPORT_JSON})")
    backdoor = config.get("backdoor")
    if backdoor is not None:
        lines.append(
            f"backdoor: clean accuracy {backdoor['clean_accuracy']:.1%}   ASR {backdoor['asr']:.1%}"
        )
    return "\n".join(lines)
