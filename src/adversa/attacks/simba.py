"""SimBA, the simple black-box attack (Guo, Gardner, You, Wilson & Weinberger, 2019, "Simple
Black-box Adversarial Attacks", ICML, arXiv:1905.07121), score-based, L2 and Linf.

Each sample walks through a random order of an orthonormal basis, one direction `q` per step:
it queries `x_adv + step_size * q`, keeps it if the model's probability of the true class
drops (of the target class rises, when targeted), and otherwise tries `x_adv - step_size * q`
the same way. Probabilities are the softmax of the scores the model returns (logits, by the
`Model` contract). Candidates are clipped to the box; a clipped candidate equal to the current
point is skipped without a query. Two bases:

- "pixel" (SimBA): the standard basis in a random order per sample (a random permutation of
  the coordinates), any input shape;
- "dct" (SimBA-DCT): the 2-D DCT-II basis per channel of an image (B, C, H, W), or of each
  input viewed as `image_shape`; low frequencies first: the block of the lowest
  `freq_ratio` of each side's frequencies in a random order, then rings of higher
  frequencies, each in a random order (the paper's block order).

Every direction is used at most once, so after `m` accepted steps the unclipped perturbation is
a sum of `m` orthogonal vectors of norm `step_size`: its L2 norm is exactly
`sqrt(m) * step_size`, and clipping to the box only shrinks it. Under an L2 threat a sample
stops before a step would take that bound past eps (`(m + 1) * step_size^2 > eps^2`); under
Linf, with the pixel basis, every coordinate moves once by `step_size <= eps`, and with the DCT
basis a candidate outside the Linf ball is rejected without a query. A sample also stops once
fooled, when its query budget is spent, or when the basis is exhausted (one pass, as in the
paper).

Batched: every step makes one query batch for all still-running samples (`+step_size`), and a
second only for those whose first candidate was rejected (`-step_size`); no Python loop over
samples. Given a full `Model`, the attack queries it through a scores-only view: no backward
pass.

Cost per sample: at most `queries` score queries (one clean query, then at most two per step,
at most `2 * d + 1` in all for `d` input features), plus the harness's final verification.

Example::

    threat = ThreatModel(norm="l2", eps=3.0)
    result = get_attack("simba", threat, queries=1000)(model.scores_only(), x, y)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.errors import ShapeError, require
from adversa.losses import is_adversarial
from adversa.model import Access, Model

BASES = ("pixel", "dct")
_L2_STEP = 0.2  # the paper's step size for inputs in [0, 1]


@register_attack("simba", aliases=("simba-pixel",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class SimBA(AttackBase):
    access = Access.SCORES
    norms = ("l2", "linf")

    queries: int = 5000  # score queries per sample, the clean query included
    step_size: float | None = None  # None: l2 min(0.2, eps) (the paper's 0.2); linf eps
    basis: str = "pixel"  # "pixel" (SimBA) or "dct" (SimBA-DCT)
    freq_ratio: float = 0.125  # dct: share of each side's frequencies tried first
    image_shape: tuple[int, int, int] | None = None  # dct: (C, H, W) to view each input as

    def __post_init__(self) -> None:
        super().__post_init__()
        eps = self.threat.eps
        require(self.queries >= 1, f"queries must be >= 1, got {self.queries}")
        require(self.basis in BASES, f"basis must be one of {', '.join(BASES)}, got {self.basis!r}")
        require(
            self.threat.norm == "l2" or math.isfinite(eps),
            "simba under linf needs a finite eps, got inf",
        )
        require(
            self.step_size is None or self.step_size > 0,
            f"step_size must be > 0, got {self.step_size}",
        )
        require(
            self.step_size is None or eps == 0 or self.step_size <= eps,
            f"step_size must be <= eps ({eps}), got {self.step_size}",
        )
        require(0 < self.freq_ratio <= 1, f"freq_ratio must be in (0, 1], got {self.freq_ratio}")
        require(
            self.image_shape is None
            or (len(self.image_shape) == 3 and all(int(n) >= 1 for n in self.image_shape)),
            f"image_shape must be (C, H, W) with positive sizes, got {self.image_shape}",
        )

    @property
    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return min(_L2_STEP, self.threat.eps) if self.threat.norm == "l2" else self.threat.eps

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        threat, targeted = self.threat, self.threat.targeted
        step = self.resolved_step_size
        shape, n = x.shape, x.shape[0]
        flat = x.flatten(1)
        d = flat.shape[1]

        def query(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
            scores = model(z.reshape(-1, *shape[1:]))  # a scores-only view (harness)
            prob = scores.softmax(1).gather(1, labels[:, None]).squeeze(1)
            return prob, is_adversarial(scores, labels, targeted)

        prob, done = query(flat, y)
        used = torch.ones(n, dtype=torch.long, device=x.device)
        if self.queries <= 1 or bool(done.all()) or threat.eps == 0:
            return x  # eps = 0 leaves no step to take (and l2's step count would divide by 0)
        basis = _Basis(self.basis, shape, self.image_shape, self.freq_ratio, flat)
        order = basis.order(n, gen)
        delta = torch.zeros_like(flat)  # unclipped: a sum of accepted basis steps
        accepted = torch.zeros(n, dtype=torch.long, device=x.device)
        # Stop before the norm bound sqrt(m + 1) * step would pass eps (l2 only).
        max_accepted = math.inf
        if threat.norm == "l2" and math.isfinite(threat.eps):
            max_accepted = math.floor((threat.eps / step) ** 2 * (1 + 1e-9))
        tol = 1e-6 * (threat.bounds[1] - threat.bounds[0])

        for t in range(d):
            running = ~done & (used < self.queries) & (accepted < max_accepted)
            rows = torch.nonzero(running).squeeze(1)
            if rows.numel() == 0:
                break
            direction = basis.direction(order[rows, t])
            rejected = torch.ones(rows.numel(), dtype=torch.bool, device=x.device)
            for sign in (1.0, -1.0):
                sub = torch.nonzero(rejected & (used[rows] < self.queries)).squeeze(1)
                if sub.numel() == 0:
                    break
                r = rows[sub]
                cand_delta = delta[r] + sign * step * direction[sub]
                cand = threat.clip(flat[r] + cand_delta)
                current = threat.clip(flat[r] + delta[r])
                worth = (cand != current).any(1)
                if threat.norm == "linf":
                    worth &= (cand - flat[r]).abs().amax(1) <= threat.eps + tol
                sub, r, cand, cand_delta = sub[worth], r[worth], cand[worth], cand_delta[worth]
                if r.numel() == 0:
                    continue
                p_new, fooled = query(cand, y[r])
                used[r] += 1
                better = p_new > prob[r] if targeted else p_new < prob[r]
                keep = torch.nonzero(better).squeeze(1)
                r_keep = r[keep]
                delta[r_keep] = cand_delta[keep]
                prob[r_keep] = p_new[keep]
                accepted[r_keep] += 1
                done[r_keep] |= fooled[keep]
                rejected[sub[keep]] = False
        return threat.clip(flat + delta).reshape(shape)


class _Basis:
    """The orthonormal directions of one run: random order per sample and lookup by index."""

    def __init__(
        self,
        kind: str,
        shape: torch.Size,
        image_shape: tuple[int, int, int] | None,
        freq_ratio: float,
        like: Tensor,
    ) -> None:
        self.kind = kind
        self.like = like
        self.d = like.shape[1]
        if kind == "pixel":
            return
        if image_shape is not None:
            if math.prod(image_shape) != self.d:
                raise ShapeError(
                    f"image_shape {tuple(image_shape)} holds {math.prod(image_shape)} values, "
                    f"but each input has {self.d} (shape {tuple(shape[1:])})"
                )
            self.c, self.h, self.w = (int(s) for s in image_shape)
        elif len(shape) == 4:
            self.c, self.h, self.w = (int(s) for s in shape[1:])
        else:
            raise ShapeError(
                f"simba's dct basis needs images (B, C, H, W), got shape {tuple(shape)}; pass "
                "image_shape=(C, H, W) to view each input as an image, or use basis='pixel'"
            )
        self.dct_h, self.dct_w = _dct_matrix(self.h, like), _dct_matrix(self.w, like)
        # The block order: group 0 is the lowest `freq_ratio` of frequencies per side, then
        # rings of `stride` frequencies; random order inside each group.
        first = max(1, math.ceil(freq_ratio * max(self.h, self.w)))
        stride = max(1, round(max(self.h, self.w) / 32))
        u = torch.arange(self.h, device=like.device).view(self.h, 1)
        v = torch.arange(self.w, device=like.device).view(1, self.w)
        ring = torch.maximum(u, v)
        group = torch.where(ring < first, 0, 1 + (ring - first) // stride)
        self.group = group.flatten().repeat(self.c).to(like.dtype)

    def order(self, n: int, gen: torch.Generator) -> Tensor:
        """(n, d) basis indices, a random order per sample (low frequency groups first)."""
        key = torch.rand((n, self.d), generator=gen, device=self.like.device, dtype=self.like.dtype)
        if self.kind == "dct":
            key = key + self.group
        return key.argsort(1)

    def direction(self, index: Tensor) -> Tensor:
        """The unit basis vectors (m, d) with these indices."""
        if self.kind == "pixel":
            out = torch.zeros(
                (index.numel(), self.d), device=self.like.device, dtype=self.like.dtype
            )
            return out.scatter_(1, index[:, None], 1.0)
        channel = index // (self.h * self.w)
        u, v = (index // self.w) % self.h, index % self.w
        wave = self.dct_h[u][:, :, None] * self.dct_w[v][:, None, :]  # (m, h, w)
        one_hot = torch.nn.functional.one_hot(channel, self.c).to(wave.dtype)
        return (one_hot[:, :, None, None] * wave[:, None]).flatten(1)


def _dct_matrix(size: int, like: Tensor) -> Tensor:
    """The orthonormal DCT-II matrix: row k is the k-th frequency's unit basis vector."""
    k = torch.arange(size, device=like.device, dtype=like.dtype).view(size, 1)
    i = torch.arange(size, device=like.device, dtype=like.dtype).view(1, size)
    mat = torch.cos(math.pi * (2 * i + 1) * k / (2 * size)) * math.sqrt(2 / size)
    mat[0] /= math.sqrt(2)
    return mat
