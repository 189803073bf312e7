"""`adversa privacy` (membership inference) and `adversa invert` (model inversion).

adversa privacy --model M [--data D] --attack lira|threshold|shadow|boundary|all
                [--shadows 16] [--reference-arch same|mlp] [--n 500]
                [--members F --nonmembers F] [--shadow-data F] --out DIR
    writes DIR/privacy.json and DIR/privacy.html: AUC, balanced accuracy, TPR at 1% and 0.1%
    FPR and the log-log ROC of each attack, beside the global loss-threshold baseline.
    Shadow and reference models take the target's architecture and recipe when it is known
    (a zoo name or an `adversa train` directory: `--reference-arch same`, the default there),
    else they are MLPs (`mlp`).
adversa invert --model M [--data D] [--classes 0,1] [--init mean] [--restarts 8]
               [--combine mean|best] [--update l2|plain] [--tv W] [--tv-beta 1|2] --out DIR
    writes DIR/inversion.json and DIR/inversion.html: MIFace reconstructions per class beside
    the real class mean, how an independently trained model classifies them and which class
    mean they correlate with most.

Who is a member, and which models train the shadows: `adversa.jobs.privacy`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from typing import Any

from adversa.cli.common import (
    EXIT_OK,
    TRUST_HELP,
    RichProgress,
    add_model_options,
    check_positive,
    model_options,
)
from adversa.errors import BadInput
from adversa.jobs.inversion import InversionPlan
from adversa.jobs.privacy import MembershipPlan, candidates, target_recipe, training_splits
from adversa.load import load_model
from adversa.privacy.metrics import check_fpr
from adversa.privacy.report import (
    attack_warnings,
    inversion_summary,
    tpr_text,
    write_membership_reports,
)


def add_privacy_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    pr = commands.add_parser(
        "privacy",
        parents=[common],
        help="membership inference (threshold, shadow models, LiRA, boundary distance); "
        "writes privacy.json and privacy.html",
        description="Membership inference against a model: the global loss threshold (Yeom "
        "et al. 2018, always run as the baseline), shadow models (Shokri et al. 2017), "
        "LiRA online/offline (Carlini et al. 2022) and label-only boundary distance "
        "(Choquette-Choo et al. 2021). Members default to the model's training split, "
        "non-members to the test split.",
    )
    _add_model_and_data_options(pr, "dataset (default: the zoo model's or training card's)")
    _add_membership_options(pr)
    pr.add_argument("--fpr", default="0.01,0.001", help="FPR targets for TPR, each in (0, 1)")
    pr.add_argument("--seed", type=int, default=0, help="seeds every random choice")
    pr.add_argument("--out", required=True, help="output directory (created if missing)")
    pr.set_defaults(handler=cmd_privacy)
    _add_invert_parser(commands, common)


def _add_model_and_data_options(
    parser: argparse.ArgumentParser, data_help: str, also: str = ""
) -> None:
    """The model options (--trust-model-file's help adds `also`), --data (helped by
    `data_help`) and --label-column."""
    add_model_options(parser, trust_help=TRUST_HELP + also)
    parser.add_argument("--data", help=data_help)
    parser.add_argument("--label-column", help="the label column of a .csv dataset")


def _add_membership_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attack", default="lira", help="lira, threshold, shadow, boundary, all (comma list)"
    )
    parser.add_argument("--shadows", type=int, default=16, help="shadow / reference models")
    parser.add_argument(
        "--n", "--n-points", type=int, default=500, help="members and non-members, each"
    )
    parser.add_argument("--members", help="known members (file or built-in name, loaded whole)")
    parser.add_argument("--nonmembers", help="known non-members (with --members)")
    parser.add_argument(
        "--shadow-data", help="shadow attack pool (default: the rest of the splits)"
    )
    parser.add_argument(
        "--reference-arch",
        choices=("same", "mlp"),
        help="shadow / reference models: the target's architecture and recipe (default when "
        "the model is a zoo name or a training directory) or MLPs (default otherwise)",
    )
    parser.add_argument(
        "--reference-epochs", type=int, help="same: epochs per model (default: the recipe's)"
    )
    parser.add_argument("--shadow-steps", type=int, default=300, help="mlp: training steps")
    parser.add_argument("--shadow-hidden", type=int, default=128, help="mlp: hidden width")
    parser.add_argument(
        "--boundary-attack",
        default="auto",
        choices=("auto", "hsj", "deepfool", "cw", "fab"),
        help="boundary: the min-norm attack (auto: deepfool with gradients, else hsj)",
    )
    parser.add_argument(
        "--boundary-queries", type=int, default=2000, help="boundary, hsj: queries per point"
    )
    parser.add_argument("--fixed-variance", action="store_true", help="LiRA: pooled variance")


def _add_invert_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    inv = commands.add_parser(
        "invert",
        parents=[common],
        help="model inversion (MIFace); writes inversion.json and inversion.html",
        description="MIFace model inversion (Fredrikson et al. 2015): reconstruct what each "
        "class looks like to the model by gradient descent on the input. Needs gradient "
        "access.",
    )
    _add_model_and_data_options(
        inv, "dataset for the input shape, class means, mean image", " (--model and --independent)"
    )
    inv.add_argument("--classes", help="comma-separated classes (default: all)")
    inv.add_argument(
        "--init", default="mean", help="zeros, mean (the data's mean image), random (list)"
    )
    inv.add_argument("--restarts", type=int, default=8, help="starts per init (noisy copies)")
    inv.add_argument(
        "--combine",
        default="mean",
        choices=("mean", "best"),
        help="mean: average the restarts' results (default); best: keep the most confident",
    )
    inv.add_argument(
        "--noise", type=float, default=0.1, help="restarts' noise std, as a share of the range"
    )
    inv.add_argument(
        "--update",
        default="l2",
        choices=("l2", "plain"),
        help="l2: normalised gradient steps (default; Santurkar et al. 2019); plain: the paper's",
    )
    inv.add_argument("--tv", type=float, default=0.0, help="total-variation prior weight")
    inv.add_argument("--tv-beta", type=float, default=1.0, help="TV exponent (2: smoothness)")
    inv.add_argument("--steps", type=int, default=200, help="gradient steps")
    inv.add_argument(
        "--step-size",
        type=float,
        help="l2: RMS change per value as a share of the range (default 0.02); plain: the "
        "paper's lambda (default 0.1)",
    )
    inv.add_argument(
        "--gamma", type=float, default=1.0, help="stop at this confidence (1: run every step)"
    )
    inv.add_argument(
        "--objective",
        default="log",
        choices=("confidence", "log"),
        help="1 - p_y (the paper's cost) or -log p_y (default; does not vanish far from y)",
    )
    inv.add_argument("--independent", help="independently trained model (default: train one)")
    inv.add_argument("--seed", type=int, default=0, help="seeds the random init")
    inv.add_argument("--out", required=True, help="output directory (created if missing)")
    inv.set_defaults(handler=cmd_invert)


def parse_fprs(text: str) -> tuple[float, ...]:
    """--fpr: comma-separated false-positive rates, each in (0, 1)."""
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BadInput(f"--fpr: cannot read {text!r} as comma-separated numbers") from None
    if not values:
        raise BadInput("--fpr needs at least one value")
    return tuple(check_fpr(v, "--fpr target") for v in values)


def cmd_privacy(args: argparse.Namespace) -> int:
    for flag in ("n", "shadows", "shadow_steps", "shadow_hidden", "boundary_queries"):
        check_positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
    plan = MembershipPlan(
        attacks=args.attack,
        shadows=args.shadows,
        reference_arch=args.reference_arch,
        reference_epochs=args.reference_epochs,
        shadow_steps=args.shadow_steps,
        shadow_hidden=args.shadow_hidden,
        boundary_attack=args.boundary_attack,
        boundary_queries=args.boundary_queries,
        fixed_variance=args.fixed_variance,
        fprs=parse_fprs(args.fpr),
        seed=args.seed,
        provenance={"model": args.model, "weights": args.weights, "data": args.data},
    )
    recipe = target_recipe(args.model, args.data)
    plan.reference_training(recipe)  # a reference model it cannot build fails before loading
    parts = candidates(
        args.model,
        args.data,
        args.label_column,
        n=args.n,
        members=args.members,
        nonmembers=args.nonmembers,
        shadow_data=args.shadow_data,
    )
    with RichProgress() as progress:
        model = load_model(
            args.model,
            progress=progress,
            num_classes=parts.dataset.num_classes,
            bounds=tuple(parts.dataset.bounds),
            **model_options(args),
        )
        report = plan.run(model, parts, recipe, progress)
    _, html_path = write_membership_reports(args.out, report)
    print(membership_summary(report, plan.fprs))
    print(f"report: {html_path}")
    return EXIT_OK


def membership_summary(report: dict[str, Any], fprs: tuple[float, ...]) -> str:
    """Per attack AUC, balanced accuracy and TPR at each FPR (n/a where the non-members
    cannot resolve it), the smallest FPR they resolve, and the warnings."""
    lines = []
    for a in report["attacks"]:
        tprs = "  ".join(f"TPR@{100 * f:g}%FPR {tpr_text(a, f):>6}" for f in fprs)
        lines.append(
            f"{a['name']:<16} AUC {a['auc']:.3f}  balanced acc "
            f"{100 * a['balanced_accuracy']:.1f}%  {tprs}"
        )
    first = report["attacks"][0]
    lines.append(
        f"{first['n_nonmembers']:,} non-members: the smallest FPR they resolve is "
        f"1/{first['n_nonmembers']:,} = {100 * first['min_fpr']:.3g}%"
    )
    warnings = [*(report.get("warnings") or []), *attack_warnings(report)]
    return "\n".join([*lines, *(f"warning: {w}" for w in warnings)])


def _parse_classes(text: str | None, num_classes: int) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BadInput(f"--classes: cannot read {text!r} as comma-separated integers") from None
    bad = [v for v in values if not 0 <= v < num_classes]
    if not values or bad:
        raise BadInput(f"--classes must lie in [0, {num_classes}), got {text!r}")
    return tuple(values)


def _check_invert_numbers(args: argparse.Namespace) -> None:
    """Each numeric `invert` option in its range, else `BadInput` naming the flag."""
    check_positive("--steps", args.steps)
    check_positive("--restarts", args.restarts)
    ranges = {  # flag: (value, lowest, lowest allowed, highest, what is expected)
        "--tv": (args.tv, 0.0, True, math.inf, ">= 0 and finite"),
        "--tv-beta": (args.tv_beta, 1.0, True, math.inf, ">= 1 and finite"),
        "--noise": (args.noise, 0.0, True, math.inf, ">= 0 and finite"),
        "--step-size": (args.step_size, 0.0, False, math.inf, "> 0 and finite"),
        "--gamma": (args.gamma, 0.0, False, 1.0, "in (0, 1]"),
    }
    for flag, (value, lo, closed, hi, expected) in ranges.items():
        if value is None:
            continue
        above = value >= lo if closed else value > lo
        if not (math.isfinite(value) and above and value <= hi):
            raise BadInput(f"{flag} must be {expected}, got {value}")


def cmd_invert(args: argparse.Namespace) -> int:
    _check_invert_numbers(args)
    plan = InversionPlan(
        inits=tuple(p.strip() for p in args.init.split(",") if p.strip()),
        restarts=args.restarts,
        combine=args.combine,
        noise=args.noise,
        update=args.update,
        tv=args.tv,
        tv_beta=args.tv_beta,
        steps=args.steps,
        step_size=args.step_size,
        gamma=args.gamma,
        objective=args.objective,
        seed=args.seed,
        provenance={"model": args.model, "weights": args.weights, "data": args.data},
    )
    train, _, source = training_splits(args.model, args.data, args.label_column)
    plan = dataclasses.replace(plan, classes=_parse_classes(args.classes, train.num_classes))
    with RichProgress() as progress:
        load = functools.partial(
            load_model,
            progress=progress,
            num_classes=train.num_classes,
            bounds=tuple(train.bounds),
        )
        model = load(args.model, **model_options(args))
        trusted = args.trust_model_file  # --independent: no weights, no normalisation
        independent = load(args.independent, trust_model_file=trusted) if args.independent else None
        run = plan.run(
            model, train, independent, progress, source=source, independent_name=args.independent
        )
    _, html_path = run.write(args.out)
    print(inversion_summary(run.report))
    print(f"report: {html_path}")
    return EXIT_OK
