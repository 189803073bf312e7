"""The command line of the input-side defenses.

    adversa train-reformer --data D --out DIR [--epochs K --batch-size B --lr LR --noise S
                           --width W --no-pool --n N --seed S --device cpu]
    adversa evaluate ... --defense SPEC [--detector SPEC --detector-fpr 0.05 --eot K]

`train-reformer` trains MagNet's autoencoder on the clean training data (a built-in's train
split, or the whole file) and writes DIR/reformer.pt and DIR/reformer.json, which
`--defense magnet:dir=DIR` and `--detector magnet:dir=DIR` load.

With `--defense` (see `adversa.input_defenses.spec`), `evaluate` runs the battery on the defended
model twice, plainly and adaptively (BPDA, EOT over `--eot` draws, default 20), and reports
both; with `--detector`, the detector is fitted and calibrated on clean data disjoint from the
evaluated points (a built-in's train split, else the file's points after the first --n), and
evaluated against the plain attacks and an attack on classifier and detector together.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from adversa.data import list_datasets, load_data
from adversa.errors import BadInput
from adversa.evaluation.adaptive_eval import NO_DEFENSE


def add_reformer_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    from adversa.input_defenses.reformer import ReformerConfig

    default = ReformerConfig()
    tr = commands.add_parser(
        "train-reformer",
        parents=[common],
        help="train MagNet's autoencoder (reformer and detector); writes DIR/reformer.pt",
        description="Train MagNet's denoising autoencoder (Meng & Chen 2017) on clean training "
        "data. Use it with `adversa evaluate --defense magnet:dir=DIR` (reformer) or "
        "`--detector magnet:dir=DIR` (reconstruction-error detector).",
    )
    tr.add_argument("--data", required=True, help="built-in name (train split), .npz or folder")
    tr.add_argument("--out", required=True, help="output directory (created if missing)")
    tr.add_argument("--epochs", type=int, default=default.epochs)
    tr.add_argument("--batch-size", type=int, default=default.batch_size)
    tr.add_argument("--lr", type=float, default=default.lr)
    tr.add_argument("--noise", type=float, default=default.noise, help="training noise std")
    tr.add_argument("--width", type=int, default=default.width, help="hidden channels")
    tr.add_argument("--no-pool", action="store_true", help="MagNet's 'Detector II' (no pooling)")
    tr.add_argument("--n", "--n-points", type=int, help="train on the first N points only")
    tr.add_argument("--seed", type=int, default=default.seed)
    tr.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    tr.set_defaults(handler=cmd_train_reformer)


def add_evaluate_options(ev: argparse.ArgumentParser) -> None:
    """The `evaluate` options of the input-side defenses."""
    ev.add_argument(
        "--defense",
        metavar="SPEC",
        help="evaluate the model behind an input defense, naively and adaptively: squeeze:"
        "bits=4, median:size=2, smooth:sigma=1, jpeg:quality=75, tvm:weight=0.05, resize-pad:"
        "low=0.8, noise:sigma=0.1, dropout:p=0.1, magnet:dir=DIR; chain with +. The adaptive "
        "run uses BPDA and EOT over --eot draws (default 20)",
    )
    ev.add_argument(
        "--detector",
        metavar="SPEC",
        help="also evaluate a detector of adversarial inputs: squeeze, magnet:dir=DIR, "
        "mahalanobis, lid:k=20 (its adaptive attack takes --steps, default 100)",
    )
    ev.add_argument(
        "--detector-fpr",
        type=float,
        help="false-positive rate on clean validation data the detector's threshold is set at "
        "(default 0.05; with --detector only)",
    )


def cmd_train_reformer(args: argparse.Namespace) -> int:
    from adversa.cli.common import check_device
    from adversa.input_defenses.reformer import ReformerConfig, save_reformer, train_reformer

    check_device(args.device)
    config = ReformerConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        noise=args.noise,
        width=args.width,
        pool=not args.no_pool,
        seed=args.seed,
    )
    split = "train" if args.data.strip().lower() in list_datasets() else "all"
    data = load_data(args.data, split=split)
    if args.n is not None:
        if args.n < 1:
            raise BadInput(f"--n (--n-points) must be >= 1, got {args.n}")
        data = data.take(args.n)
    if data.kind != "image":
        raise BadInput(f"{args.data}: the reformer needs image data, got {data.kind} data")
    x = data.x.to(args.device)
    net, card = train_reformer(x, config)
    card["data"] = args.data
    out = save_reformer(net, card, args.out)
    print(
        f"reformer trained on {len(data)} images of {args.data} in {card['seconds']:.1f} s: "
        f"clean reconstruction MSE {card['clean_mse']:.5f}\nsaved: {out / 'reformer.pt'} "
        f"(use --defense magnet:dir={out} or --detector magnet:dir={out})"
    )
    return 0


def defense_summary(defense: Mapping[str, Any]) -> str:
    """Terminal lines from the report's `defense` entry: naive and adaptive robust accuracy,
    and the detector's numbers; no defense line when only a detector was evaluated."""
    lines = []
    if defense["spec"] != NO_DEFENSE:
        lines.append(
            f"defense {defense['spec']}: robust accuracy {defense['naive_robust_accuracy']:.1%} "
            f"naive, {defense['adaptive_robust_accuracy']:.1%} adaptive (the headline above)"
        )
    det = defense.get("detector")
    if det is not None:
        metrics = det.get("metrics")
        auc = f"ROC AUC {metrics['auc']:.3f}, " if metrics is not None else ""
        lines.append(
            f"detector {det['spec']}: {auc}robust accuracy {det['naive_robust_accuracy']:.1%} "
            f"naive, {det['adaptive_robust_accuracy']:.1%} against the detector-aware attack"
        )
    return "\n".join(lines)
