"""The L1 pieces of APGD (Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial
attacks on image classifiers", arXiv:2103.01208): the sparse step with a per-sample sparsity
followed by the exact projection onto the l1-ball intersected with the box (which lives in
`adversa.threat`), and the checkpoint rule that adapts sparsity and step size. All batched.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adversa.attacks.gradient import sparse_l1_direction
from adversa.threat import project_l1_box

SPARSITY_START = 0.2  # share of coordinates in the first steps
SPARSITY_DIVISOR = 1.5  # sparsity = ||x_best - x||_0 / (d * 1.5) at each checkpoint
STEP_DIVISOR = 1.5  # step size divided by this at a checkpoint that does not restart
MIN_STEP_SHARE = 0.1  # step size stays in [eps / 10, eps]


def l1_checkpoints(steps: int) -> list[int]:
    """l1-APGD checks sparsity and step size every 4% of the steps (at least every step)."""
    return list(range(0, steps, max(int(0.04 * steps), 1)))[1:]


def l1_step(
    x_adv: Tensor,
    grad: Tensor,
    center: Tensor,
    step_size: Tensor,
    sparsity: Tensor,
    eps: float,
    bounds: tuple[float, float],
) -> Tensor:
    """One l1-APGD step (no momentum): the sparse direction scaled by the per-sample
    `step_size` (broadcastable), then the exact projection onto the l1-ball around `center`
    intersected with the box."""
    moved = x_adv + step_size * sparse_l1_direction(grad, x_adv, sparsity, bounds)
    return center + project_l1_box(moved - center, center, eps, bounds)


def sparsity_checkpoint(
    step_size: Tensor, x_max: Tensor, x: Tensor, nnz_before: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The l1-APGD checkpoint rule, per sample.

    With nnz = ||x_max - x||_0: the next sparsity is nnz / (d * 1.5). If nnz shrank by more
    than 5% since the last checkpoint, the sample restarts from its best point with the step
    size reset to eps; otherwise its step size is divided by 1.5. Step sizes stay in
    [eps / 10, eps]. Returns (step_size, sparsity, nnz, restart).
    """
    flat = (x_max - x).flatten(1)
    nnz = (flat != 0).sum(1).to(step_size.dtype)
    restart = nnz < 0.95 * nnz_before
    step_size = torch.where(restart, torch.full_like(step_size, eps), step_size / STEP_DIVISOR)
    step_size = step_size.clamp(MIN_STEP_SHARE * eps, eps)
    sparsity = nnz / (flat.shape[1] * SPARSITY_DIVISOR)
    return step_size, sparsity, nnz, restart
