"""Random scene transformations for expectation over transformation (EOT).

Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing Robust Adversarial Examples"
(arXiv:1707.07397): an attack that must survive a camera optimises the expected loss over a
distribution of transformations, so every gradient step sees a fresh random draw. A
`Transforms` is that distribution: geometric changes (rotation, scale, translation, a
perspective warp of the four corners) done in one `grid_sample` per batch, then optics and
lighting (Gaussian blur, contrast, brightness) and sensor noise, then clipping to the bounds.

Every draw is per image and comes from the caller's `torch.Generator`, so a seed reproduces it;
the whole batch is transformed with batched tensor operations (no Python loop over images) and
the result is differentiable in `x`. Cost: one `grid_sample` plus one separable convolution
per call, no model passes.

    t = Transforms.parse("rotate=20,scale=0.8-1.2,brightness=0.2,noise=0.02")
    x_seen = t(x, make_generator(0))
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from adversa.errors import BadInput, ShapeError, UnknownName, describe, is_real

NAMES: tuple[str, ...] = (
    "rotate",
    "scale",
    "translate",
    "brightness",
    "contrast",
    "noise",
    "perspective",
    "blur",
)
_EXPECTED = {
    "rotate": "degrees >= 0, e.g. rotate=20",
    "scale": "a range LO-HI of factors in (0, 10], LO <= HI (or one factor), e.g. scale=0.8-1.2",
    "translate": "a fraction of the side in [0, 1], e.g. translate=0.1",
    "brightness": "an additive shift in [0, 1] of the value range, e.g. brightness=0.2",
    "contrast": "a factor spread in [0, 1), e.g. contrast=0.3",
    "noise": "a Gaussian std >= 0 as a fraction of the value range, e.g. noise=0.02",
    "perspective": "a corner displacement in [0, 0.4], e.g. perspective=0.1",
    "blur": "a maximum Gaussian sigma in pixels in [0, 10], e.g. blur=1",
}
_LIMITS = {  # name -> (lowest, highest) allowed value
    "rotate": (0.0, 360.0),
    "translate": (0.0, 1.0),
    "brightness": (0.0, 1.0),
    "contrast": (0.0, 0.999),
    "noise": (0.0, 1.0),
    "perspective": (0.0, 0.4),
    "blur": (0.0, 10.0),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Transforms:
    """A distribution of scene transformations; the default is the identity.

    `rotate` (degrees, uniform in [-rotate, rotate]), `scale` (uniform in [lo, hi]),
    `translate` (fraction of the side, uniform in [-t, t] per axis), `brightness` (additive,
    uniform in [-b, b] times the value range), `contrast` (multiplicative about the image mean,
    uniform in [1-c, 1+c]), `noise` (Gaussian std times the value range), `perspective` (each
    corner moved uniformly by up to this fraction of the side), `blur` (Gaussian sigma uniform
    in [0, blur] pixels). Pixels moved in from outside the image take the lower bound.
    """

    rotate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    noise: float = 0.0
    perspective: float = 0.0
    blur: float = 0.0

    def __post_init__(self) -> None:
        for name, (low, high) in _LIMITS.items():
            value = getattr(self, name)
            if not is_real(value) or not low <= float(value) <= high:
                raise BadInput(f"{name} must be {_EXPECTED[name]}, got {describe(value)}")
            object.__setattr__(self, name, float(value))
        scale = self.scale
        ok = isinstance(scale, tuple | list) and len(scale) == 2 and all(map(is_real, scale))
        if not ok or not 0.0 < float(scale[0]) <= float(scale[1]) <= 10.0:
            raise BadInput(f"scale must be {_EXPECTED['scale']}, got {describe(scale)}")
        object.__setattr__(self, "scale", (float(scale[0]), float(scale[1])))

    @classmethod
    def parse(cls, spec: str, flag: str = "--transforms") -> Transforms:
        """`"rotate=20,scale=0.8-1.2,brightness=0.2,noise=0.02"`; `"none"` or `""` is the
        identity. Raises `BadInput` naming `flag`, the bad item and what was expected."""
        if not isinstance(spec, str):
            raise BadInput(f"{flag} must be a string like 'rotate=20,noise=0.02', got {spec!r}")
        values: dict[str, object] = {}
        items = [item.strip() for item in spec.split(",")]
        if [i for i in items if i] in ([], ["none"]):
            return cls()
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip().lower()
            if not sep or name not in NAMES:
                raise BadInput(
                    f"{flag}: bad item {item!r}: expected NAME=VALUE with NAME one of "
                    f"{', '.join(NAMES)}"
                )
            if name in values:
                raise BadInput(f"{flag}: {name!r} is given twice")
            values[name] = _parse_value(name, text.strip(), item, flag)
            try:
                cls(**{name: values[name]})  # type: ignore[arg-type]
            except BadInput as err:
                raise BadInput(f"{flag}: bad item {item!r}: {err}") from None
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_identity(self) -> bool:
        return self == Transforms()

    @property
    def active(self) -> tuple[str, ...]:
        """The names of the transformations that vary (not at their identity value)."""
        identity = Transforms()
        return tuple(n for n in NAMES if getattr(self, n) != getattr(identity, n))

    def one(self, name: str) -> Transforms:
        """Only `name` kept at this range; every other transformation is the identity."""
        if name not in NAMES:
            raise UnknownName("transformation", name, NAMES)
        return Transforms(**{name: getattr(self, name)})

    def scaled(self, fraction: float) -> Transforms:
        """Every range shrunk to `fraction` of itself (scale about 1): for range sweeps."""
        if not is_real(fraction) or not 0.0 <= fraction <= 1.0:
            raise BadInput(f"fraction must be in [0, 1], got {describe(fraction)}")
        lo, hi = self.scale
        values = {n: getattr(self, n) * fraction for n in _LIMITS}
        return Transforms(scale=(1 + (lo - 1) * fraction, 1 + (hi - 1) * fraction), **values)

    def spec(self) -> str:
        """The string `parse` reads back into this object ("none" for the identity)."""
        parts = []
        for name in self.active:
            value = getattr(self, name)
            parts.append(
                f"{name}={value[0]:g}-{value[1]:g}" if name == "scale" else f"{name}={value:g}"
            )
        return ",".join(parts) or "none"

    def __call__(
        self, x: Tensor, gen: torch.Generator, bounds: tuple[float, float] = (0.0, 1.0)
    ) -> Tensor:
        """`x` (B, C, H, W) seen through a fresh random draw per image, clipped to `bounds`.
        The identity returns `x` itself."""
        if x.dim() != 4:
            raise ShapeError(
                f"x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}"
            )
        if self.is_identity:
            return x
        lo, hi = float(bounds[0]), float(bounds[1])
        width = hi - lo
        draw = _Draw(gen, x.shape[0], x.dtype)
        out = x
        if self.rotate or self.scale != (1.0, 1.0) or self.translate or self.perspective:
            out = self._geometry(out - lo, draw) + lo
        if self.blur:
            out = gaussian_blur(out, draw.uniform(0.0, self.blur))
        if self.contrast:
            factor = draw.uniform(1 - self.contrast, 1 + self.contrast).view(-1, 1, 1, 1)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * factor + mean
        if self.brightness:
            shift = draw.uniform(-self.brightness, self.brightness).view(-1, 1, 1, 1)
            out = out + shift * width
        if self.noise:
            noise = torch.randn(out.shape, generator=gen, device=gen.device, dtype=out.dtype)
            out = out + noise.to(out.device) * (self.noise * width)
        return out.clamp(lo, hi)

    def _geometry(self, x: Tensor, draw: _Draw) -> Tensor:
        n = x.shape[0]
        angle = draw.uniform(-self.rotate, self.rotate)
        factor = draw.uniform(*self.scale)
        shift = torch.stack([draw.uniform(-self.translate, self.translate) for _ in "xy"], 1)
        corners = None
        if self.perspective:
            corners = draw.uniform(-self.perspective, self.perspective, (n, 4, 2))
        return warp(x, angle, factor, shift, corners)


def warp(
    x: Tensor, angle: Tensor, factor: Tensor, shift: Tensor, corners: Tensor | None = None
) -> Tensor:
    """`x` (B, C, H, W) rotated by `angle` (B,) degrees (counter-clockwise as displayed, so 90
    is `torch.rot90(x, 1, (2, 3))`), scaled by `factor` (B,) about the centre, moved by
    `shift` (B, 2) (x, y) fractions of the side, and, given `corners` (B, 4, 2), warped by the
    homography that moves the corners by those fractions of the side. One `grid_sample`:
    output point p reads input point M p in normalised [-1, 1] coordinates; pixels from
    outside the image are 0."""
    n = x.shape[0]
    radians = angle.to(x.dtype) * (math.pi / 180.0)
    factor = factor.to(x.dtype)
    cos, sin = torch.cos(radians) / factor, torch.sin(radians) / factor
    inverse = torch.zeros(n, 3, 3, dtype=x.dtype)
    inverse[:, 0, 0], inverse[:, 0, 1], inverse[:, 1, 0], inverse[:, 1, 1] = cos, -sin, sin, cos
    offset = -2.0 * shift.to(x.dtype)  # a fraction of the side is twice that in [-1, 1] units
    inverse[:, :2, 2] = torch.einsum("bij,bj->bi", inverse[:, :2, :2], offset)
    inverse[:, 2, 2] = 1.0
    if corners is not None:
        inverse = inverse @ homography(_CORNERS.to(x.dtype) + 2.0 * corners.to(x.dtype))
    height, width = x.shape[-2:]
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, dtype=x.dtype)
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).reshape(-1, 3)
    source = torch.einsum("bij,pj->bpi", inverse, points)
    source = source[..., :2] / source[..., 2:].clamp_min(1e-6)
    grid = source.reshape(n, height, width, 2).to(x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def homography(corners: Tensor) -> Tensor:
    """(B, 3, 3) maps taking the unit square's corners (-1,-1), (1,-1), (1,1), (-1,1) to
    `corners` (B, 4, 2): the direct linear transform, solved as one batched 8x8 system."""
    n = corners.shape[0]
    src = _CORNERS.to(corners.dtype).expand(n, 4, 2)
    u, v = src[..., 0], src[..., 1]
    px, py = corners[..., 0], corners[..., 1]
    one, zero = torch.ones_like(u), torch.zeros_like(u)
    rows_x = torch.stack([u, v, one, zero, zero, zero, -u * px, -v * px], -1)
    rows_y = torch.stack([zero, zero, zero, u, v, one, -u * py, -v * py], -1)
    system = torch.cat([rows_x, rows_y], 1)
    target = torch.cat([px, py], 1).unsqueeze(-1)
    h = torch.linalg.solve(system, target).squeeze(-1)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype)], 1).view(n, 3, 3)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """`x` (B, C, H, W) blurred with a per-image Gaussian of std `sigma` (B,) pixels:
    separable, one grouped convolution per axis, edges replicated."""
    n, c, height, width = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / s) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device)
    flat = x.reshape(1, n * c, height, width)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, height, width)


class _Draw:
    """Uniform draws (B,) from the caller's generator, on the CPU in `dtype`."""

    def __init__(self, gen: torch.Generator, n: int, dtype: torch.dtype) -> None:
        self.gen, self.n, self.dtype = gen, n, dtype

    def uniform(self, low: float, high: float, shape: tuple[int, ...] | None = None) -> Tensor:
        u = torch.rand(shape or (self.n,), generator=self.gen, device=self.gen.device)
        return (low + (high - low) * u).to("cpu", self.dtype)


def _parse_value(name: str, text: str, item: str, flag: str) -> object:
    try:
        if name != "scale":
            return float(text)
        low, sep, high = text.partition("-") if not text.startswith("-") else ("", "", "")
        return (float(low), float(high)) if sep else (float(text), float(text))
    except ValueError:
        raise BadInput(f"{flag}: bad item {item!r}: {name} must be {_EXPECTED[name]}") from None
