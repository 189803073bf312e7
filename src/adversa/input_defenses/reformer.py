"""MagNet's reformer: a small denoising autoencoder trained on clean data that maps inputs back
towards the data manifold before the classifier sees them (Meng & Chen 2017, "MagNet: a
Two-Pronged Defense against Adversarial Examples", arXiv:1705.09064). Its reconstruction error
is MagNet's detector (`adversa.input_defenses.detectors.MagNetDetector`).

`MagNetAutoencoder` is the paper's MNIST architecture ("Detector I & Reformer", Table 1):
Conv3x3(w)-sigmoid, AvgPool2, Conv3x3(w)-sigmoid, Conv3x3(w)-sigmoid, Upsample2,
Conv3x3(w)-sigmoid, Conv3x3(C)-sigmoid, with w = 3. `pool=False` gives "Detector II"
(three convolutions, no pooling). Trained as in the paper: mean squared error to the clean
image from inputs with Gaussian noise (volume 0.1), Adam, a tiny L2 penalty.

The reformer is differentiable: a white-box attack differentiates through it, so the plain
attack is already the adaptive one (Carlini & Wagner 2017, "MagNet and 'Efficient Defenses
Against Adversarial Attacks' are Not Robust to Adversarial Examples", arXiv:1711.08478).

Files: `save_reformer(dir)` writes `reformer.pt` (state_dict, read back weights-only) and
`reformer.json` (config, input shape, training numbers); `load_reformer(dir)` reads them.
Cost of training: epochs x N forward and backward passes of the autoencoder (a few seconds
on MNIST on one CPU thread); of the defense: one autoencoder pass per input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.errors import BadInput, ModelLoadError
from adversa.io import atomic_torch_save, atomic_write_text
from adversa.rng import make_generator
from adversa.safeload import brief, load_tensors

log = logging.getLogger(__name__)

WEIGHTS, CARD = "reformer.pt", "reformer.json"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReformerConfig:
    """How to train a MagNet autoencoder."""

    epochs: int = 10  # passes over the training data (MagNet: 100 on 60,000 digits)
    batch_size: int = 32  # samples per Adam step
    lr: float = 1e-2  # Adam's learning rate (sigmoid layers learn slowly at 1e-3)
    noise: float = 0.1  # std of the Gaussian noise added to training inputs (MagNet: 0.1)
    weight_decay: float = 1e-9  # L2 penalty (MagNet: 1e-9)
    width: int = 3  # channels of the hidden convolutions (MagNet: 3)
    pool: bool = True  # True: "Detector I & Reformer" (with pooling); False: "Detector II"
    seed: int = 0  # seeds initialisation, shuffling and noise

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput(f"{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.noise <= 1:
            raise BadInput(f"noise must be in [0, 1], got {self.noise!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BadInput(f"weight_decay must be >= 0, got {self.weight_decay!r}")


class MagNetAutoencoder(nn.Sequential):
    """MagNet's convolutional autoencoder; outputs in (0, 1) through a final sigmoid, so
    inputs are expected in [0, 1]. With `pool`, H and W must be even."""

    def __init__(self, in_channels: int = 1, width: int = 3, pool: bool = True) -> None:
        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.Sigmoid()]

        if pool:
            layers = [
                *conv(in_channels, width),
                nn.AvgPool2d(2),
                *conv(width, width),
                *conv(width, width),
                nn.Upsample(scale_factor=2, mode="nearest"),
                *conv(width, width),
                *conv(width, in_channels),
            ]
        else:
            layers = [*conv(in_channels, width), *conv(width, width), *conv(width, in_channels)]
        super().__init__(*layers)
        self.in_channels, self.width, self.pool = in_channels, width, pool

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise BadInput(
                f"the reformer expects images shaped (B, {self.in_channels}, H, W), got "
                f"{tuple(x.shape)}"
            )
        if self.pool and (x.shape[2] % 2 or x.shape[3] % 2):
            raise BadInput(
                f"the reformer with pooling needs even H and W, got {tuple(x.shape)} (train "
                f"it without pooling: pool=False, --no-pool)"
            )
        return super().forward(x)


def train_reformer(
    x: Tensor,
    config: ReformerConfig = ReformerConfig(),
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[MagNetAutoencoder, dict[str, Any]]:
    """Train a `MagNetAutoencoder` on clean images `x` (N, C, H, W) in [0, 1].

    Returns the autoencoder (eval mode) and its card: the config, the input shape and the
    final epoch's mean squared reconstruction error on clean inputs.
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise BadInput(f"train_reformer needs images shaped (N, C, H, W), got {shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = MagNetAutoencoder(x.shape[1], config.width, config.pool).to(x.device)
    gen = make_generator(config.seed, x.device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start, n, loss_sum = time.perf_counter(), x.shape[0], 0.0
    net.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen, device=x.device)
        loss_sum = 0.0
        for i in range(0, n, config.batch_size):
            clean = x[order[i : i + config.batch_size]]
            noise = torch.randn(clean.shape, generator=gen, device=x.device, dtype=x.dtype)
            noisy = (clean + config.noise * noise).clamp(0, 1)
            loss = F.mse_loss(net(noisy), clean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * clean.shape[0]
        if progress is not None:
            progress("training reformer", epoch + 1, config.epochs)
        log.debug("reformer epoch %d: mse %.5f", epoch + 1, loss_sum / n)
    net.eval()
    with torch.no_grad():
        clean_mse = float(
            sum(
                F.mse_loss(net(x[i : i + 512]), x[i : i + 512], reduction="sum")
                for i in range(0, n, 512)
            )
            / x.numel()
        )
    card = {
        "config": dataclasses.asdict(config),
        "input_shape": list(x.shape[1:]),
        "train_size": n,
        "train_noisy_mse": loss_sum / n,
        "clean_mse": clean_mse,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return net, card


def save_reformer(net: MagNetAutoencoder, card: dict[str, Any], directory: str | Path) -> Path:
    """Write `reformer.pt` and `reformer.json` into `directory` (created), atomically."""
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / WEIGHTS)
    atomic_write_text(out / CARD, json.dumps(card, indent=2) + "\n")
    return out


def load_reformer(directory: str | Path, device: str | torch.device = "cpu") -> MagNetAutoencoder:
    """The autoencoder saved in `directory` by `save_reformer` (eval mode, on `device`)."""
    root = Path(directory).expanduser()
    card_path, weights_path = root / CARD, root / WEIGHTS
    if not card_path.is_file() or not weights_path.is_file():
        raise ModelLoadError(
            f"{root}: not a reformer directory (needs {CARD} and {WEIGHTS}; create one with "
            "`adversa train-reformer`)"
        )
    state = load_tensors(weights_path, what="reformer weights file")  # never unpickles code
    try:
        card = json.loads(card_path.read_text())
        config, shape = card["config"], card["input_shape"]
        net = MagNetAutoencoder(int(shape[0]), int(config["width"]), bool(config["pool"]))
        net.load_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise ModelLoadError(f"{root}: cannot load the reformer: {brief(exc)}") from None
    return net.to(device).eval()
