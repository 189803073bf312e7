"""`adversa train`: the command line of `adversa.train.loop.train`.

    adversa train --data D --arch A --defense NAME [--eps E --norm N --beta B ...]
                  [--epochs K --batch-size B --lr LR --optimizer adam|sgd --seed S]
                  [--class-balance none|sample|sqrt]
                  --out DIR [--resume | --overwrite]

Defense options are derived from the registered defenses' config fields (`defense_flags`):
one option per distinct field name (`step_size` -> --step-size), typed from its annotation,
with the field's comment as help; a `threat` field gives --eps and --norm, and --bounds sets
its box. They go to the chosen defense's config, which rejects the ones it does not have.
Under `torchrun --nproc_per_node=K -m adversa train ...` the ranks train data-parallel
(gloo on CPU, nccl on CUDA) and rank 0 alone writes and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from adversa import distributed
from adversa.class_metrics import recall_line
from adversa.cli.common import RichProgress, check_device, parse_attacks, parse_bounds, parse_eps
from adversa.errors import BadInput
from adversa.nets import ARCHS
from adversa.train import DEFENSES, TrainConfig
from adversa.train.loop import train
from adversa.train.sampling import CLASS_BALANCES

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}
_COMMENTED = re.compile(r"^[ \t]+(\w+): [^#\n]*#[ \t]*(.+)$", re.MULTILINE)
# a `threat: ThreatModel` field, on the command line (its bounds: the general --bounds)
_THREAT_FLAGS = {
    "eps": (str, "radius of the threat model trained against (one value, e.g. 0.3 or 8/255)"),
    "norm": (str, "norm of that threat model: linf, l2 or l1"),
}


class DefenseFlag(NamedTuple):
    """A command-line option for a defense config field."""

    field: str  # the config field (or flat threat field) it sets
    kind: type  # argparse type: int, float or str (eps is parsed by parse_eps)
    help: str  # the field's comment, and the defenses that take it


def _comments(cls: type) -> dict[str, str]:
    """Field name -> its trailing comment, over `cls` and its bases (nearest first)."""
    out: dict[str, str] = {}
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for name, comment in _COMMENTED.findall(source):
            out.setdefault(name, comment.strip())
    return out


@functools.cache
def defense_flags() -> dict[str, DefenseFlag]:
    """--flag -> `DefenseFlag` for every option of every registered defense: its init fields
    that are options (taking part in equality, so not a distillation teacher), typed from
    the annotation; `threat` as --eps and --norm."""
    found: dict[str, tuple[type, str, list[str]]] = {}
    for name in DEFENSES.list():
        cls = DEFENSES.factory(name)
        comments = _comments(cls)  # type: ignore[arg-type]
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if not (field.init and field.compare):
                continue
            if field.name == "threat":
                for flat, (kind, text) in _THREAT_FLAGS.items():
                    found.setdefault(flat, (kind, text, []))[2].append(name)
                continue
            annotation = str(field.type).split("|")[0].strip()
            kind = _TYPES.get(annotation, str)
            text = comments.get(field.name, field.name)
            found.setdefault(field.name, (kind, text, []))[2].append(name)
    return {
        "--" + field.replace("_", "-"): DefenseFlag(field, kind, f"{text} ({', '.join(users)})")
        for field, (kind, text, users) in sorted(found.items())
    }


def add_train_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    tr = commands.add_parser(
        "train",
        parents=[common],
        help="train a model with a defense; writes checkpoints, metrics.jsonl, model.pt, card.json",
        description="Train a classifier on a dataset with a training-time defense. Checkpoints "
        "every epoch into DIR (resume with --resume), logs DIR/metrics.jsonl, and writes the "
        "final DIR/model.pt and DIR/card.json, which `adversa evaluate --model DIR` loads.",
    )
    tr.add_argument("--data", required=True, help="built-in name, .npz, .csv or image folder")
    tr.add_argument(
        "--test-data", help="test set (default: the built-in's test split, or 20%% of a file)"
    )
    tr.add_argument("--label-column", help="the label column of a .csv dataset")
    tr.add_argument("--arch", required=True, help=f"architecture: {', '.join(ARCHS.list())}")
    tr.add_argument(
        "--bounds", help="input range LO,HI of the data (default: the dataset's, usually 0,1)"
    )
    tr.add_argument("--defense", default="none", help="see `adversa list defenses` (default none)")
    options = tr.add_argument_group("defense options (each defense takes its own)")
    for flag, option in defense_flags().items():
        options.add_argument(
            flag,
            dest=f"opt_{option.field}",
            type=option.kind,
            metavar=option.field.upper(),
            help=option.help.replace("%", "%%"),
        )
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--batch-size", type=int, default=64, help="global batch (split over ranks)")
    tr.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    tr.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    tr.add_argument("--momentum", type=float, default=0.9, help="sgd momentum")
    tr.add_argument("--weight-decay", type=float, default=0.0)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--train-size", type=int, help="train on the first N samples only")
    tr.add_argument(
        "--class-balance",
        choices=CLASS_BALANCES,
        default="none",
        help="epoch order for imbalanced data: none (a permutation), sample (every class drawn "
        "equally often) or sqrt (drawn in proportion to sqrt(class size)); any defense",
    )
    tr.add_argument(
        "--final-eval",
        default="apgd-ce,apgd-t",
        help="attacks of the final robust evaluation at the defense's eps, or 'none'",
    )
    tr.add_argument("--eval-size", type=int, default=1000, help="test points for it")
    tr.add_argument("--eval-eps", help="its eps (default: the defense's)")
    tr.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    tr.add_argument("--out", required=True, help="output directory")
    mode = tr.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in DIR")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in DIR")
    tr.set_defaults(handler=cmd_train)


def config_from_args(args: argparse.Namespace) -> Any:
    """The `TrainConfig` the flags describe (unknown defense or option: BadInput)."""
    name = DEFENSES.canonical(args.defense)
    options: dict[str, Any] = {}
    for option in defense_flags().values():
        value = getattr(args, f"opt_{option.field}")
        if value is not None:
            field = option.field
            options[field] = _single_eps(parse_eps(value)) if field == "eps" else value
    bounds = parse_bounds(args.bounds) if args.bounds else None
    if bounds is not None and "bounds" in DEFENSES.options(DEFENSES.factory(name)):
        options["bounds"] = bounds  # the defense clips to the same range
    defense = DEFENSES.get(name, **options)
    final = () if args.final_eval.strip().lower() == "none" else parse_attacks(args.final_eval)
    if not final and args.eval_eps:
        raise BadInput(
            f"--eval-eps {args.eval_eps}: applies to the final evaluation, which "
            "--final-eval none turns off"
        )
    return TrainConfig(
        data=args.data,
        arch=args.arch,
        defense=defense,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        seed=args.seed,
        train_size=args.train_size,
        test_data=args.test_data,
        label_column=args.label_column,
        final_eval=tuple(final),
        eval_size=args.eval_size,
        eval_eps=_single_eps(parse_eps(args.eval_eps)) if args.eval_eps else None,
        bounds=bounds,
        class_balance=args.class_balance,
    )


def _single_eps(values: list[float]) -> float:
    if len(values) != 1:
        raise BadInput(f"training takes one eps, got {len(values)}: {values}")
    return values[0]


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_device(args.device)
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    joined = distributed.init_from_env(device)
    main = distributed.is_main()
    try:
        with RichProgress(enabled=main) as progress:
            result = train(
                config,
                args.out,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=progress,
                device=device,
                description=f"training {config.defense_name}",
            )
    finally:
        if joined:
            distributed.shutdown()
    if main:
        print(summary(result.card, Path(args.out)))
    return 0


def summary(card: dict[str, Any], out: Path) -> str:
    """A few lines for the terminal: what was trained, how well, where it is."""
    last = card.get("final_epoch") or {}
    evaluation = card["evaluation"]
    lines = [
        f"{card['arch']} on {card['data']} with {card['defense']['name']}: "
        f"{card['hyperparameters']['epochs']} epochs, seed {card['seed']}, "
        f"{_balance(card)}"
        f"{card['train_seconds']:.1f} s",
        f"train loss {last.get('loss', float('nan')):.4f}, "
        f"clean accuracy on the test split {100 * evaluation['clean_accuracy']:.1f}%",
    ]
    if evaluation.get("class_metrics"):
        lines.append(f"per class (test): {recall_line(evaluation['class_metrics'])}")
    robust = evaluation.get("robust")
    if robust:
        lines.append(
            f"robust accuracy {100 * robust['robust_accuracy']:.1f}% at {robust['norm']} "
            f"eps={robust['eps']:g} on {robust['n']} points ({', '.join(robust['attacks_run'])})"
        )
    lines += [f"warning: {w}" for w in card.get("warnings", ())]
    lines.append(f"model: {out / 'model.pt'} (card {out / 'card.json'}, metrics.jsonl)")
    return "\n".join(lines)


def _balance(card: dict[str, Any]) -> str:
    balance = card["hyperparameters"].get("class_balance", "none")
    return "" if balance in (None, "none") else f"class balance {balance}, "
