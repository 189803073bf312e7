"""The iterative gradient template shared by FGSM and PGD.

One loop: gradient of a per-sample loss -> steepest-ascent step in the threat model's norm ->
projection by the threat model. Restarts are batched (R copies of the batch in one tensor);
the best point per sample is kept across steps and restarts; a sample leaves the batch as soon
as any of its copies fools the model, so later steps cost nothing for it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adversa.losses import LossFn, is_adversarial
from adversa.model import Model
from adversa.threat import ThreatModel


def sparse_l1_direction(
    grad: Tensor, x_adv: Tensor, share: Tensor, bounds: tuple[float, float]
) -> Tensor:
    """A unit-l1 ascent direction: sign(grad) on the ceil(share * d) coordinates of largest
    |grad| per sample (`share` broadcastable to (B, 1)), spread evenly (the sparse l1 step of
    Tramer & Boneh 2019, arXiv:1904.13000).

    Coordinates pinned at a box edge whose gradient points out of the box cannot move: they
    are left out before ranking, so the step is not wasted on them.
    """
    lo, hi = bounds
    pinned = ((x_adv >= hi) & (grad > 0)) | ((x_adv <= lo) & (grad < 0))
    flat = grad.masked_fill(pinned, 0).flatten(1)
    dim = flat.shape[1]
    share = torch.as_tensor(share, dtype=flat.dtype, device=flat.device).reshape(-1)
    k = (share * dim).ceil().long().clamp(1, dim).expand(flat.shape[0])
    threshold = flat.abs().sort(1, descending=True).values.gather(1, (k - 1)[:, None])
    chosen = (flat.abs() >= threshold) & (flat != 0)
    count = chosen.sum(1, keepdim=True).clamp_min(1)
    return (flat.sign() * chosen / count).view_as(grad)


def steepest_step(
    grad: Tensor,
    norm: str,
    step_size: float,
    *,
    x_adv: Tensor,
    bounds: tuple[float, float],
    l1_sparsity: float,
) -> Tensor:
    """The steepest-ascent direction of unit size in `norm`, scaled by `step_size`.

    linf: sign(g). l2: g / ||g||_2. l1: `sparse_l1_direction` on the top (1 - l1_sparsity)
    share of coordinates.
    """
    if norm == "linf":
        return step_size * grad.sign()
    if norm == "l2":
        flat = grad.flatten(1)
        n = torch.linalg.vector_norm(flat, dim=1).clamp_min(1e-12)
        return step_size * (flat / n[:, None]).view_as(grad)
    share = torch.tensor(1.0 - l1_sparsity)
    return step_size * sparse_l1_direction(grad, x_adv, share, bounds)


def _first_row_per_owner(owner: Tensor, score: Tensor, n_owners: int) -> Tensor:
    """Index of the highest-scoring row of each owner (lowest row index among ties), or -1."""
    best = torch.full((n_owners,), float("-inf"), device=score.device, dtype=score.dtype)
    best = best.scatter_reduce(0, owner, score, reduce="amax")
    rows = torch.arange(owner.shape[0], device=owner.device)
    is_best = score == best[owner]
    sentinel = owner.shape[0]
    pick = torch.full((n_owners,), sentinel, device=owner.device, dtype=torch.long)
    pick = pick.scatter_reduce(0, owner, torch.where(is_best, rows, sentinel), reduce="amin")
    return torch.where(pick == sentinel, -1, pick)


class BestTracker:
    """Per-sample best point over rows that may hold several copies (restarts) of a sample.

    A row that fools the model beats any row that does not; otherwise the higher loss wins.
    `done` marks samples already fooled: their rows can leave the batch.
    """

    def __init__(self, x: Tensor, done: Tensor) -> None:
        self.x_best = x.clone()
        self.done = done.clone()
        self.best_score = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)

    def update(self, owner: Tensor, x_cand: Tensor, loss: Tensor, fooled: Tensor) -> Tensor:
        """Record the best candidate row per owner; return the rows still worth attacking."""
        score = torch.where(fooled, torch.inf, loss.to(self.best_score.dtype))
        pick = _first_row_per_owner(owner, score, self.x_best.shape[0])
        idx = torch.nonzero(pick >= 0).squeeze(1)
        rows = pick[idx]
        improved = score[rows] > self.best_score[idx]
        idx, rows = idx[improved], rows[improved]
        self.x_best[idx] = x_cand[rows].to(self.x_best.dtype)
        self.best_score[idx] = score[rows]
        self.done[idx] |= fooled[rows]
        return ~self.done[owner]


def gradient_ascent(
    model: Model,
    threat: ThreatModel,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn,
    steps: int,
    step_size: float,
    restarts: int,
    random_start: bool,
    gen: torch.Generator,
    l1_sparsity: float = 0.99,
) -> Tensor:
    """Maximise `loss_fn` inside the threat model; return the best point per sample.

    Points the model already gets wrong (right, when targeted) are returned as they are after
    one forward pass. Cost per attacked sample: at most `steps * restarts` forward and backward
    passes, plus one forward pass before and one after the loop.
    """
    targeted = threat.targeted
    with torch.no_grad():
        already = is_adversarial(model(x), y, targeted)
    best = BestTracker(x, already)
    owner = torch.arange(x.shape[0], device=x.device).repeat(restarts)
    owner = owner[~already[owner]]
    x_rows, y_rows = x[owner], y[owner]
    x_adv = threat.random_start(x_rows, gen) if random_start else x_rows.clone()

    for _ in range(steps):
        if owner.numel() == 0:
            return best.x_best
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        loss = loss_fn(logits, y_rows)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = x_adv.detach()
        stepped = threat.project(
            x_adv
            + steepest_step(
                grad,
                threat.norm,
                step_size,
                x_adv=x_adv,
                bounds=threat.bounds,
                l1_sparsity=l1_sparsity,
            ),
            x_rows,
        )
        keep = best.update(
            owner, x_adv, loss.detach(), is_adversarial(logits.detach(), y_rows, targeted)
        )
        x_adv = stepped
        if not bool(keep.all()):
            owner, x_rows, y_rows, x_adv = owner[keep], x_rows[keep], y_rows[keep], x_adv[keep]
    if owner.numel():
        with torch.no_grad():
            logits = model(x_adv)
            best.update(
                owner, x_adv, loss_fn(logits, y_rows), is_adversarial(logits, y_rows, targeted)
            )
    return best.x_best
