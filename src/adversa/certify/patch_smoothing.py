"""Certified accuracy against adversarial patches by (de)randomized smoothing (Levine & Feizi
2020, "(De)Randomized Smoothing for Certifiable Defense against Patch Attacks", NeurIPS,
arXiv:2002.10733), checked against our own patch attack.

The smoothed classifier counts the base classifier's votes over every ablation position
(`adversa.certify.ablation`: all W column bands, or all H * W blocks, wrapping around the
edges) and predicts the class with the most votes, ties going to the smaller class index
(torch's argmax returns the first maximum; the paper's code breaks ties the same way). A
position votes either for its argmax class (`threshold=None`) or, as in the paper's
experiments (the authors' code defaults to a threshold of 0.2), for every class whose
softmax is >= `threshold` (`THRESHOLD`): several classes, or none.

The certificate, for either vote. Position p's vote is a vector v_p in {0, 1}^K that
depends only on the pixels p keeps, and n = sum_p v_p. An m x m patch changes only the
pixels of the positions whose band or block meets it, at most Delta = m + b - 1 of them for
columns of width b ((m + b - 1)^2 for b x b blocks); every other v_p is unchanged. At a
changed position, each coordinate of v_p moves by -1, 0 or +1, so for any two classes c, c'
the difference v_p[c] - v_p[c'] moves by at most 2 (e.g. c loses its vote, c' gains one);
thresholding does not change this, because each position still adds at most 1 to each class.
Hence n_c - n_c' falls by at most 2 Delta under any such patch, and the prediction c stays c
when, for every other class c',
    n_c - n_c' > 2 Delta,  or  n_c - n_c' = 2 Delta and c < c'
(after the worst case c' at most ties with c, and the tie still goes to c). A point is
certified at size m when this holds and c is its label. (The test suite checks this bound
by brute force: every vote vector of the changed positions, for small K.)

The check (`attack=PatchAttack(...)`): every point the smoothed classifier gets right is
attacked with PGD (from the registry) inside an m x m square (`MaskedThreat`, linf with eps
the box's width: any colour inside the square), placed at each corner of a grid over the
image; PGD ascends the smoothed classifier's differentiable surrogate (log of the mean base
softmax over positions), and each result is judged by the exact vote count. A point is
broken when the vote count changes its prediction at some location; a certified point broken
is a bug (a warning starting with "BUG").

Cost: N * P forward passes of the base (P positions) for the votes; the check adds, per
attacked point and location, `steps` forward and backward passes of the surrogate (each P
passes of the base) and P forward passes for the verdict.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from adversa.attacks import get_attack
from adversa.certify.ablation import (
    ABLATIONS,
    BUDGET,
    affected,
    check_ablation,
    num_positions,
    soft_vote,
    vote_tallies,
)
from adversa.errors import BadInput, describe, is_integer, is_real
from adversa.model import Model
from adversa.physical.masked import MaskedThreat

ProgressFn = Callable[[str, int, int], None]
THRESHOLD = 0.2  # softmax threshold of a vote: the default of Levine & Feizi's code


def certified(counts: Tensor, delta: int) -> tuple[Tensor, Tensor]:
    """(prediction, certified) from vote counts (B, K): the smoothed prediction (ties to the
    smaller index) and whether no change of `delta` positions can alter it."""
    pred = counts.argmax(1)
    top = counts.gather(1, pred[:, None])
    gap = top - counts - 2 * delta  # (B, K); at c' = pred: -2 delta
    classes = torch.arange(counts.shape[1], device=counts.device)
    wins = (gap > 0) | ((gap == 0) & (classes[None, :] > pred[:, None]))
    wins |= classes[None, :] == pred[:, None]
    return pred, wins.all(1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchAttack:
    """The check's attack: PGD on the surrogate inside a square at each grid location."""

    steps: int = 20  # PGD steps per location
    grid: int = 3  # locations per axis (grid x grid squares, corners and centre for 3)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "grid"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise BadInput(f"{name} must be an integer >= 1, got {describe(value)}")

    def describe(self) -> str:
        return (
            f"pgd in an m x m square (linf, any value), {self.steps} steps on the soft-vote "
            f"surrogate, {self.grid}x{self.grid} locations, judged by the vote count"
        )


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class PatchCertResult:
    """Per patch side in `sizes`: `certified[i]` and, with the check, `robust[i]` (bool, n:
    correct and not broken by the attack), `delta[i]` the positions such a patch touches."""

    ablation: str
    band: int
    sizes: tuple[int, ...]
    delta: tuple[int, ...]
    positions: int
    image_size: tuple[int, int]  # (H, W)
    y: Tensor
    counts: Tensor  # (n, K) votes
    top1: Tensor  # (n, K) positions where each class is the base classifier's argmax
    threshold: float | None  # a position votes for classes with softmax >= it; None: argmax
    prediction: Tensor  # the smoothed prediction
    certified: tuple[Tensor, ...]
    robust: tuple[Tensor, ...] | None
    attack: str | None
    warnings: tuple[str, ...]
    seconds: float
    attack_seconds: tuple[float, ...]
    forward: int  # base classifier passes of the certification (per image and position)
    seed: int

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def smoothed_accuracy(self) -> float:
        return float((self.prediction == self.y).float().mean())

    @property
    def base_accuracy(self) -> float:
        """The base classifier's (argmax) accuracy over every (point, position) pair."""
        right = self.top1.gather(1, self.y[:, None]).squeeze(1).float()
        return float((right / self.positions).mean())

    def certified_at(self, size: int) -> Tensor:
        """Certified points for any m x m patch with m = `size` (from the counted votes)."""
        delta = affected(self.ablation, self.band, self.image_size, size)
        pred, ok = certified(self.counts, delta)
        return ok & (pred == self.y)

    def violations(self, i: int) -> Tensor:
        if self.robust is None:
            return torch.empty(0, dtype=torch.long)
        return torch.nonzero(self.certified[i] & ~self.robust[i]).squeeze(1).cpu()


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchSmoothing:
    """How to smooth and what to certify: `ablation` ("column" or "block"), `band` (b), the
    patch sides `sizes` in pixels, the input `bounds`, `budget` ablated images per pass and
    the vote's softmax `threshold` in (0, 1] (None: each position votes for its argmax)."""

    ablation: str = "column"
    band: int = 2
    sizes: tuple[int, ...] = (5,)
    bounds: tuple[float, float] = (0.0, 1.0)
    budget: int = BUDGET
    threshold: float | None = THRESHOLD

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise BadInput(f"ablation must be one of {', '.join(ABLATIONS)}, got {self.ablation!r}")
        if not is_integer(self.band) or self.band < 1:
            raise BadInput(f"band must be an integer >= 1, got {describe(self.band)}")
        sizes = self.sizes
        if isinstance(sizes, str) or not isinstance(sizes, tuple | list) or not sizes:
            raise BadInput(f"sizes must be a non-empty tuple of integers, got {describe(sizes)}")
        if not all(is_integer(s) and s >= 1 for s in sizes):
            raise BadInput(f"sizes must be integers >= 1 (patch sides in pixels), got {sizes!r}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        if not is_integer(self.budget) or self.budget < 1:
            raise BadInput(f"budget must be an integer >= 1, got {describe(self.budget)}")
        t = self.threshold
        if t is not None and not (is_real(t) and 0 < t <= 1):
            raise BadInput(
                f"threshold must be a softmax level in (0, 1] or None (argmax votes), "
                f"got {describe(t)}"
            )

    def check_fits(self, shape: Sequence[int]) -> tuple[int, int]:
        """The images' (H, W); `BadInput` when they are not images or the band or a patch
        does not fit them."""
        if len(shape) != 3:
            raise BadInput(f"patch smoothing needs (C, H, W) images, got shape {tuple(shape)}")
        size = (int(shape[1]), int(shape[2]))
        check_ablation(self.ablation, self.band, size)
        for s in self.sizes:
            if s > min(size):
                raise BadInput(
                    f"size {s}: a {s}x{s} patch does not fit {size[0]}x{size[1]} images; "
                    f"expected a side of 1 to {min(size)} pixels"
                )
        return size

    def votes(self, model: Model, x: Tensor) -> Tensor:
        """(B, K) vote counts of `model` (the base classifier, 2C channels) on `x`."""
        return self.tallies(model, x)[0]

    def tallies(self, model: Model, x: Tensor) -> tuple[Tensor, Tensor]:
        """(votes, top1) of `model` on `x`: see `adversa.certify.ablation.vote_tallies`."""
        return vote_tallies(
            model, x, self.ablation, self.band, self.bounds, self.budget, self.threshold
        )

    def surrogate(self, model: Model) -> Model:
        """The smoothed classifier's differentiable surrogate as a model on images."""
        return Model(
            _SoftVote(model.module, self), num_classes=model.num_classes, bounds=self.bounds
        )


class _SoftVote(nn.Module):
    def __init__(self, base: nn.Module, smoothing: PatchSmoothing) -> None:
        super().__init__()
        self.base = base
        self.smoothing = smoothing

    def forward(self, x: Tensor) -> Tensor:
        s = self.smoothing
        return soft_vote(self.base, x, s.ablation, s.band, s.bounds, s.budget)


def certify_patches(
    model: Model,
    x: Tensor,
    y: Tensor,
    smoothing: PatchSmoothing,
    *,
    attack: PatchAttack | None = None,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
) -> PatchCertResult:
    """Votes, predictions and certificates of (x, y) for each patch side of `smoothing`;
    with `attack`, the check of every certificate against it."""
    size = smoothing.check_fits(tuple(x.shape[1:]))
    x, y = x.to(model.device), y.to(model.device).long()
    start = time.perf_counter()
    parts = []
    with model.eval_mode():
        for first in range(0, x.shape[0], batch_size):
            parts.append(smoothing.tallies(model, x[first : first + batch_size]))
            if progress is not None:
                progress("votes", min(x.shape[0], first + batch_size), x.shape[0])
    counts = torch.cat([votes for votes, _ in parts])
    top1 = torch.cat([best for _, best in parts])
    seconds = time.perf_counter() - start
    deltas = tuple(affected(smoothing.ablation, smoothing.band, size, s) for s in smoothing.sizes)
    pred = counts.argmax(1)
    cert = tuple(certified(counts, d)[1] & (pred == y) for d in deltas)
    robust, attack_seconds, notes = None, [], []
    if attack is not None:
        robust = []
        for s, c in zip(smoothing.sizes, cert, strict=True):
            begin = time.perf_counter()
            broken = break_patches(model, x, y, pred == y, smoothing, s, attack, batch_size)
            robust.append((pred == y) & ~broken)
            attack_seconds.append(time.perf_counter() - begin)
            notes += _violations(s, c, robust[-1])
    positions = num_positions(smoothing.ablation, size)
    return PatchCertResult(
        ablation=smoothing.ablation,
        band=smoothing.band,
        sizes=smoothing.sizes,
        delta=deltas,
        positions=positions,
        image_size=size,
        y=y.cpu(),
        counts=counts.cpu(),
        top1=top1.cpu(),
        threshold=smoothing.threshold,
        prediction=pred.cpu(),
        certified=tuple(c.cpu() for c in cert),
        robust=None if robust is None else tuple(r.cpu() for r in robust),
        attack=None if attack is None else attack.describe(),
        warnings=tuple(notes),
        seconds=seconds,
        attack_seconds=tuple(attack_seconds),
        forward=x.shape[0] * positions,
        seed=0 if attack is None else attack.seed,
    )


def square_masks(size: tuple[int, int], side: int, grid: int) -> list[Tensor]:
    """(H, W) bool masks of a side x side square with its corner on a grid x grid lattice."""
    h, w = size
    rows = sorted({round(i * (h - side) / max(1, grid - 1)) for i in range(grid)})
    cols = sorted({round(j * (w - side) / max(1, grid - 1)) for j in range(grid)})
    masks = []
    for r in rows:
        for c in cols:
            mask = torch.zeros(h, w, dtype=torch.bool)
            mask[r : r + side, c : c + side] = True
            masks.append(mask)
    return masks


def break_patches(
    model: Model,
    x: Tensor,
    y: Tensor,
    todo: Tensor,
    smoothing: PatchSmoothing,
    side: int,
    attack: PatchAttack,
    batch_size: int = 256,
) -> Tensor:
    """bool (n,): the points of `todo` whose smoothed prediction (the vote count) a side x
    side patch found by `attack` changes at some grid location."""
    broken = torch.zeros_like(todo)
    surrogate = smoothing.surrogate(model)
    lo, hi = smoothing.bounds
    for k, mask in enumerate(square_masks((x.shape[-2], x.shape[-1]), side, attack.grid)):
        threat = MaskedThreat(norm="linf", eps=hi - lo, bounds=smoothing.bounds, mask=mask)
        pgd = get_attack("pgd", threat, steps=attack.steps, seed=attack.seed + k)
        left = torch.nonzero(todo & ~broken).squeeze(1)
        for first in range(0, left.numel(), batch_size):
            idx = left[first : first + batch_size]
            x_adv = pgd(surrogate, x[idx], y[idx]).x_adv
            with model.eval_mode():
                pred = smoothing.votes(model, x_adv).argmax(1)
            broken[idx] = pred != y[idx]
    return broken


def _violations(size: int, cert: Tensor, robust: Tensor) -> list[str]:
    broken = torch.nonzero(cert & ~robust).squeeze(1).tolist()
    if not broken:
        return []
    shown = ", ".join(map(str, broken[:10])) + (" ..." if len(broken) > 10 else "")
    return [
        f"BUG: size={size}: {len(broken)} point(s) certified against {size}x{size} patches "
        f"were broken by the patch attack (indices {shown}); the certificate or the vote "
        "count is wrong"
    ]
