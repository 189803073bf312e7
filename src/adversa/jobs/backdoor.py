"""A backdoor written by `adversa poison`, read back: its manifest, its trigger, and the clean
accuracy and attack success rate (ASR) of a model on test data stamped with that trigger.
Used by `adversa evaluate --backdoor DIR` (`EvaluationPlan.backdoor`) and `adversa
backdoor-eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from adversa.data.dataset import Dataset
from adversa.errors import BadInput
from adversa.model import Model
from adversa.poisoning import Trigger, attack_success_rate
from adversa.poisoning.base import predict_labels
from adversa.poisoning.html import triggered_examples
from adversa.safeload import load_npz


def read_manifest(directory: str | Path, flag: str = "--backdoor") -> dict[str, Any]:
    """The `manifest.json` of an `adversa poison` output directory."""
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


def read_trigger(directory: Path, manifest: dict[str, Any], flag: str = "--backdoor") -> Trigger:
    """The trigger (pattern and mask) the poison of `manifest` wrote into `directory`."""
    if manifest.get("target_class") is None or "trigger.npz" not in manifest["files"]:
        raise BadInput(f"{flag} {directory}: {manifest['attack']} has no trigger")
    path = directory / "trigger.npz"
    arrays = load_npz(path, ("pattern", "mask"), label=f"{flag} {directory}: {path.name}")
    pattern, mask = (torch.tensor(arrays[k], dtype=torch.float32) for k in ("pattern", "mask"))
    if not (bool(torch.isfinite(pattern).all()) and bool(torch.isfinite(mask).all())):
        raise BadInput(f"{flag} {directory}: {path.name} holds non-finite values")
    return Trigger(pattern, mask)


def backdoor_metrics(
    model: Model, test: Dataset, trigger: Trigger, target: int
) -> dict[str, float]:
    """Clean accuracy and attack success rate of `model` on the `test` Dataset, together."""
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


def backdoor_summary(model: Model, test: Dataset, directory: str) -> dict[str, Any]:
    """`backdoor_metrics` of the backdoor written by `adversa poison` into `directory`, with
    the directory, target class and a few triggered examples (the report's `config.backdoor`,
    shown in report.html's backdoor section)."""
    manifest = read_manifest(directory)
    trigger = read_trigger(Path(directory), manifest)
    target = manifest["target_class"]
    return {
        "dir": str(directory),
        "target_class": target,
        **backdoor_metrics(model, test, trigger, target),
        "examples": triggered_examples(model, test.x, test.y, trigger, target, model.bounds),
    }
