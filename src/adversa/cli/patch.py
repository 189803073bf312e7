"""`adversa patch`: train an adversarial patch (Brown et al. 2017) with EOT and measure it on
held-out images under fresh random transformations.

adversa patch --model M --data D --size 0.1 [--shape square|circle|MASK.png]
              [--target-class T] [--transforms rotate=20,scale=0.8-1.2,brightness=0.2,noise=0.02]
              [--eval-transforms SPEC] [--position 1] [--steps N] [--n N] [--seed S] --out DIR
    writes DIR/report.json (success_rate, success_by_size, success_by_transform, baseline,
    cost, config, seed, versions) and DIR/report.html (the patch, patched examples, curves).

The work is `adversa.jobs.patch.PatchPlan`; the patch itself `adversa.physical.patch`.
"""

from __future__ import annotations

import argparse
from typing import Any

from adversa.cli.common import EXIT_OK, RichProgress, add_model_options, model_options
from adversa.errors import BadInput
from adversa.jobs.patch import SIZES, PatchPlan, patch_data
from adversa.load import load_model
from adversa.physical.patch import PatchConfig
from adversa.physical.patch_report import patch_summary, write_patch_reports
from adversa.physical.transforms import Transforms


def add_patch_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    pa = commands.add_parser(
        "patch",
        parents=[common],
        help="adversarial patch (Brown et al. 2017) trained with EOT; success on held-out "
        "images under fresh transformations; writes report.json and report.html",
    )
    add_model_options(pa)
    pa.add_argument("--data", required=True, help="images: built-in name, .npz or folder")
    pa.add_argument("--size", type=float, default=0.1, help="patch area, fraction in (0, 0.5]")
    pa.add_argument("--shape", default="square", help="square, circle or MASK.png (white=in)")
    pa.add_argument("--target-class", type=int, help="class to cause (default: untargeted)")
    pa.add_argument(
        "--transforms",
        default="rotate=20,scale=0.8-1.2,brightness=0.2,noise=0.02",
        help="scene transformations for EOT: NAME=VALUE,... with NAME in rotate, scale (LO-HI), "
        "translate, brightness, contrast, noise, perspective, blur; or none",
    )
    pa.add_argument(
        "--eval-transforms", help="scene transformations when measuring (default: --transforms)"
    )
    pa.add_argument(
        "--position",
        type=float,
        default=1.0,
        help="how far the patch's centre moves: 0 centred, 1 anywhere inside the image",
    )
    pa.add_argument(
        "--patch-rotate", type=float, default=20.0, help="the patch's own rotation range, degrees"
    )
    pa.add_argument("--patch-scale", default="0.9-1.1", help="the patch's own scale range LO-HI")
    pa.add_argument("--steps", type=int, default=300, help="optimisation steps")
    pa.add_argument("--lr", type=float, default=0.05, help="Adam's rate or the sign step, on [0,1]")
    pa.add_argument("--optimizer", default="adam", help="adam or sign (signed gradient steps)")
    pa.add_argument("--batch-size", type=int, default=64, help="images per step")
    pa.add_argument("--n", "--n-points", type=int, default=500, help="held-out images measured")
    pa.add_argument(
        "--sizes",
        default=",".join(f"{s:g}" for s in SIZES),
        help="success_by_size: patch areas re-trained (comma list)",
    )
    pa.add_argument("--size-steps", type=int, default=100, help="steps per size on that curve")
    pa.add_argument("--seed", type=int, default=0, help="seeds training, placement and draws")
    pa.add_argument("--out", required=True, help="output directory (created if missing)")
    pa.set_defaults(handler=cmd_patch)


def cmd_patch(args: argparse.Namespace) -> int:
    plan = _plan(args)
    train, test = patch_data(args.data, args.seed)
    with RichProgress() as progress:
        model = load_model(
            args.model,
            **model_options(args),
            num_classes=test.num_classes,
            bounds=test.bounds,
            progress=progress,
        )
        report = plan.run(model, train, test, progress)
    json_path, html_path = write_patch_reports(args.out, report)
    print(patch_summary(report))
    print(f"report: {html_path} (and {json_path})")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> PatchPlan:
    """The options as a plan, each checked and named by its flag, before anything loads."""
    scene = Transforms.parse(args.transforms, "--transforms")
    measured = None
    if args.eval_transforms is not None:
        measured = Transforms.parse(args.eval_transforms, "--eval-transforms")
    config = PatchConfig(
        size=args.size,
        shape=args.shape,
        target_class=args.target_class,
        transforms=scene,
        position=args.position,
        rotate=Transforms.parse(f"rotate={args.patch_rotate}", "--patch-rotate").rotate,
        scale=Transforms.parse(f"scale={args.patch_scale}", "--patch-scale").scale,
        steps=args.steps,
        lr=args.lr,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    sizes = tuple(_number("--sizes", part) for part in args.sizes.split(","))
    return PatchPlan(
        patch=config,
        eval_transforms=measured,
        n=args.n,
        sizes=sizes,
        size_steps=args.size_steps,
        provenance={k: v for k, v in vars(args).items() if k not in ("handler", "debug")},
    )


def _number(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadInput(
            f"{flag}: cannot read {text.strip()!r} as a number (e.g. 0.05,0.1)"
        ) from None
