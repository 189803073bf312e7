"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search", arXiv:1912.00049), Linf
and L2, score-based.

Random search on the margin loss (best other score minus the true one; the target's margin
when targeted). Every iteration proposes, for each still-robust sample, a change confined to
one random square window (its own position per sample) and keeps it if the margin rises:

- Linf: the window is set to `x ± eps` with one random sign per channel; the start is the
  paper's vertical stripes (`x ± eps`, one sign per channel and column).
- L2: the mass of two random windows is moved into the first one, on top of a fresh
  "pseudo-Gaussian" pattern of two opposite-signed nested-square bumps, and the whole
  perturbation is rescaled to norm eps; the start is the paper's 5x5 grid of such patterns.

The window covers a share `p` of the pixels; `p` starts at `p_init` and halves at iterations
10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10,000-query run, rescaled to
`queries` (AutoAttack's schedule; AutoAttack's standard version uses p_init=0.8 and 5000
queries, our defaults). Restarts are batched as extra rows; a sample leaves the batch once
one of its rows fools the model.

Input shapes: (B, C, H, W) images use square windows. Other inputs are viewed as
`image_shape` when it is given (e.g. `(1, 8, 8)` for flattened 8x8 digits); without it, flat
inputs (B, D) are treated as one-pixel-high strips (B, 1, 1, D) and the "square" becomes a
run of `round(p * D)` consecutive features. Any other shape raises `ShapeError`.

The attack only queries scores: given a full `Model` it queries it through a scores-only
view, so it never runs a backward pass. Cost per sample: at most `restarts * queries`
queries (the clean check, then per restart one query for the start and `queries - 2` search
steps), plus the harness's final verification.

Example::

    threat = ThreatModel(norm="linf", eps=0.3)
    result = get_attack("square", threat, queries=1000)(model.scores_only(), x, y)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.errors import ShapeError, require
from adversa.losses import get_loss, is_adversarial
from adversa.model import Access, Model
from adversa.threat import ThreatModel

_HALVING_AT = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10,000-query run


@register_attack("square")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Square(AttackBase):
    access = Access.SCORES
    norms = ("linf", "l2")

    queries: int = 5000  # query budget per sample and restart, the clean check included
    p_init: float = 0.8  # initial share of pixels a window covers (AutoAttack's standard)
    restarts: int = 1  # independent runs, batched as extra rows
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) to view each input as

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isfinite(self.threat.eps), "square needs a finite eps, got inf")
        require(self.queries >= 2, f"queries must be >= 2, got {self.queries}")
        require(0 < self.p_init <= 1, f"p_init must be in (0, 1], got {self.p_init}")
        require(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}")
        require(
            self.image_shape is None
            or (len(self.image_shape) == 3 and all(int(n) >= 1 for n in self.image_shape)),
            f"image_shape must be (C, H, W) with positive sizes, got {self.image_shape}",
        )

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        loss_fn = get_loss("margin", self.threat.targeted)
        shape = x.shape
        img = _as_image(x, self.image_shape)

        def query(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
            scores = model(z.reshape(-1, *shape[1:]))  # a scores-only view (harness)
            return loss_fn(scores, labels), is_adversarial(scores, labels, self.threat.targeted)

        done = query(img, y)[1]
        owner = torch.nonzero(~done).squeeze(1).repeat(self.restarts)
        if owner.numel() == 0:
            return x
        x_rows, y_rows = img[owner], y[owner]
        start = _init_linf if self.threat.norm == "linf" else _init_l2
        best = start(x_rows, self.threat.eps, gen).clamp(*self.threat.bounds)
        best_loss, fooled = query(best, y_rows)
        done[owner[fooled]] = True
        step = _step_linf if self.threat.norm == "linf" else _step_l2

        for i in range(self.queries - 2):
            rows = torch.nonzero(~done[owner]).squeeze(1)
            if rows.numel() == 0:
                break
            p = _p_schedule(self.p_init, i, self.queries)
            cand = step(x_rows[rows], best[rows], self.threat, p, gen)
            loss, fool = query(cand, y_rows[rows])
            better = fool | (loss > best_loss[rows])
            best[rows] = torch.where(better.view(-1, 1, 1, 1), cand, best[rows])
            best_loss[rows] = torch.where(better, loss, best_loss[rows])
            fooled[rows] |= fool
            done[owner[rows[fool]]] = True

        # Per sample, the row that fools the model, else the one with the highest margin.
        n = owner.numel() // self.restarts
        score = torch.where(fooled, torch.inf, best_loss).view(self.restarts, n)
        pick = score.argmax(0) * n + torch.arange(n, device=x.device)
        out = img.clone()
        out[owner[:n]] = best[pick]
        return out.reshape(shape)


def _as_image(x: Tensor, image_shape: tuple[int, int, int] | None) -> Tensor:
    """View x as (B, C, H, W): via `image_shape`, as is if 4-D, or (B, 1, 1, D) if flat."""
    if image_shape is not None:
        if math.prod(image_shape) != x[0].numel():
            raise ShapeError(
                f"image_shape {tuple(image_shape)} holds {math.prod(image_shape)} values, "
                f"but each input has {x[0].numel()} (shape {tuple(x.shape[1:])})"
            )
        return x.reshape(x.shape[0], *image_shape)
    if x.dim() == 4:
        return x
    if x.dim() == 2:
        return x.reshape(x.shape[0], 1, 1, x.shape[1])
    raise ShapeError(
        f"square needs images (B, C, H, W) or flat inputs (B, D), got shape {tuple(x.shape)}; "
        "pass image_shape=(C, H, W) to view each input as an image"
    )


def _p_schedule(p_init: float, i: int, queries: int) -> float:
    """The share of pixels a window covers at iteration i (AutoAttack's rescaled schedule)."""
    it = int(i / queries * 10000)
    halvings = sum(it > bound for bound in _HALVING_AT)
    return p_init / 2**halvings


def _window(p: float, h: int, w: int, min_size: int = 1) -> tuple[int, int]:
    """Window (height, width) covering a share p of the h*w pixels: a square, or a run of
    pixels on a one-pixel-high strip."""
    if h == 1:
        return 1, min(max(round(p * w), min_size), w)
    s = max(round(math.sqrt(p * h * w)), min_size)
    if min_size > 1 and s % 2 == 0:
        s += 1  # the paper's L2 windows have odd sides
    s = min(s, h, w)
    return s, s


def _window_mask(
    n: int, h: int, w: int, size: tuple[int, int], gen: torch.Generator, like: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """A random window per row: its top-left corner (n, 1, 1, 1) pair and a bool mask
    (n, 1, h, w), built by comparing coordinate ranges, no Python loop over rows."""
    sh, sw = size
    top = torch.randint(0, h - sh + 1, (n, 1, 1, 1), generator=gen, device=like.device)
    left = torch.randint(0, w - sw + 1, (n, 1, 1, 1), generator=gen, device=like.device)
    rows = torch.arange(h, device=like.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=like.device).view(1, 1, 1, w)
    mask = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
    return top, left, mask


def _signs(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    bits = torch.randint(0, 2, shape, generator=gen, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def _init_linf(x: Tensor, eps: float, gen: torch.Generator) -> Tensor:
    """Vertical stripes: x + eps * (one random sign per sample, channel and column)."""
    b, c, _, w = x.shape
    return x + eps * _signs((b, c, 1, w), gen, x)


def _step_linf(
    x: Tensor, best: Tensor, threat: ThreatModel, p: float, gen: torch.Generator
) -> Tensor:
    """Set one random window per row to x + eps * (a random sign per channel), in the box."""
    b, c, h, w = x.shape
    _, _, mask = _window_mask(b, h, w, _window(p, h, w), gen, x)
    shift = threat.eps * _signs((b, c, 1, 1), gen, x)
    cand = threat.clip(torch.where(mask, x + shift, best))
    # A proposal that changes nothing wastes a query: flip its signs (the paper resamples).
    same = (cand == best).flatten(1).all(1).view(-1, 1, 1, 1)
    return torch.where(mask & same, threat.clip(x - shift), cand)


def _nested_squares(a: int, b: int, like: Tensor) -> Tensor:
    """An (a, b) bump: the sum of centred nested rectangles k = 0, 1, ... weighted 1/(k+1)^2,
    scaled to unit L2 norm (the paper's `eta_rectangles`)."""
    if a == 0 or b == 0:
        return like.new_zeros((a, b))
    rows = (torch.arange(a, device=like.device) - a // 2).abs().view(a, 1)
    cols = (torch.arange(b, device=like.device) - b // 2).abs().view(1, b)
    ring = torch.maximum(rows, cols)  # cell (i, j) lies in every rectangle k >= ring
    levels = max(a // 2, b // 2) + 1
    weights = 1.0 / torch.arange(1, levels + 1, device=like.device, dtype=like.dtype) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum of weights[k:]
    bump = tail[ring]
    return bump / bump.norm()


def _pattern(sh: int, sw: int, like: Tensor) -> Tensor:
    """The paper's pseudo-Gaussian window pattern `eta`: two bumps of opposite sign, stacked
    along the longer side, unit L2 norm."""
    if sh >= 2:
        halves = (_nested_squares(sh // 2, sw, like), -_nested_squares(sh - sh // 2, sw, like))
        eta = torch.cat(halves, 0)
    else:
        halves = (_nested_squares(sh, sw // 2, like), -_nested_squares(sh, sw - sw // 2, like))
        eta = torch.cat(halves, 1)
    return eta / eta.norm()


def _placed(eta: Tensor, top: Tensor, left: Tensor, mask: Tensor, gen: torch.Generator) -> Tensor:
    """`eta` placed at each row's window, zero elsewhere, shape (n, 1, h, w); square patterns
    are transposed for a random half of the rows (as in the paper)."""
    sh, sw = eta.shape
    h, w = mask.shape[-2:]
    rel_r = (torch.arange(h, device=eta.device).view(1, 1, h, 1) - top).clamp(0, sh - 1)
    rel_c = (torch.arange(w, device=eta.device).view(1, 1, 1, w) - left).clamp(0, sw - 1)
    placed = eta[rel_r, rel_c]
    if sh == sw:
        flip = torch.rand((mask.shape[0], 1, 1, 1), generator=gen, device=eta.device) > 0.5
        placed = torch.where(flip, eta[rel_c, rel_r], placed)
    return placed * mask


def _norm(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    return t.square().sum(dims, keepdim=True).sqrt()


def _init_l2(x: Tensor, eps: float, gen: torch.Generator) -> Tensor:
    """A grid of tiles a fifth of the side wide (centred, as in the paper), each holding the
    `eta` pattern with a random sign per channel and tile; scaled to norm eps."""
    b, c, h, w = x.shape
    th, tw = max(h // 5, 1), max(w // 5, 1)
    off_h, off_w = max((h - 5 * th) // 2, 0), max((w - 5 * tw) // 2, 0)
    tiles_h, tiles_w = h // th, w // tw
    r = torch.arange(h, device=x.device) - off_h
    q = torch.arange(w, device=x.device) - off_w
    tile_r, tile_c = (r // th).clamp(0, tiles_h - 1), (q // tw).clamp(0, tiles_w - 1)
    inside = ((r >= 0) & (r // th < tiles_h)).view(h, 1) & ((q >= 0) & (q // tw < tiles_w))
    eta = _pattern(th, tw, x)
    rel_r, rel_c = (r % th).view(h, 1), (q % tw).view(1, w)
    pattern = eta[rel_r, rel_c]
    if th == tw:
        flip = torch.rand((b, 1, tiles_h, tiles_w), generator=gen, device=x.device) > 0.5
        flip = flip[:, :, tile_r.view(h, 1), tile_c.view(1, w)]
        pattern = torch.where(flip, eta[rel_c.view(1, w), rel_r.view(h, 1)], pattern)
    signs = _signs((b, c, tiles_h, tiles_w), gen, x)[:, :, tile_r.view(h, 1), tile_c.view(1, w)]
    delta = pattern * signs * inside
    return x + eps * delta / _norm(delta, (1, 2, 3)).clamp_min(1e-12)


def _step_l2(
    x: Tensor, best: Tensor, threat: ThreatModel, p: float, gen: torch.Generator
) -> Tensor:
    """Move the perturbation mass of two random windows into the first, on top of a fresh
    `eta` pattern with random channel signs; rescale the whole perturbation to norm eps."""
    b, c, h, w = x.shape
    eps = threat.eps
    size = _window(p, h, w, min_size=3)
    top, left, mask1 = _window_mask(b, h, w, size, gen, x)
    _, _, mask2 = _window_mask(b, h, w, size, gen, x)
    delta = best - x
    spare = (eps**2 - _norm(delta, (1, 2, 3)).square()).clamp_min(0) / c
    mass = _norm(delta * (mask1 | mask2), (2, 3)).square()  # (b, c, 1, 1)
    old = delta * mask1
    new = _placed(_pattern(*size, x), top, left, mask1, gen) * _signs((b, c, 1, 1), gen, x)
    new = new + old / _norm(old, (2, 3)).clamp_min(1e-12)
    new = new / _norm(new, (2, 3)).clamp_min(1e-12) * (spare + mass).sqrt()
    delta = torch.where(mask1, new, delta.masked_fill(mask2, 0))
    return threat.clip(x + eps * delta / _norm(delta, (1, 2, 3)).clamp_min(1e-12))
