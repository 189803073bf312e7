"""The adversarial patch as a registered attack: `get_attack("patch", threat, size=0.1)`.

Brown, Mane, Roy, Abadi & Gilmer 2017, "Adversarial Patch", arXiv:1712.09665. One patch is
trained on the batch it is given (`train_patch`: Adam on the patch pixels, expectation over
its placement and the scene `transforms`), then pasted on every image of that batch; the
harness verifies each patched image with a fresh forward pass as for any attack. For a patch
trained on one split and measured on another (held-out success, by size, by transformation)
use `adversa patch` or `adversa.physical.patch.train_patch` / `evaluate_patch`.

Threat: linf with eps equal to the box width for the usual patch (it sets the pixels under
it to anything), or a smaller eps for a patch whose pixels stay within eps of the image (the
harness's projection), or a `MaskedThreat` whose mask contains the patch's places.
Targeted: every label in `y` is the one target class. Cost: `steps` forward and backward
passes on `batch_size` images, plus the harness's verification.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.errors import BadInput, ShapeError
from adversa.model import Model
from adversa.physical.patch import PatchConfig, place_patch, train_patch
from adversa.physical.transforms import Transforms


@register_attack("patch")
@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchAttack(AttackBase):
    norms = ("linf",)

    size: float = 0.1  # share of the image area
    shape: str = "square"  # square, circle or a PNG mask file
    steps: int = 200  # Adam steps on the patch
    lr: float = 0.05  # Adam's learning rate, in units of the box width
    position: float = 0.0  # how far the patch's centre may move: 0 centred, 1 anywhere
    transforms: str = "none"  # the scene's transformations during training (EOT)
    batch_size: int = 64  # images per step, drawn from the batch attacked

    def __post_init__(self) -> None:
        super().__post_init__()
        self._config(None)  # checks size, shape, position, steps, lr and batch_size

    def _config(self, target: int | None, n: int | None = None) -> PatchConfig:
        return PatchConfig(
            size=self.size,
            shape=self.shape,
            target_class=target,
            transforms=Transforms.parse(self.transforms, flag="transforms"),
            position=self.position,
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size if n is None else min(self.batch_size, n),
            seed=self.seed,
        )

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        if self.threat.eps == 0:
            return x  # nothing under the patch may change
        if x.dim() != 4:
            raise ShapeError(f"attack 'patch' needs images (B, C, H, W), got {tuple(x.shape)}")
        target = None
        if self.threat.targeted:
            if not bool((y == y[0]).all()):
                raise BadInput(
                    "attack 'patch' (targeted) trains one patch for one target class: every "
                    f"label must be the same, got {sorted(set(y.tolist()))}"
                )
            target = int(y[0])
        patch = train_patch(model, x, y, self._config(target, x.shape[0]))
        image, mask = patch.image.to(x), patch.mask.to(x)
        return place_patch(x, image, mask, gen, position=self.position)
