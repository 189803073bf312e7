"""`adversa poison`, `adversa backdoor-eval` and `adversa inspect-data`.

adversa poison --data D --attack badnets --rate 0.05 --target-class 0 --out DIR
    writes DIR/poisoned.npz (x, y, poisoned_idx), DIR/trigger.npz (pattern, mask) and
    DIR/manifest.json; `adversa train --data DIR/poisoned.npz --test-data D` trains on it.
adversa backdoor-eval --model M --backdoor DIR [--data D]
    clean accuracy and attack success rate, always both (test split of the manifest's data).
adversa inspect-data --data DIR/poisoned.npz --model M --detector spectral [--rate R]
                     [--retrain [--retrain-epochs K]]
    per-sample scores and flagged indices (DIR/inspect.json with --out); precision, recall
    and ROC AUC when the .npz carries poisoned_idx. --retrain trains a fresh small network
    (the built-in recipe of `adversa.poisoning.surrogate.fit_classifier`) on the data with the
    flagged samples removed and reports clean accuracy and ASR of the given model ("before")
    and of the retrained one ("after"); the trigger and test data come from the manifest.json
    next to the .npz.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversa.checks import check_in_bounds
from adversa.cli.common import check_labels
from adversa.errors import BadInput
from adversa.io import atomic_write_bytes, atomic_write_text
from adversa.model import check_model_accepts
from adversa.safeload import load_npz


def add_poison_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    po = commands.add_parser(
        "poison", parents=[common], help="poison a training set (backdoor or label flips)"
    )
    po.add_argument("--data", required=True, help="built-in name (train split) or file")
    po.add_argument("--label-column", help="the label column of a .csv dataset")
    po.add_argument("--attack", required=True, help="badnets, blend, clean-label, label-flip")
    po.add_argument("--rate", type=float, required=True, help="share of samples, in (0, 1)")
    po.add_argument("--target-class", type=int, help="backdoor / targeted-flip target")
    po.add_argument("--source-class", type=int, help="targeted label flipping source")
    po.add_argument("--mode", help="label-flip mode: random, targeted, loss")
    po.add_argument("--patch-size", type=int, help="badnets patch side")
    po.add_argument("--alpha", type=float, help="blend weight of the trigger")
    po.add_argument("--eps", type=float, help="clean-label: radius of the PGD perturbation")
    po.add_argument("--seed", type=int, default=0)
    po.add_argument("--out", required=True)
    po.set_defaults(handler=cmd_poison)

    be = commands.add_parser(
        "backdoor-eval", parents=[common], help="clean accuracy and attack success rate"
    )
    be.add_argument("--model", required=True)
    be.add_argument("--weights")
    be.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
        "which runs code from the file",
    )
    be.add_argument("--backdoor", required=True, help="directory written by `adversa poison`")
    be.add_argument("--data", help="test data (default: the manifest's data, test split)")
    be.add_argument("--label-column", help="the label column of a .csv --data")
    be.set_defaults(handler=cmd_backdoor_eval)

    ins = commands.add_parser(
        "inspect-data", parents=[common], help="score training samples for poisoning"
    )
    ins.add_argument("--data", required=True)
    ins.add_argument("--label-column", help="the label column of a .csv dataset")
    ins.add_argument("--model", required=True)
    ins.add_argument("--weights")
    ins.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
        "which runs code from the file",
    )
    ins.add_argument("--detector", default="spectral", help="spectral, activation-clustering, loss")
    ins.add_argument("--rate", type=float, help="expected poison share (spectral, loss)")
    ins.add_argument(
        "--retrain",
        action="store_true",
        help="retrain a small network without the flagged samples; ASR and accuracy before/after",
    )
    ins.add_argument("--retrain-epochs", type=int, default=4, help="epochs of the retraining")
    ins.add_argument("--seed", type=int, default=0, help="seed of the retraining")
    ins.add_argument("--out", help="write DIR/inspect.json")
    ins.set_defaults(handler=cmd_inspect_data)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def cmd_poison(args: argparse.Namespace) -> int:
    from adversa.data import load_data
    from adversa.poisoning import POISONS

    options: dict[str, Any] = {"rate": args.rate}
    for flag in ("target_class", "source_class", "mode", "patch_size", "alpha", "eps"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    attack = POISONS.get(args.attack, **options)
    dataset = load_data(args.data, split="train", label_column=args.label_column)
    result = attack(dataset, seed=args.seed)
    out = Path(args.out)
    atomic_write_bytes(
        out / "poisoned.npz",
        _npz_bytes(
            x=result.x.numpy(), y=result.y.numpy(), poisoned_idx=result.poisoned_idx.numpy()
        ),
    )
    if result.trigger is not None:
        pattern, mask = result.trigger.pattern, result.trigger.mask
        atomic_write_bytes(
            out / "trigger.npz",
            _npz_bytes(pattern=pattern.numpy(), mask=mask.expand_as(pattern).numpy()),
        )
    manifest = {
        "data": args.data,
        "label_column": args.label_column,
        "attack": POISONS.canonical(args.attack),
        "config": result.meta,
        "seed": args.seed,
        "n": len(result.y),
        "n_poisoned": int(result.poisoned_idx.numel()),
        "target_class": result.target_class,
        "files": ["poisoned.npz", *(["trigger.npz"] if result.trigger is not None else [])],
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(
        f"{manifest['attack']}: poisoned {manifest['n_poisoned']} of {manifest['n']} samples; "
        f"wrote {out / 'poisoned.npz'} and {out / 'manifest.json'}"
    )
    return 0


def _read_manifest(directory: str, flag: str = "--backdoor") -> dict[str, Any]:
    path = Path(directory) / "manifest.json"
    if not path.exists():
        raise BadInput(f"{flag} {directory}: no manifest.json (run `adversa poison` first)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{flag} {directory}: manifest.json is not readable JSON ({exc})") from None
    keys = ("data", "attack", "files")
    missing = [k for k in keys if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise BadInput(
            f"{flag} {directory}: manifest.json is not an `adversa poison` manifest "
            f"(no {', '.join(missing)})"
        )
    return manifest


def _trigger(directory: Path, manifest: dict[str, Any], flag: str = "--backdoor") -> Any:
    from adversa.poisoning import Trigger

    if manifest.get("target_class") is None or "trigger.npz" not in manifest["files"]:
        raise BadInput(f"{flag} {directory}: {manifest['attack']} has no trigger")
    path = directory / "trigger.npz"
    arrays = load_npz(path, ("pattern", "mask"), label=f"{flag} {directory}: {path.name}")
    pattern, mask = (torch.tensor(arrays[k], dtype=torch.float32) for k in ("pattern", "mask"))
    if not (bool(torch.isfinite(pattern).all()) and bool(torch.isfinite(mask).all())):
        raise BadInput(f"{flag} {directory}: {path.name} holds non-finite values")
    return Trigger(pattern, mask)


def backdoor_metrics(model: Any, test: Any, trigger: Any, target: int) -> dict[str, float]:
    """Clean accuracy and attack success rate of `model` on the `test` Dataset, together."""
    from adversa.poisoning import attack_success_rate
    from adversa.poisoning.base import predict_labels

    sample = tuple(test.x.shape[1:])
    for name, part in (("pattern", trigger.pattern), ("mask", trigger.mask)):
        try:
            fits = torch.broadcast_shapes(tuple(part.shape), sample) == sample
        except RuntimeError:
            fits = False
        if not fits:
            raise BadInput(
                f"trigger {name} of shape {tuple(part.shape)} does not fit the data's samples "
                f"of shape {sample}"
            )

    clean = float((predict_labels(model, test.x) == test.y).float().mean())
    asr = attack_success_rate(model, test.x, test.y, trigger, target)
    return {"clean_accuracy": clean, "asr": asr}


def backdoor_summary(model: Any, test: Any, directory: str) -> dict[str, Any]:
    """`backdoor_metrics` of the backdoor written by `adversa poison` into `directory`, with
    the directory and target class (for `adversa evaluate --backdoor DIR`)."""
    manifest = _read_manifest(directory)
    trigger = _trigger(Path(directory), manifest)
    target = manifest["target_class"]
    return {
        "dir": str(directory),
        "target_class": target,
        **backdoor_metrics(model, test, trigger, target),
    }


def cmd_backdoor_eval(args: argparse.Namespace) -> int:
    from adversa.data import load_data
    from adversa.load import load_model

    manifest = _read_manifest(args.backdoor)
    trigger = _trigger(Path(args.backdoor), manifest)
    label_column = args.label_column if args.data else manifest.get("label_column")
    test = load_data(args.data or manifest["data"], split="test", label_column=label_column)
    model = load_model(args.model, weights=args.weights, trust_model_file=args.trust_model_file)
    data = f"--data {args.data or manifest['data']}"
    logits = check_model_accepts(model, test.x, data=data)
    check_labels(test.y, logits.shape[1], data)
    check_in_bounds(test.x, model.bounds, what=data, hint="scale it to the model's input range")
    m = backdoor_metrics(model, test, trigger, manifest["target_class"])
    print(
        f"clean accuracy {100 * m['clean_accuracy']:5.1f}%   "
        f"attack success rate {100 * m['asr']:5.1f}%"
    )
    return 0


def cmd_inspect_data(args: argparse.Namespace) -> int:
    from adversa.data import load_data
    from adversa.load import load_model
    from adversa.poisoning import get_detector

    if args.retrain_epochs < 1:
        raise BadInput(f"--retrain-epochs must be >= 1, got {args.retrain_epochs}")
    dataset = load_data(args.data, split="train", label_column=args.label_column)
    options = {"rate": args.rate} if args.rate is not None else {}
    detector = get_detector(args.detector, **options)
    model = load_model(args.model, weights=args.weights, trust_model_file=args.trust_model_file)
    logits = check_model_accepts(model, dataset.x, data=f"--data {args.data}")
    check_labels(dataset.y, logits.shape[1], f"--data {args.data}")
    detection = detector(model, dataset.x, dataset.y)
    report: dict[str, Any] = {
        "detector": args.detector,
        "scores": detection.scores.tolist(),
        "flagged": detection.flagged_idx.tolist(),
    }
    path = Path(args.data)
    if path.suffix == ".npz" and path.exists():
        arrays = load_npz(path, (), optional=("poisoned_idx",), label=f"--data {path}")
        if "poisoned_idx" in arrays:
            poisoned = _poisoned_idx(arrays["poisoned_idx"], len(dataset), path)
            report["metrics"] = detection.metrics(poisoned)
    print(f"{args.detector}: flagged {len(report['flagged'])} of {len(dataset)} samples")
    if "metrics" in report:
        m = report["metrics"]
        print(f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  ROC AUC {m['auc']:.3f}")
    if args.retrain:
        report["retrain"] = _retrain(args, path, dataset, model, detection.flagged)
        before, after = report["retrain"]["before"], report["retrain"]["after"]
        for label, m in (("before", before), ("after", after)):
            print(
                f"{label:<6} clean accuracy {100 * m['clean_accuracy']:5.1f}%   "
                f"attack success rate {100 * m['asr']:5.1f}%"
            )
    if args.out:
        atomic_write_text(Path(args.out) / "inspect.json", json.dumps(report) + "\n")
    return 0


def _poisoned_idx(values: np.ndarray, n: int, path: Path) -> torch.Tensor:
    """The `poisoned_idx` array of a poisoned set, checked: integers in [0, n), one axis."""
    if values.dtype.kind not in "iu" or values.ndim != 1:
        raise BadInput(
            f"--data {path}: poisoned_idx must be a 1-D integer array, got {values.dtype} of "
            f"shape {values.shape}"
        )
    if values.size and not (int(values.min()) >= 0 and int(values.max()) < n):
        raise BadInput(
            f"--data {path}: poisoned_idx must lie in [0, {n}), got "
            f"[{int(values.min())}, {int(values.max())}]"
        )
    return torch.tensor(values, dtype=torch.long)


def _retrain(
    args: argparse.Namespace, path: Path, dataset: Any, model: Any, flagged: torch.Tensor
) -> dict[str, Any]:
    """Retrain on the unflagged samples; the backdoor's metrics before and after."""
    from adversa.data import load_data
    from adversa.poisoning.surrogate import fit_classifier

    manifest_path = path.parent / "manifest.json"
    if path.suffix != ".npz" or not manifest_path.exists():
        raise BadInput(
            f"--retrain needs --data DIR/poisoned.npz with DIR/manifest.json (from `adversa "
            f"poison`), got {args.data}"
        )
    manifest = _read_manifest(str(path.parent), flag="--data")
    trigger = _trigger(path.parent, manifest, flag="--data")
    test = load_data(manifest["data"], split="test", label_column=manifest.get("label_column"))
    keep = ~flagged
    net = fit_classifier(
        dataset.x[keep],
        dataset.y[keep],
        dataset.num_classes,
        epochs=args.retrain_epochs,
        seed=args.seed,
    )
    target = manifest["target_class"]
    return {
        "recipe": {"epochs": args.retrain_epochs, "seed": args.seed, "n_train": int(keep.sum())},
        "before": backdoor_metrics(model, test, trigger, target),
        "after": backdoor_metrics(net, test, trigger, target),
    }
