"""Robust Physical Perturbations, RP2 (Eykholt, Evtimov, Fernandes, Li, Rahmati, Xiao, Prakash,
Kohno & Song 2018, "Robust Physical-World Attacks on Deep Learning Visual Classification",
CVPR, arXiv:1707.08945): a masked perturbation (stickers on a sign, an eyeglass frame)
optimised with Adam over an expectation of scene transformations (Athalye et al. 2018), with
two terms that make it printable:

- total variation (smoothness: a printer and a camera blur sharp pixel-level patterns):
  the mean absolute difference between neighbouring perturbation pixels, over neighbour
  pairs that both lie inside the mask (the sticker's own edges are not penalised);
- the non-printability score of Sharif, Bhagavatula, Bauer & Reiter 2016 ("Accessorize to a
  Crime", CCS): for each pixel inside the mask, the product of its distances to the colours
  of a printable `palette`, averaged over the mask (0 when every pixel is a palette colour).

Objective, minimised per sample: `-mean_k loss(model(T_k(x_adv)), y) + tv_weight * TV +
nps_weight * NPS` with T_k drawn from `transforms` (`adversa.physical.transforms`), `samples`
draws per step in one stacked batch. After each step the point is projected by the threat
model: with a `MaskedThreat` (e.g. `norm="linf", eps=1.0`) nothing outside the mask moves and
the colours inside are free. The last iterate is returned; the harness projects it again and
verifies it on the untransformed model (success under fresh transformations is measured by
the caller, e.g. `transformed`).

Cost per sample: `steps * samples` forward and backward passes, plus the harness's check.

Example::

    threat = MaskedThreat(norm="linf", eps=1.0, mask=stickers(32, 32))
    attack = get_attack("rp2", threat, transforms=Transforms.parse("rotate=15,scale=0.9-1.1"))
    result = attack(model, x, y)
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.errors import BadInput, ShapeError, require
from adversa.losses import get_loss
from adversa.model import Model
from adversa.physical.masked import MaskedThreat
from adversa.physical.transforms import Transforms
from adversa.rng import make_generator
from adversa.threat import ThreatModel

# Colours a desktop printer reproduces well (RGB in [0, 1]); grey levels for one channel.
PRINTABLE_RGB: tuple[tuple[float, ...], ...] = (
    (0.0, 0.0, 0.0),
    (1.0, 1.0, 1.0),
    (0.5, 0.5, 0.5),
    (0.8, 0.1, 0.1),
    (0.1, 0.6, 0.2),
    (0.1, 0.2, 0.7),
    (0.95, 0.85, 0.1),
    (0.95, 0.5, 0.1),
)
PRINTABLE_GREY: tuple[tuple[float, ...], ...] = ((0.0,), (1 / 3,), (2 / 3,), (1.0,))


@register_attack("rp2")
@dataclasses.dataclass(frozen=True, kw_only=True)
class RP2(AttackBase):
    steps: int = 100  # Adam steps
    step_size: float = 0.05  # Adam's learning rate, in units of the box width
    samples: int = 4  # transformation draws per step (EOT), one stacked batch; 1 without
    transforms: Transforms = dataclasses.field(default_factory=Transforms)  # the scene's
    # variations (EOT); the default, the identity, is no EOT
    tv_weight: float = 0.0  # weight of the total variation (smoothness)
    nps_weight: float = 0.0  # weight of the non-printability score
    palette: tuple[tuple[float, ...], ...] | None = None  # printable colours in [0, 1]
    # (one value per channel); None: PRINTABLE_RGB for 3 channels, PRINTABLE_GREY for 1
    loss: str = "ce"  # "ce" or "margin"
    random_start: bool = False  # start from a uniform draw inside the mask, else from x

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.step_size > 0, f"step_size must be > 0, got {self.step_size}")
        require(self.samples >= 1, f"samples must be >= 1, got {self.samples}")
        require(self.tv_weight >= 0, f"tv_weight must be >= 0, got {self.tv_weight}")
        require(self.nps_weight >= 0, f"nps_weight must be >= 0, got {self.nps_weight}")
        if not isinstance(self.transforms, Transforms):
            raise BadInput(
                f"transforms must be a Transforms, got {type(self.transforms).__name__} "
                "(use Transforms.parse('rotate=15,...'))"
            )
        if self.palette is not None:
            rows = [tuple(float(v) for v in c) for c in self.palette]
            ok = (
                rows
                and len({len(r) for r in rows}) == 1
                and all(0 <= v <= 1 for r in rows for v in r)
            )
            require(
                bool(ok), f"palette must be colours of equal length in [0, 1], got {self.palette}"
            )
            object.__setattr__(self, "palette", tuple(rows))
        get_loss(self.loss, self.threat.targeted)

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        threat, (lo, hi) = self.threat, self.threat.bounds
        width = hi - lo
        if (self.tv_weight or self.nps_weight or not self.transforms.is_identity) and x.dim() != 4:
            raise ShapeError(
                f"rp2's transforms, tv_weight and nps_weight need images (B, C, H, W), got "
                f"shape {tuple(x.shape)}"
            )
        mask = pixel_mask(threat, x)
        colours = None  # the palette in the box's units, when printability counts
        if self.nps_weight:
            colours = palette_for(self.palette, x.shape[1], x) * width + lo
        loss_fn = get_loss(self.loss, threat.targeted)
        start = threat.random_start(x, gen) if self.random_start else x.clone()
        x_adv = start.requires_grad_(True)
        optimizer = torch.optim.Adam([x_adv], lr=self.step_size * width)
        identity = self.transforms.is_identity
        k = 1 if identity else self.samples  # draws of a fixed scene all agree
        draws = y.repeat(k)
        for _ in range(self.steps):
            stacked = x_adv.repeat((k,) + (1,) * (x.dim() - 1))
            seen = stacked if identity else self.transforms(stacked, gen, threat.bounds)
            attack_loss = loss_fn(model(seen), draws).view(k, -1).mean(0)
            objective = -attack_loss
            if self.tv_weight:
                objective = objective + self.tv_weight * total_variation(x_adv - x, mask) / width
            if colours is not None:
                objective = objective + self.nps_weight * non_printability(x_adv, mask, colours)
            optimizer.zero_grad(set_to_none=True)
            objective.sum().backward()
            optimizer.step()
            with torch.no_grad():
                x_adv.copy_(threat.project(x_adv, x))
        return x_adv.detach()


def pixel_mask(threat: ThreatModel, x: Tensor) -> Tensor:
    """Float (B|1, 1, H, W): 1 where the threat lets any channel of the pixel change."""
    if not isinstance(threat, MaskedThreat):
        return torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    return threat.mask_for(x).any(1, keepdim=True).to(x.dtype)


def palette_for(palette: tuple[tuple[float, ...], ...] | None, channels: int, like: Tensor):
    """The palette as a (K, C) tensor in [0, 1]: `palette`, or the default for C channels."""
    if palette is None:
        palette = PRINTABLE_GREY if channels == 1 else PRINTABLE_RGB
    if len(palette[0]) != channels:
        raise BadInput(
            f"palette colours have {len(palette[0])} values, the images {channels} channels"
        )
    return torch.tensor(palette, dtype=like.dtype, device=like.device)


def total_variation(delta: Tensor, mask: Tensor) -> Tensor:
    """Per-sample (B,) mean absolute difference of `delta` (B, C, H, W) between vertical and
    horizontal neighbours that are both inside `mask` (B|1, 1, H, W)."""
    down = (mask[..., 1:, :] * mask[..., :-1, :]).expand_as(delta[..., 1:, :])
    right = (mask[..., :, 1:] * mask[..., :, :-1]).expand_as(delta[..., :, 1:])
    diff_v = (delta[..., 1:, :] - delta[..., :-1, :]).abs() * down
    diff_h = (delta[..., :, 1:] - delta[..., :, :-1]).abs() * right
    pairs = (down.flatten(1).sum(1) + right.flatten(1).sum(1)).clamp_min(1)
    return (diff_v.flatten(1).sum(1) + diff_h.flatten(1).sum(1)) / pairs


def non_printability(x: Tensor, mask: Tensor, colours: Tensor) -> Tensor:
    """Per-sample (B,) non-printability score (Sharif et al. 2016): the product over the
    palette `colours` (K, C) of each pixel's Euclidean distance to them, averaged over the
    pixels inside `mask` (B|1, 1, H, W)."""
    pixels = x.flatten(2).transpose(1, 2)  # (B, HW, C)
    dist = (pixels.unsqueeze(2) - colours).pow(2).sum(-1).add(1e-12).sqrt()  # (B, HW, K)
    score = dist.prod(-1)  # (B, HW)
    weight = mask.expand(x.shape[0], 1, *x.shape[2:]).flatten(1)
    return (score * weight).sum(1) / weight.sum(1).clamp_min(1)


def _transformed_forward(model: Model, transforms: Transforms, gen: torch.Generator, x: Tensor):
    return model(transforms(x, gen, model.bounds))


def transformed(model: Model, transforms: Transforms, seed: int) -> Model:
    """A view of `model` that sees each input through a fresh random draw of `transforms`
    (seeded by `seed`): wrap it in `adversa.attacks.adaptive.EOT` to attack the expectation,
    or query it to measure success under transformation."""
    if not isinstance(transforms, Transforms):
        raise BadInput(f"transforms must be a Transforms, got {type(transforms).__name__}")
    gen = make_generator(seed, model.device)
    forward = functools.partial(_transformed_forward, model, transforms, gen)
    return model.derive(forward=forward, name=f"{model.name}+{transforms.spec()}")
