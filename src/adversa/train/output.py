"""The model a finished `adversa train` run wrote: `card.json` + `model.pt`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adversa.errors import AdversaError, ModelLoadError
from adversa.model import Model
from adversa.model.weights import apply_weights, first_line
from adversa.nets import build_arch


def load_training_output(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    bounds: tuple[float, float] | None = None,
) -> Model:
    """The model in a directory written by `adversa train` (`card.json` + `model.pt`).

    The architecture named in the card is built for the card's input shape and classes, and
    the weights are loaded strictly with `weights_only=True`. `bounds` defaults to the card's.
    """
    path = Path(path).expanduser()
    card_path, weights_path = path / "card.json", path / "model.pt"
    if not card_path.is_file():
        hint = ""
        if (path / "checkpoint.pt").exists():
            hint = " (the training run has not finished: continue it with adversa train --resume)"
        raise ModelLoadError(
            f"{path}: is a directory without card.json{hint}; expected a training output "
            f"directory, a TorchScript or .pt2 archive, a zoo name, or file.py:factory"
        )
    try:
        card = json.loads(card_path.read_text())
        arch, shape = card["arch"], tuple(int(d) for d in card["input_shape"])
        classes = int(card["num_classes"])
        card_bounds = tuple(float(b) for b in card.get("bounds", (0.0, 1.0)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{card_path}: not a readable model card ({first_line(exc)})"
        ) from None
    if not weights_path.is_file():
        raise ModelLoadError(f"{path}: card.json without model.pt")
    try:
        net = build_arch(arch, shape, classes)
    except AdversaError as exc:
        raise ModelLoadError(f"{card_path}: cannot rebuild the architecture ({exc})") from None
    apply_weights(net, weights_path)
    net.to(device).eval()
    used = bounds if bounds is not None else card_bounds
    return Model(net, num_classes=classes, bounds=used, name=path.name)  # type: ignore[arg-type]
