"""`signs`: a seeded synthetic road-sign set, rendered offline (the built-in data set "signs").

No road-sign data set (GTSRB, LISA) ships inside a package, so this one is drawn: eight sign
classes modelled on European signs, each a flat template (shape, border, glyphs from a 3x5
pixel font), warped onto a background crop of one of scikit-image's bundled photos
(`skimage.data`) the way a camera sees a sign: random size (a diameter of 50-90 % of the
image side), position, in-plane rotation (+-15 degrees), yaw and tilt (foreshortening down to
64 % and 87 %) and a perspective term, then lit: the sign's gain and a shading gradient across
it, the image's gain, colour cast and gamma, and sensor noise. The physical attacks of
Eykholt et al. (2018, "Robust Physical-World Attacks on Deep Learning Visual
Classification", arXiv:1707.08945) are set on such signs; the classes and this renderer are
ours.

Images are (N, 3, 32, 32) float32 in [0, 1], drawn at 64x64 and box-filtered to 32x32 (anti-
aliasing). The set is a pure function of its seed and size: every per-image parameter comes
from one `torch.Generator`, rendering is batched (a loop over classes, photos and chunks,
never over images), and the coverage of the sign in each image (`SignImages.alpha`, in
[0, 1]) is kept, so a sticker mask can be confined to the sign.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adversa.data.dataset import Dataset
from adversa.data.splits import split_meta, stratified_split
from adversa.errors import BadInput
from adversa.rng import make_generator

SIGNS_SEED = 0  # seeds the built-in "signs": the set is a pure function of it
PER_CLASS = 500  # images per class in the built-in set
SIDE = 32  # output side in pixels
SIGN_CLASSES: tuple[str, ...] = (
    "stop",
    "yield",
    "speed-limit-50",
    "no-entry",
    "warning",
    "ahead-only",
    "turn-right",
    "parking",
)
PHOTOS: tuple[str, ...] = (  # skimage.data images used as backgrounds (all bundled)
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "camera", "grass", "gravel", "brick", "coins",
)  # fmt: skip
_RENDER = 2  # supersampling factor: drawn at SIDE * _RENDER, then box-filtered
_TEMPLATE = 128  # template resolution
_CHUNK = 512  # images rendered at once (bounds memory; results do not depend on it)

_RED, _WHITE, _BLACK = (0.78, 0.07, 0.09), (0.95, 0.95, 0.93), (0.07, 0.07, 0.07)
_YELLOW, _BLUE = (0.97, 0.78, 0.08), (0.08, 0.28, 0.72)
_FONT = {  # 3x5 bitmaps, rows top to bottom
    "S": ("111", "100", "111", "001", "111"),
    "T": ("111", "010", "010", "010", "010"),
    "O": ("111", "101", "101", "101", "111"),
    "P": ("111", "101", "111", "100", "100"),
    "5": ("111", "100", "111", "001", "111"),
    "0": ("111", "101", "101", "101", "111"),
    "!": ("010", "010", "010", "000", "010"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class SignImages:
    """Rendered signs: `x` (N, 3, side, side) in [0, 1], labels `y` (N,) indexing
    `SIGN_CLASSES`, and `alpha` (N, 1, side, side), the sign's coverage of each pixel."""

    x: Tensor
    y: Tensor
    alpha: Tensor


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(resolution) + 0.5) / resolution * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    return u, v  # u: right, v: down, both in [-1, 1]


def _polygon(u: np.ndarray, v: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    """Inside a convex polygon given counter-clockwise on screen (v down)."""
    inside = np.ones_like(u, dtype=bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) <= 0
    return inside


def _regular(n: int, r: float, phase: float) -> list[tuple[float, float]]:
    return [
        (r * math.cos(phase - 2 * math.pi * i / n), r * math.sin(phase - 2 * math.pi * i / n))
        for i in range(n)
    ]


def _text(u: np.ndarray, v: np.ndarray, chars: str, height: float) -> np.ndarray:
    """Pixels of `chars` in the 3x5 font, centred, `height` tall (one cell gap between)."""
    cell = height / 5
    width = cell * (4 * len(chars) - 1)
    mask = np.zeros_like(u, dtype=bool)
    for k, ch in enumerate(chars):
        for row, bits in enumerate(_FONT[ch]):
            for col, bit in enumerate(bits):
                if bit == "1":
                    x0 = -width / 2 + cell * (4 * k + col)
                    y0 = -height / 2 + cell * row
                    mask |= (u >= x0) & (u < x0 + cell) & (v >= y0) & (v < y0 + cell)
    return mask


def _layers(name: str, u: np.ndarray, v: np.ndarray) -> list[tuple[np.ndarray, tuple]]:
    """(mask, colour) pairs painted in order; the first mask is the sign's outline."""
    disc = lambda r: u**2 + v**2 <= r**2  # noqa: E731
    if name == "stop":
        octagon = lambda r: _polygon(u, v, _regular(8, r, math.pi / 8))  # noqa: E731
        return [(octagon(0.97), _WHITE), (octagon(0.88), _RED), (_text(u, v, "STOP", 0.42), _WHITE)]
    if name == "yield":
        outer = [(-0.97, -0.78), (0.0, 0.92), (0.97, -0.78)]
        inner = [(0.0 + 0.55 * x, -0.21 + 0.55 * (y + 0.21)) for x, y in outer]
        return [(_polygon(u, v, outer), _RED), (_polygon(u, v, inner), _WHITE)]
    if name == "speed-limit-50":
        return [(disc(0.97), _RED), (disc(0.74), _WHITE), (_text(u, v, "50", 0.72), _BLACK)]
    if name == "no-entry":
        bar = (np.abs(u) <= 0.66) & (np.abs(v) <= 0.18)
        return [(disc(0.97), _RED), (bar, _WHITE)]
    if name == "warning":
        diamond = lambda r: _polygon(u, v, _regular(4, r, 0.0))  # noqa: E731
        return [(diamond(0.98), _BLACK), (diamond(0.84), _YELLOW), (_text(u, v, "!", 0.8), _BLACK)]
    if name in ("ahead-only", "turn-right"):
        a, b = (u, v) if name == "ahead-only" else (v, -u)  # turn-right: the arrow rotated
        shaft = (np.abs(a) <= 0.13) & (b >= -0.12) & (b <= 0.62)
        head = _polygon(a, b, [(-0.45, -0.08), (0.45, -0.08), (0.0, -0.64)])
        return [(disc(0.97), _WHITE), (disc(0.89), _BLUE), (shaft | head, _WHITE)]
    if name == "parking":
        square = lambda r: (np.abs(u) <= r) & (np.abs(v) <= r)  # noqa: E731
        return [(square(0.9), _WHITE), (square(0.82), _BLUE), (_text(u, v, "P", 1.1), _WHITE)]
    raise KeyError(name)


@functools.cache
def sign_templates(resolution: int = _TEMPLATE) -> Tensor:
    """(K, 4, R, R) RGBA templates of `SIGN_CLASSES` (alpha: inside the sign's outline)."""
    u, v = _grid(resolution)
    out = np.zeros((len(SIGN_CLASSES), 4, resolution, resolution), dtype=np.float32)
    for k, name in enumerate(SIGN_CLASSES):
        layers = _layers(name, u, v)
        for mask, colour in layers:
            out[k, :3, mask] = colour
        out[k, 3] = layers[0][0]
    return torch.from_numpy(out)


@functools.cache
def _photos() -> tuple[Tensor, ...]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        photos.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
    return tuple(photos)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _draw(n: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Every per-image random parameter, drawn up front (so chunking does not matter)."""
    size = _uniform(gen, n, 0.5, 0.9)  # sign radius / image half-side
    return {
        "size": size,
        "cx": _uniform(gen, n, -1, 1) * (1 - size) * 0.9,
        "cy": _uniform(gen, n, -1, 1) * (1 - size) * 0.9,
        "angle": _uniform(gen, n, -15, 15) * math.pi / 180,
        "yaw": torch.cos(_uniform(gen, n, -50, 50) * math.pi / 180),
        "tilt": torch.cos(_uniform(gen, n, -30, 30) * math.pi / 180),
        "px": _uniform(gen, n, -0.25, 0.25),
        "py": _uniform(gen, n, -0.25, 0.25),
        "photo": torch.randint(len(PHOTOS), (n,), generator=gen),
        "crop": _uniform(gen, n, 0.08, 0.4),  # crop half-side / photo's shorter half-side
        "crop_x": _uniform(gen, n, -1, 1),
        "crop_y": _uniform(gen, n, -1, 1),
        "flip": torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double(),
        "sign_gain": _uniform(gen, n, 0.6, 1.15),
        "shade": _uniform(gen, n, -0.35, 0.35),
        "shade_dir": _uniform(gen, n, 0, 2 * math.pi),
        "gain": _uniform(gen, n, 0.7, 1.2),
        "cast": 1 + 0.08 * (2 * torch.rand(n, 3, generator=gen, dtype=torch.float64) - 1),
        "gamma": _uniform(gen, n, 0.8, 1.25),
        "noise": _uniform(gen, n, 0.0, 0.03),
    }


def _homography_inverse(p: dict[str, Tensor]) -> Tensor:
    """(N, 3, 3): image coordinates -> template coordinates (the inverse of the sign's pose:
    perspective tilt, scaling with yaw/tilt foreshortening, rotation, translation)."""
    n = p["size"].shape[0]
    eye = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    persp, scale, rot, move = eye.clone(), eye.clone(), eye.clone(), eye.clone()
    persp[:, 2, 0], persp[:, 2, 1] = p["px"], p["py"]
    scale[:, 0, 0], scale[:, 1, 1] = p["size"] * p["yaw"], p["size"] * p["tilt"]
    cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, -sin, sin, cos
    move[:, 0, 2], move[:, 1, 2] = p["cx"], p["cy"]
    return torch.linalg.inv(move @ rot @ scale @ persp)


def _pixel_grid(side: int) -> Tensor:
    c = (torch.arange(side, dtype=torch.float64) + 0.5) / side * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)  # (side*side, 3)


def _signs(p: dict[str, Tensor], y: Tensor, side: int) -> Tensor:
    """(N, 4, side, side) RGBA: each image's template warped to its pose."""
    q = _pixel_grid(side) @ _homography_inverse(p).transpose(1, 2)  # (N, side*side, 3)
    w = q[..., 2:].clamp_min(1e-6)  # points behind the camera map far away (alpha 0)
    grid = (q[..., :2] / w).reshape(-1, side, side, 2).float()
    templates = sign_templates()
    out = torch.empty(y.shape[0], 4, side, side)
    for k in torch.unique(y).tolist():
        idx = torch.nonzero(y == k).squeeze(1)
        src = templates[k : k + 1].expand(idx.numel(), -1, -1, -1)
        out[idx] = F.grid_sample(src, grid[idx], align_corners=False, padding_mode="zeros")
    return out


def _backgrounds(p: dict[str, Tensor], side: int) -> Tensor:
    """(N, 3, side, side): a square, randomly placed and flipped crop of a bundled photo."""
    out = torch.empty(p["photo"].shape[0], 3, side, side)
    for b, photo in enumerate(_photos()):
        idx = torch.nonzero(p["photo"] == b).squeeze(1)
        if idx.numel() == 0:
            continue
        h, w = photo.shape[1:]
        half_y = p["crop"][idx]  # in the photo's normalised coordinates along its shorter side
        half_x = half_y * min(h, w) / w
        half_y = half_y * min(h, w) / h
        theta = torch.zeros(idx.numel(), 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 1, 1] = half_x * p["flip"][idx], half_y
        theta[:, 0, 2] = p["crop_x"][idx] * (1 - half_x)
        theta[:, 1, 2] = p["crop_y"][idx] * (1 - half_y)
        grid = F.affine_grid(theta.float(), [idx.numel(), 3, side, side], align_corners=False)
        src = photo[None].expand(idx.numel(), -1, -1, -1)
        out[idx] = F.grid_sample(src, grid, align_corners=False, padding_mode="border")
    return out


def _light(p: dict[str, Tensor], signs: Tensor, bg: Tensor, side: int) -> Tensor:
    """Composite the lit sign over the background, then the camera's gain, cast and gamma."""
    f = {k: v.float() for k, v in p.items() if k != "photo"}
    xy = _pixel_grid(side)[:, :2].float().T.reshape(2, side, side)
    along = (
        torch.cos(f["shade_dir"])[:, None, None] * xy[0]
        + torch.sin(f["shade_dir"])[:, None, None] * xy[1]
    )
    light = f["sign_gain"][:, None, None] * (1 + f["shade"][:, None, None] * along)
    alpha = signs[:, 3:]
    img = alpha * signs[:, :3] * light[:, None] + (1 - alpha) * bg
    img = img * f["gain"][:, None, None, None] * f["cast"][:, :, None, None]
    return img.clamp(0, 1) ** f["gamma"][:, None, None, None]


def render_signs(
    n_per_class: int = PER_CLASS, *, seed: int = SIGNS_SEED, side: int = SIDE
) -> SignImages:
    """`n_per_class` images of each class in `SIGN_CLASSES`, ordered by class, (N, 3, side,
    side) in [0, 1]; a pure function of the arguments (same seed, same bytes)."""
    if n_per_class < 1 or side < 4:
        raise BadInput(
            f"render_signs needs n_per_class >= 1 and side >= 4, got {n_per_class} and {side}"
        )
    gen = make_generator(seed)
    y = torch.arange(len(SIGN_CLASSES)).repeat_interleave(n_per_class)
    params = _draw(y.shape[0], gen)
    noise = torch.randn(y.shape[0], 3, side, side, generator=gen)
    xs, alphas = [], []
    big = side * _RENDER
    for start in range(0, y.shape[0], _CHUNK):
        part = {k: v[start : start + _CHUNK] for k, v in params.items()}
        signs = _signs(part, y[start : start + _CHUNK], big)
        img = F.avg_pool2d(_light(part, signs, _backgrounds(part, big), big), _RENDER)
        alphas.append(F.avg_pool2d(signs[:, 3:], _RENDER))
        xs.append(img + part["noise"].float()[:, None, None, None] * noise[start : start + _CHUNK])
    return SignImages(x=torch.cat(xs).clamp(0, 1), y=y, alpha=torch.cat(alphas).clamp(0, 1))


@functools.cache
def _builtin() -> SignImages:
    return render_signs(PER_CLASS, seed=SIGNS_SEED, side=SIDE)


def _split_index(split: str) -> Tensor:
    if split == "all":
        return torch.arange(_builtin().y.shape[0])
    train_idx, test_idx = stratified_split(_builtin().y.numpy())
    return torch.from_numpy(train_idx if split == "train" else test_idx)


def sign_alpha(split: str) -> Tensor:
    """(N, 1, 32, 32): the sign's coverage of each pixel of the built-in "signs" `split`, in
    the same order as `load_signs(split).x` (confine a sticker mask to the sign with it)."""
    return _builtin().alpha[_split_index(split)]


def load_signs(split: str) -> Dataset:
    """The "signs" built-in: `split` is "train", "test" or "all" (stratified, seeded)."""
    images, idx = _builtin(), _split_index(split)
    meta = split_meta(
        f"adversa.data.signs (synthetic road signs, seed {SIGNS_SEED}, "
        f"backgrounds from skimage.data)",
        split,
        images.y.shape[0],
    )
    return Dataset(
        name="signs",
        x=images.x[idx],
        y=images.y[idx],
        num_classes=len(SIGN_CLASSES),
        kind="image",
        class_names=SIGN_CLASSES,
        meta=meta,
    )
