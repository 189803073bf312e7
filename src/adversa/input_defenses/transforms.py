"""Input transformations as `nn.Module`s: put one in front of a classifier and the pair is
still a model (`nn.Sequential(transform, classifier)`), evaluated like any other.

- `BitDepth(bits)`: colour-depth reduction, a feature squeezer (Xu, Evans & Qi 2018, "Feature
  Squeezing", arXiv:1704.01155). Rounding has zero gradient almost everywhere.
- `MedianSmoothing(size)`: the other squeezer of Xu et al., a size x size median filter.
- `SpatialSmoothing(sigma)`: a Gaussian blur, the smooth counterpart.
- `JPEG(quality)`: a real JPEG round trip through Pillow (Guo, Rana, Cisse & van der Maaten
  2018, "Countering Adversarial Images using Input Transformations", arXiv:1711.00117).
- `TVM(weight)`: total-variation denoising (Rudin, Osher & Fatemi 1992), solved with
  Chambolle's (2004) projection algorithm, as in Guo et al. (without their pixel dropout; chain
  `PixelDropout` in front for that).

The modules marked `non_differentiable = True` compute their output outside autograd (or
through rounding) and pass back a zero gradient, which is the true derivative of a piecewise
constant map; that is what a naive gradient attack sees. `adversa.attacks.adaptive.bpda` finds
them by that marker and replaces the backward pass by the identity (Athalye, Carlini & Wagner
2018, arXiv:1802.00420), the adaptive attack. Every module keeps the input's shape, dtype and
device, and validates its parameters with `BadInput` naming the argument and value.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.errors import BadInput, ShapeError

_JPEG_MAX_SIDE = 65_000  # JPEG images are at most 65,535 pixels on a side


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise BadInput(f"bounds must be (lo, hi) with lo < hi, got {bounds!r}")
    return lo, hi


def _require_images(x: Tensor, who: str) -> None:
    if x.dim() != 4:
        raise ShapeError(
            f"{who} needs images shaped (B, C, H, W), got a tensor of shape {tuple(x.shape)}"
        )


def _zero_grad_output(x: Tensor, out: Tensor) -> Tensor:
    """`out` in the forward pass, a zero gradient towards `x` in the backward pass."""
    return out.detach() + x * 0 if x.requires_grad else out.detach()


class BitDepth(nn.Module):
    """Reduce each value to `bits` bits: round((x - lo) / (hi - lo) * (2^bits - 1)) levels.

    Xu et al. 2018 use 1 bit on MNIST, 4-5 bits on CIFAR-10. Cost: elementwise, O(input).
    """

    non_differentiable = True

    def __init__(self, bits: int, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise BadInput(f"bits must be an integer in 1..8, got {bits!r}")
        self.bits = bits
        self.bounds = _check_bounds(bounds)

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = self.bounds
        levels = 2**self.bits - 1
        unit = ((x - lo) / (hi - lo)).clamp(0, 1)
        return torch.round(unit * levels) / levels * (hi - lo) + lo

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class MedianSmoothing(nn.Module):
    """A size x size median filter per channel, with reflected borders (Xu et al. 2018 use 2x2
    and 3x3). Even sizes take one more pixel below and right, and the lower median.

    Differentiable: the gradient flows to the pixel chosen as median. Cost: O(size^2) per pixel.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 15:
            raise BadInput(f"size must be an integer in 2..15, got {size!r}")
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        _require_images(x, "MedianSmoothing")
        b, c, h, w = x.shape
        before, after = (self.size - 1) // 2, self.size // 2
        mode = "reflect" if min(h, w) > self.size else "replicate"
        padded = F.pad(x.reshape(b * c, 1, h, w), (before, after, before, after), mode=mode)
        patches = F.unfold(padded, self.size)  # (B*C, size^2, H*W)
        return patches.median(dim=1).values.view(b, c, h, w)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class SpatialSmoothing(nn.Module):
    """A Gaussian blur with standard deviation `sigma` pixels (kernel 2 * ceil(2 sigma) + 1),
    per channel, reflected borders. Differentiable. Cost: O(kernel^2) per pixel."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not isinstance(sigma, int | float) or not 0 < float(sigma) <= 10:
            raise BadInput(f"sigma must be a number in (0, 10], got {sigma!r}")
        self.sigma = float(sigma)
        radius = math.ceil(2 * self.sigma)
        grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-(grid**2) / (2 * self.sigma**2))
        self.register_buffer("kernel", (kernel / kernel.sum()).float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        _require_images(x, "SpatialSmoothing")
        b, c, h, w = x.shape
        k = self.kernel.to(device=x.device, dtype=x.dtype)
        r = k.numel() // 2
        mode = "reflect" if min(h, w) > r else "replicate"
        flat = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode=mode)
        flat = F.conv2d(flat, k.view(1, 1, 1, -1))
        flat = F.conv2d(flat, k.view(1, 1, -1, 1))
        return flat.view(b, c, h, w)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


class JPEG(nn.Module):
    """JPEG compression and decompression at `quality` (1..100) through Pillow's libjpeg.

    Inputs are quantised to 8 bits first. One or three channels (grayscale or RGB). Pillow
    encodes one image at a time, so the batch is tiled into one mosaic image, each tile padded
    by edge replication to whole 8x8 blocks as libjpeg pads a single image: one encode and one
    decode per batch, identical to per-image round trips (blocks never mix). Colour with chroma
    subsampling ("4:2:0", Pillow's default) upsamples chroma across block edges, so it is coded
    image by image. The output carries a zero gradient (non-differentiable; use BPDA).

    Cost: one libjpeg round trip over the batch's pixels, on the CPU (a GPU batch is copied).
    """

    non_differentiable = True

    def __init__(
        self,
        quality: int = 75,
        subsampling: str = "4:2:0",
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise BadInput(f"quality must be an integer in 1..100, got {quality!r}")
        if subsampling not in SUBSAMPLING:
            raise BadInput(
                f"subsampling must be one of {', '.join(SUBSAMPLING)}, got {subsampling!r}"
            )
        self.quality = quality
        self.subsampling = subsampling
        self.bounds = _check_bounds(bounds)

    def forward(self, x: Tensor) -> Tensor:
        _require_images(x, "JPEG")
        if x.shape[1] not in (1, 3):
            raise ShapeError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
        lo, hi = self.bounds
        with torch.no_grad():
            unit = ((x.detach() - lo) / (hi - lo)).clamp(0, 1)
            pixels = (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            coded = self.roundtrip(pixels)
            out = torch.from_numpy(coded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
            out = out / 255 * (hi - lo) + lo
        return _zero_grad_output(x, out)

    def roundtrip(self, pixels: np.ndarray) -> np.ndarray:
        """JPEG-code a uint8 batch shaped (B, H, W, C); returns the decoded batch."""
        if pixels.shape[0] == 0:
            return pixels.copy()
        if pixels.shape[3] == 1 or self.subsampling == "4:4:4":
            return self._mosaic(pixels)
        return np.stack([self._code(img) for img in pixels])

    def _code(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        squeeze = image.ndim == 3 and image.shape[2] == 1
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if squeeze else image).save(
            buffer, format="JPEG", quality=self.quality, subsampling=SUBSAMPLING[self.subsampling]
        )
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out = np.asarray(decoded.convert("L" if squeeze else "RGB"))
        return out[:, :, None] if squeeze else out

    def _mosaic(self, pixels: np.ndarray) -> np.ndarray:
        n, h, w, c = pixels.shape
        th, tw = -(-h // 8) * 8, -(-w // 8) * 8
        tiles = np.pad(pixels, ((0, 0), (0, th - h), (0, tw - w), (0, 0)), mode="edge")
        cols = max(1, min(n, math.ceil(math.sqrt(n)), _JPEG_MAX_SIDE // tw))
        rows_max = max(1, _JPEG_MAX_SIDE // th)
        chunk = cols * rows_max
        if n > chunk:
            return np.concatenate([self._mosaic(pixels[i : i + chunk]) for i in range(0, n, chunk)])
        rows = -(-n // cols)
        filler = np.zeros((rows * cols - n, th, tw, c), dtype=np.uint8)
        grid = np.concatenate([tiles, filler]).reshape(rows, cols, th, tw, c)
        image = grid.transpose(0, 2, 1, 3, 4).reshape(rows * th, cols * tw, c)
        decoded = self._code(image).reshape(rows, th, cols, tw, c).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(decoded.reshape(-1, th, tw, c)[:n, :h, :w])

    def extra_repr(self) -> str:
        return f"quality={self.quality}, subsampling={self.subsampling!r}"


class TVM(nn.Module):
    """Total-variation minimisation: argmin_u ||u - x||^2 / 2 + weight * TV(u) per channel
    (isotropic TV), by `steps` iterations of Chambolle's projection algorithm (2004), then
    clipped to the bounds. Larger `weight` smooths more (0.03-0.1 for images in [0, 1]).

    Computed outside autograd, as a solver (Guo et al. 2018); the output carries a zero
    gradient (non-differentiable; use BPDA). Cost: `steps` x O(input).
    """

    non_differentiable = True

    def __init__(
        self, weight: float = 0.05, steps: int = 50, bounds: tuple[float, float] = (0.0, 1.0)
    ) -> None:
        super().__init__()
        if not isinstance(weight, int | float) or not 0 < float(weight) <= 10:
            raise BadInput(f"weight must be a number in (0, 10], got {weight!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise BadInput(f"steps must be an integer in 1..1000, got {steps!r}")
        self.weight = float(weight)
        self.steps = steps
        self.bounds = _check_bounds(bounds)

    def forward(self, x: Tensor) -> Tensor:
        _require_images(x, "TVM")
        with torch.no_grad():
            f = x.detach()
            px, py = torch.zeros_like(f), torch.zeros_like(f)
            tau = 0.248  # Chambolle (2004): proven for tau <= 1/8, converges up to 1/4
            for _ in range(self.steps):
                gx, gy = _grad(_div(px, py) - f / self.weight)
                norm = 1 + tau * torch.sqrt(gx**2 + gy**2)
                px, py = (px + tau * gx) / norm, (py + tau * gy) / norm
            out = (f - self.weight * _div(px, py)).clamp(*self.bounds)
        return _zero_grad_output(x, out)

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, steps={self.steps}"


def _grad(u: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences along W and H, zero at the last column / row."""
    gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return gx, gy


def _div(px: Tensor, py: Tensor) -> Tensor:
    """The divergence, the negative adjoint of `_grad`."""
    dx = torch.cat([px[..., :, :1], px[..., :, 1:-1] - px[..., :, :-2], -px[..., :, -2:-1]], -1)
    dy = torch.cat([py[..., :1, :], py[..., 1:-1, :] - py[..., :-2, :], -py[..., -2:-1, :]], -2)
    return dx + dy
