"""The adversarial patch (Brown, Mané, Roy, Abadi & Gilmer 2017, "Adversarial Patch",
arXiv:1712.09665): one image-independent patch that, pasted anywhere in a scene, makes a
classifier predict a chosen class (targeted) or anything but the true one (untargeted).

The patch covers `size` of the image area (a square, a disk, or the white part of a PNG
mask). It is optimised with Adam (or signed steps) over images of a training split with
expectation over transformation (Athalye et al. 2018, arXiv:1707.07397): at every step each
image gets the patch at a random position, rotation and scale (the patch's own placement),
then the scene `Transforms` (lighting, noise, blur, the camera's view), each a fresh draw per
image; the loss is the target class's log-probability (maximised) or the true class's
(minimised), averaged over the batch. Success is measured on held-out images under fresh
draws (`evaluate_patch`), beside a patch of uniform noise of the same shape (`random_patch`).

Cost: `steps * batch_size` forward and backward passes of the model to train, one forward
pass per image and draw to evaluate (two for untargeted success, which needs the clean
prediction). Everything is batched; no Python loop over images.

    config = PatchConfig(size=0.1, target_class=3, transforms=Transforms.parse("rotate=20"))
    patch = train_patch(model, x_train, y_train, config)
    rate = patch_success(model, patch, x_test, y_test, config.transforms, seed=1).float().mean()
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from adversa.errors import BadInput, ShapeError, describe, is_integer, is_real
from adversa.model import Cost, Model
from adversa.physical.mask_files import read_mask
from adversa.physical.transforms import Transforms, warp
from adversa.rng import make_generator

SHAPES: tuple[str, ...] = ("square", "circle")
OPTIMIZERS: tuple[str, ...] = ("adam", "sign")
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchConfig:
    """What to train: the patch's size (fraction of the image area, in (0, 0.5]) and shape
    ("square", "circle" or a PNG mask path, white = inside), the target class (None:
    untargeted), the scene `transforms`, the patch's own placement ranges (`rotate` degrees,
    `scale` factors), and the optimisation (`steps`, `lr`, `optimizer`, `batch_size`, `seed`)."""

    size: float = 0.1
    shape: str = "square"
    target_class: int | None = None
    transforms: Transforms = dataclasses.field(default_factory=Transforms)
    position: float = 1.0  # how far the patch's centre may move: 0 centred, 1 anywhere inside
    rotate: float = 20.0  # the patch's rotation, uniform in [-rotate, rotate] degrees
    scale: tuple[float, float] = (0.9, 1.1)  # the patch's scale, uniform in [lo, hi]
    steps: int = 300
    lr: float = 0.05  # Adam's learning rate (or the signed step) on the [0, 1] patch scale
    optimizer: str = "adam"
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not is_real(self.size) or not 0.0 < float(self.size) <= 0.5:
            raise BadInput(
                f"--size must be a fraction of the image area in (0, 0.5], "
                f"got {describe(self.size)}"
            )
        if not isinstance(self.shape, str) or not self.shape:
            raise BadInput(f"--shape must be square, circle or a PNG mask, got {self.shape!r}")
        if self.target_class is not None and not (
            is_integer(self.target_class) and self.target_class >= 0
        ):
            raise BadInput(
                f"--target-class must be a class index >= 0, got {describe(self.target_class)}"
            )
        if not isinstance(self.transforms, Transforms):
            raise BadInput(f"transforms must be a Transforms, got {describe(self.transforms)}")
        Transforms(rotate=self.rotate, scale=self.scale)  # same ranges as the scene's
        if not is_real(self.position) or not 0.0 <= float(self.position) <= 1.0:
            raise BadInput(f"--position must be in [0, 1], got {describe(self.position)}")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if not is_real(self.lr) or not 0.0 < float(self.lr) <= 1.0:
            raise BadInput(f"--lr must be in (0, 1], got {describe(self.lr)}")
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(
                f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        object.__setattr__(self, "size", float(self.size))
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))

    @property
    def targeted(self) -> bool:
        return self.target_class is not None


@dataclasses.dataclass(frozen=True, eq=False)
class Patch:
    """A trained patch: `image` (C, k, k) in `bounds`, `mask` (1, k, k) in {0, 1}, the config
    it was trained with, and what training cost (model passes, seconds)."""

    image: Tensor
    mask: Tensor
    config: PatchConfig
    bounds: tuple[float, float] = (0.0, 1.0)
    cost: Cost = dataclasses.field(default_factory=Cost)
    losses: tuple[float, ...] = ()  # the mean loss every tenth of training

    @property
    def side(self) -> int:
        return int(self.image.shape[-1])


def patch_mask(shape: str, size: float, image_hw: tuple[int, int]) -> Tensor:
    """The patch's (k, k) 0/1 mask whose inside covers about `size` of an (H, W) image:
    a k x k square, a disk of diameter k, or the white part of a PNG scaled to that area.
    Raises `BadInput` (naming --shape) when it would not fit in the image or is empty."""
    area = size * image_hw[0] * image_hw[1]
    if shape == "square":
        side = max(1, round(math.sqrt(area)))
        mask = torch.ones(side, side)
    elif shape == "circle":
        side = max(1, round(math.sqrt(4 * area / math.pi)))
        centres = torch.arange(side, dtype=torch.float32) + 0.5 - side / 2
        mask = ((centres[:, None] ** 2 + centres[None, :] ** 2) <= (side / 2) ** 2).float()
    elif (
        Path(shape).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif")
        or Path(shape).exists()
    ):
        fill = read_mask(shape, image_hw, flag="--shape").mean().item()
        side = max(1, round(math.sqrt(area / fill)))
        if side <= min(image_hw):
            mask = read_mask(shape, (side, side), flag="--shape")
    else:
        raise BadInput(f"--shape must be square, circle or a PNG mask file, got {shape!r}")
    if side > min(image_hw):
        raise BadInput(
            f"--size {size:g} with --shape {shape}: the patch ({side}x{side} pixels) is larger "
            f"than the {image_hw[0]}x{image_hw[1]} image"
        )
    if not mask.any():
        raise BadInput(f"--shape {shape}: the mask is empty at size {size:g}")
    return mask.unsqueeze(0)


def place_patch(
    x: Tensor,
    image: Tensor,
    mask: Tensor,
    gen: torch.Generator,
    rotate: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    position: float = 1.0,
) -> Tensor:
    """`x` (B, C, H, W) with the patch `image` (C, k, k) pasted through `mask` (1, k, k), at a
    random position, rotation in [-rotate, rotate] degrees and scale in `scale`, drawn per
    image from `gen`; differentiable in `image`. The centre moves uniformly over `position`
    times the room the patch leaves on each axis (0: centred; 1: anywhere the unrotated
    patch fits, its rotated corners may be cut)."""
    n, _, height, width = x.shape
    side = image.shape[-1]
    top, left = (height - side) // 2, (width - side) // 2
    pad = (left, width - side - left, top, height - side - top)
    canvas = F.pad(image * mask, pad).expand(n, -1, -1, -1)
    cover = F.pad(mask, pad).expand(n, -1, -1, -1)
    draws = torch.rand(n, 4, generator=gen, device=gen.device).to(x.device, x.dtype)
    angle = (2 * draws[:, 0] - 1) * rotate
    factor = scale[0] + (scale[1] - scale[0]) * draws[:, 1]
    sides = torch.tensor([width, height], dtype=x.dtype, device=x.device)
    room = ((1 - factor[:, None] * side / sides) / 2).clamp_min(0) * position
    shift = (2 * draws[:, 2:] - 1) * room
    both = warp(torch.cat([canvas, cover], 1).to(x.dtype), angle, factor, shift)
    pasted, covered = both[:, :-1], both[:, -1:]
    return x * (1 - covered) + pasted


def apply_patch(x: Tensor, patch: Patch, gen: torch.Generator, transforms: Transforms) -> Tensor:
    """`x` with `patch` placed at random (its config's placement ranges), then seen through
    `transforms`, both drawn from `gen`."""
    cfg = patch.config
    placed = place_patch(
        x, patch.image.to(x), patch.mask.to(x), gen, cfg.rotate, cfg.scale, cfg.position
    )
    return transforms(placed, gen, patch.bounds)


def train_patch(
    model: Model, x: Tensor, y: Tensor, config: PatchConfig, progress: Progress | None = None
) -> Patch:
    """Optimise one patch over the images `x` (N, C, H, W) with labels `y` (see the module
    docstring); `progress(description, step, steps)` is called every few steps."""
    _check_images(x, y, model)
    start = time.perf_counter()
    num_classes = model.resolve_num_classes(x[:1].to(model.device))
    if config.targeted and config.target_class >= num_classes:
        raise BadInput(
            f"--target-class must be in [0, {num_classes - 1}] for this {num_classes}-class "
            f"model, got {config.target_class}"
        )
    lo, hi = model.bounds
    mask = patch_mask(config.shape, config.size, tuple(x.shape[-2:])).to(model.device)
    gen = make_generator(config.seed, model.device)
    side = mask.shape[-1]
    unit = torch.rand(x.shape[1], side, side, generator=gen, device=model.device)
    unit.requires_grad_(True)
    adam = torch.optim.Adam([unit], lr=config.lr) if config.optimizer == "adam" else None
    x, y = x.to(model.device), y.to(model.device)
    losses: list[float] = []
    running = torch.zeros((), device=model.device)
    every = max(1, config.steps // 10)
    with model.frozen(), model.counting() as counter:
        for step in range(config.steps):
            index = torch.randint(
                0, x.shape[0], (config.batch_size,), generator=gen, device=gen.device
            )
            image = lo + (hi - lo) * unit
            placed = place_patch(
                x[index], image, mask, gen, config.rotate, config.scale, config.position
            )
            logp = torch.log_softmax(model(config.transforms(placed, gen, (lo, hi))), 1)
            if config.targeted:
                loss = -logp[:, config.target_class].mean()
            else:
                loss = logp.gather(1, y[index, None]).mean()
            (grad,) = torch.autograd.grad(loss, unit)
            with torch.no_grad():
                if adam is None:
                    unit -= config.lr * grad.sign()
                else:
                    unit.grad = grad
                    adam.step()
                unit.clamp_(0.0, 1.0)
                running += loss.detach()
            if (step + 1) % every == 0 or step + 1 == config.steps:
                losses.append(running.item() / ((step % every) + 1))
                running.zero_()
                if progress is not None:
                    progress("training the patch", step + 1, config.steps)
        cost = counter.freeze(time.perf_counter() - start)
    image = (lo + (hi - lo) * unit.detach()) * mask + lo * (1 - mask)
    return Patch(image, mask, config, (lo, hi), cost, tuple(losses))


def random_patch(patch: Patch, seed: int) -> Patch:
    """The control: a patch of the same shape and size filled with uniform noise."""
    gen = make_generator(seed, patch.image.device)
    lo, hi = patch.bounds
    noise = lo + (hi - lo) * torch.rand(patch.image.shape, generator=gen, device=gen.device)
    return dataclasses.replace(patch, image=noise * patch.mask + lo * (1 - patch.mask), cost=Cost())


@dataclasses.dataclass(frozen=True)
class PatchEval:
    """Per image (B,): `success`, `eligible` (counted in the rate: targeted, not already of
    the target class; untargeted, correctly classified in the same scene without the patch),
    the predictions with and without the patch; `rate` = success among the eligible."""

    success: Tensor
    eligible: Tensor
    predicted: Tensor
    clean_predicted: Tensor

    @property
    def rate(self) -> float:
        count = int(self.eligible.sum())
        return float(self.success.sum()) / count if count else 0.0


@torch.no_grad()
def evaluate_patch(
    model: Model,
    patch: Patch,
    x: Tensor,
    y: Tensor,
    transforms: Transforms,
    seed: int,
    batch_size: int = 256,
) -> PatchEval:
    """`patch` on held-out `x` under fresh draws from `seed`: placement from one generator,
    the scene from another, so that the clean prediction sees the same scene draw."""
    _check_images(x, y, model)
    place_gen = make_generator(seed, model.device)
    scene_gen, clean_gen = (
        make_generator(seed + 1, model.device),
        make_generator(seed + 1, model.device),
    )
    cfg = patch.config
    image, mask = patch.image.to(model.device), patch.mask.to(model.device)
    preds, clean = [], []
    with model.eval_mode():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(model.device)
            placed = place_patch(xb, image, mask, place_gen, cfg.rotate, cfg.scale, cfg.position)
            preds.append(model(transforms(placed, scene_gen, patch.bounds)).argmax(1))
            if not cfg.targeted:
                clean.append(model(transforms(xb, clean_gen, patch.bounds)).argmax(1))
    predicted = torch.cat(preds).cpu()
    y = y.cpu()
    if cfg.targeted:
        eligible = y != cfg.target_class
        return PatchEval((predicted == cfg.target_class) & eligible, eligible, predicted, y.clone())
    clean_predicted = torch.cat(clean).cpu()
    eligible = clean_predicted == y
    return PatchEval((predicted != y) & eligible, eligible, predicted, clean_predicted)


def patch_success(
    model: Model, patch: Patch, x: Tensor, y: Tensor, transforms: Transforms, seed: int
) -> Tensor:
    """bool (B,): where `patch` succeeds on `x` under fresh draws (see `PatchEval`)."""
    return evaluate_patch(model, patch, x, y, transforms, seed).success


def _check_images(x: Tensor, y: Tensor, model: Model) -> None:
    if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ShapeError(
            f"a patch needs images x (N, C, H, W) and labels y (N,), N >= 1; got x "
            f"{tuple(x.shape)} and y {tuple(y.shape)}"
        )
    lo, hi = model.bounds
    low, high = torch.aminmax(x)
    if low < lo - 1e-6 or high > hi + 1e-6:
        raise BadInput(
            f"images must lie in the model's bounds [{lo}, {hi}], got [{low:.4g}, {high:.4g}]"
        )
