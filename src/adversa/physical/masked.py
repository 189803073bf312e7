"""`MaskedThreat`: a threat model whose perturbation lives only inside a mask.

The physical attacker cannot touch every pixel of a photo; they can print something and put
it in the scene: a pair of eyeglass frames (Sharif, Bhagavatula, Bauer & Reiter 2016,
"Accessorize to a Crime: Real and Stealthy Attacks on State-of-the-Art Face Recognition",
CCS), stickers on a road sign (Eykholt et al. 2018, "Robust Physical-World Attacks on Deep
Learning Visual Classification", arXiv:1707.08945). What they print is unbounded in
magnitude (any colour), but confined to the region the object covers. `MaskedThreat` states
that region as a boolean mask and keeps the rest of the threat model (norm, eps, box): its
`project` applies the parent's projection to the masked perturbation, so every attack built
on `threat.project` (PGD, APGD, FGSM, and the `run_attack` harness's final projection of any
attack) stays inside the mask, and the harness's verification is unchanged.

`eps = hi - lo` with the linf norm (e.g. `eps=1.0` on [0, 1]) means unbounded inside the mask.
The mask is `(H, W)` (every channel), `(C, H, W)` or `(1|C, H, W)` with a leading 1, shared by
the batch, or per sample `(B, 1|C, H, W)`. A per-sample mask needs the batch it was made for:
attacks that attack a subset of the rows (early stopping, restarts stacked in one batch) need
a shared mask, or `early_stop=False, restarts=1` on points the model classifies correctly.

Cost: `project` is the parent's O(B * D) plus one `torch.where`.

Example::

    threat = MaskedThreat(norm="linf", eps=1.0, mask=MASKS.get("stickers")(28, 28))
    result = get_attack("pgd", threat, steps=50)(model, x, y)
    assert bool((result.x_adv == x)[..., ~threat.mask].all())
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from adversa.errors import BadInput, ShapeError, describe
from adversa.threat import ThreatModel


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MaskedThreat(ThreatModel):
    """The parent's ball and box, for a perturbation that is zero outside `mask`.

    `mask` (bool, or 0/1 numbers) broadcasts against the batch once leading dimensions of 1
    are added: `(H, W)`, `(C, H, W)`, `(1, H, W)` or per sample `(B, 1|C, H, W)`. It is stored
    as a detached bool tensor. An all-false mask is allowed (nothing can change: a control).
    """

    mask: Tensor

    def __post_init__(self) -> None:
        ThreatModel.__post_init__(self)
        mask = self.mask
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        if not isinstance(mask, Tensor):
            raise BadInput(f"mask must be a tensor of 0/1 values, got {describe(mask)}")
        if mask.dim() < 1:
            raise ShapeError(
                f"mask must have at least one dimension, got shape {tuple(mask.shape)}"
            )
        mask = mask.detach()
        if mask.dtype != torch.bool:
            binary = ((mask == 0) | (mask == 1)).all() if mask.numel() else torch.tensor(True)
            if not bool(binary):
                raise BadInput(
                    f"mask must hold only 0 and 1 (or bools), got values in "
                    f"[{float(mask.min()):g}, {float(mask.max()):g}]"
                )
            mask = mask != 0
        object.__setattr__(self, "mask", mask)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskedThreat) or other.__class__ is not self.__class__:
            return NotImplemented
        same_ball = (self.norm, self.eps, self.bounds, self.targeted) == (
            other.norm,
            other.eps,
            other.bounds,
            other.targeted,
        )
        return (
            same_ball
            and self.mask.shape == other.mask.shape
            and bool(torch.equal(self.mask.cpu(), other.mask.cpu()))
        )

    def __hash__(self) -> int:
        return hash((self.norm, self.eps, self.bounds, self.targeted, tuple(self.mask.shape)))

    @property
    def share(self) -> float:
        """The share of the mask's entries that are inside (its area share for (H, W))."""
        return float(self.mask.float().mean()) if self.mask.numel() else 0.0

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether the mask broadcasts against a batch of this shape (batch dim first)."""
        return _broadcast_shape(self.mask.shape, tuple(shape)) is not None

    def mask_for(self, x: Tensor) -> Tensor:
        """The mask as a bool tensor on `x`'s device, shaped to broadcast against `x`;
        `ShapeError` naming both shapes when it does not fit."""
        shape = _broadcast_shape(self.mask.shape, tuple(x.shape))
        if shape is None:
            raise ShapeError(
                f"mask of shape {tuple(self.mask.shape)} does not fit inputs of shape "
                f"{tuple(x.shape)}: expected (H, W), (1|C, H, W) or (B, 1|C, H, W) matching "
                "the trailing dimensions (a per-sample mask needs the batch it was made for)"
            )
        return self.mask.to(x.device).reshape(shape)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """The parent's projection of the masked point; outside the mask the result is `x`
        exactly (for every norm)."""
        m = self.mask_for(x)
        inside = torch.where(m, x_adv, x)
        return torch.where(m, ThreatModel.project(self, inside, x), x)

    def random_start(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """The parent's random start, kept inside the mask (an infinite eps draws uniformly
        from the box)."""
        if self.eps == float("inf"):
            lo, hi = self.bounds
            u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return self.project(lo + (hi - lo) * u, x)
        return self.project(ThreatModel.random_start(self, x, gen), x)

    def contains(self, x_adv: Tensor, x: Tensor, atol: float = 1e-5) -> Tensor:
        """The parent's test, and nothing changed outside the mask (exactly)."""
        m = self.mask_for(x)
        unchanged = ((x_adv == x) | m).flatten(1).all(1)
        return ThreatModel.contains(self, x_adv, x, atol) & unchanged


def _broadcast_shape(mask: tuple[int, ...] | torch.Size, batch: tuple[int, ...]):
    """`mask` padded with leading 1s to `batch`'s rank if every dimension is equal or 1 (the
    batch dimension: 1 or the batch size), else None."""
    mask = tuple(mask)
    if len(mask) > len(batch) or not batch:
        return None
    padded = (1,) * (len(batch) - len(mask)) + mask
    if any(m not in (1, b) for m, b in zip(padded[1:], batch[1:], strict=True)):
        return None
    if padded[0] not in (1, batch[0]):
        return None
    return padded
