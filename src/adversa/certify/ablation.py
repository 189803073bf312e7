"""Structured ablation for (de)randomized smoothing against patches (Levine & Feizi 2020,
"(De)Randomized Smoothing for Certifiable Defense against Patch Attacks", NeurIPS,
arXiv:2002.10733): what the base classifier sees, the network around it, its training
recipe and the architectures the zoo builds. The certificate is `patch_smoothing`.

- Ablation: of an image (C, H, W) in [lo, hi], keep one band of `band` whole columns
  ("column") or one `band` x `band` block ("block"), wrapping around the image's edges, and
  encode every other pixel as "null". As in the paper, the base classifier takes 2C channels:
  u and 1 - u where kept (u: the image scaled to [0, 1]) and 0 in both where ablated, so an
  ablated pixel differs from every real one. The positions are the band's first column
  (W of them) or the block's top-left pixel (H * W).
- `AblatedClassifier`: a base network on 2C channels. Given 2C channels it is the base
  classifier; given C channels, the smoothed classifier's differentiable surrogate: the log
  of the mean over every position of the base's softmax (its argmax may differ from the vote
  count's, which `patch_smoothing` uses for predictions and certificates).
- "patch-ablation" (in `adversa.defenses.DEFENSES`): cross-entropy of the base classifier on
  each example ablated at `views` positions drawn from the batch's generator, fresh ones per
  example and step. The paper draws one (`views=1`); the default, 4, sees four times as many
  (digit, band) pairs per epoch, which helps on our 4,000 digits. Its "clean" metrics are on
  that ablated batch; the trainer's test accuracy is the surrogate's. Cost per batch: one
  forward and backward pass over `views` times the batch.
- Architectures `ablated-cnn-column2` (the paper's MNIST setting), `ablated-cnn-column4` (its
  CIFAR-10 setting) and `ablated-cnn-block10`: `small-cnn` on 2C channels inside an
  `AblatedClassifier`; `ablated-strip-column2`: `StripMLP`, an MLP on the kept band only,
  aligned, with its position (ours, not the paper's: cheaper, and its weights are shared
  across positions). All registered in `adversa.nets.ARCHS` on import, as the certified
  training defenses register in `DEFENSES`.
- `vote_tallies`: per class, the positions that vote for it: the base's argmax, or (the
  paper's thresholded vote) every class whose softmax is >= a threshold.

Cost of `vote_tallies` and the surrogate: P forward passes of the base per image (P the
number of positions), in batches of `budget` ablated images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.defenses.base import DEFENSES, BatchMetrics, DefenseBase, StepContext
from adversa.defenses.objectives import unwrap
from adversa.errors import BadInput, ShapeError, describe, is_integer
from adversa.nets import ARCHS
from adversa.nets.small import cnn_builder

ABLATIONS: tuple[str, ...] = ("column", "block")
BUDGET = 2048  # ablated images per forward pass
WIDTHS, HIDDEN = (16, 32), 100  # the CNN base network: small-cnn (wide-cnn: no better)
STRIP_HIDDEN = (1024, 512)  # the strip MLP's hidden widths
VIEWS = 4  # "patch-ablation": random positions per example and step (the paper: 1)

Classifier = Callable[[Tensor], Tensor]


def check_ablation(ablation: str, band: int, size: tuple[int, int], flag: str = "band") -> None:
    """`BadInput` unless `ablation` is known and `band` an integer in [1, side]."""
    if ablation not in ABLATIONS:
        raise BadInput(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    side = size[1] if ablation == "column" else min(size)
    if not is_integer(band) or not 1 <= band <= side:
        raise BadInput(
            f"{flag} {describe(band)}: expected an integer from 1 to {side} (the images are "
            f"{size[0]}x{size[1]}, {ablation} ablation)"
        )


def num_positions(ablation: str, size: tuple[int, int]) -> int:
    """How many band (or block) positions the smoothed classifier votes over."""
    return size[1] if ablation == "column" else size[0] * size[1]


def affected(ablation: str, band: int, size: tuple[int, int], patch: int) -> int:
    """The most positions a `patch` x `patch` square can touch: a band of b columns meets m
    consecutive columns at m + b - 1 starts (wrapping, at most W); a block, at that many
    starts per axis."""
    h, w = size
    if ablation == "column":
        return min(w, patch + band - 1)
    return min(h, patch + band - 1) * min(w, patch + band - 1)


def keep_mask(ablation: str, band: int, positions: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 1, H, W) bool: the pixels kept at each position (wrapping around the edges)."""
    h, w = size
    cols = torch.arange(w, device=positions.device)
    if ablation == "column":
        keep = ((cols - positions[:, None]) % w) < band  # (N, W)
        return keep[:, None, None, :].expand(-1, 1, h, w)
    rows = torch.arange(h, device=positions.device)
    in_rows = ((rows - (positions // w)[:, None]) % h) < band
    in_cols = ((cols - (positions % w)[:, None]) % w) < band
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def ablate(
    x: Tensor,
    positions: Tensor,
    ablation: str,
    band: int,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """(N, 2C, H, W): each image of `x` (N, C, H, W) ablated at its position (N,)."""
    lo, hi = bounds
    u = (x - lo) / (hi - lo)
    keep = keep_mask(ablation, band, positions, (x.shape[-2], x.shape[-1])).to(x.dtype)
    return torch.cat([u * keep, (1 - u) * keep], dim=1)


def _chunks(count: int, positions: int, budget: int) -> list[Tensor]:
    """Position ranges such that `count` images times a range's length is about `budget`."""
    step = max(1, budget // max(1, count))
    return [torch.arange(s, min(positions, s + step)) for s in range(0, positions, step)]


def _at_positions(
    x: Tensor, chunk: Tensor, ablation: str, band: int, bounds: tuple[float, float]
) -> Tensor:
    """(B * k, 2C, H, W): every image at each of the k positions of `chunk`, image-major."""
    chunk = chunk.to(x.device)
    reps = x.repeat_interleave(len(chunk), dim=0)
    return ablate(reps, chunk.repeat(x.shape[0]), ablation, band, bounds)


def vote_tallies(
    classify: Classifier,
    x: Tensor,
    ablation: str,
    band: int,
    bounds: tuple[float, float] = (0.0, 1.0),
    budget: int = BUDGET,
    threshold: float | None = None,
) -> tuple[Tensor, Tensor]:
    """(votes, top1), both (B, K) int64, over every position's ablated image of `x`: `top1`
    counts the positions where each class is the base classifier's argmax (`classify`: 2C
    channels -> logits); `votes` is `top1` when `threshold` is None, else the positions
    where each class's softmax is >= `threshold` (a position may vote for several classes,
    or none). Deterministic; no gradient."""
    size = (x.shape[-2], x.shape[-1])
    votes: Tensor | None = None
    top1: Tensor | None = None
    with torch.no_grad():
        for chunk in _chunks(x.shape[0], num_positions(ablation, size), budget):
            logits = classify(_at_positions(x, chunk, ablation, band, bounds))
            best = logits.argmax(1).view(x.shape[0], len(chunk))
            if top1 is None:
                top1 = torch.zeros(x.shape[0], logits.shape[1], dtype=torch.long, device=x.device)
                votes = top1 if threshold is None else torch.zeros_like(top1)
            top1.scatter_add_(1, best, torch.ones_like(best))
            if threshold is not None:
                above = F.softmax(logits, dim=1) >= threshold  # (B * k, K)
                votes += above.view(x.shape[0], len(chunk), -1).sum(1)  # type: ignore[operator]
    assert votes is not None and top1 is not None  # at least one position
    return votes, top1


def soft_vote(
    classify: Classifier,
    x: Tensor,
    ablation: str,
    band: int,
    bounds: tuple[float, float] = (0.0, 1.0),
    budget: int = BUDGET,
) -> Tensor:
    """(B, K): log of the mean over every position of the base's softmax; differentiable."""
    size = (x.shape[-2], x.shape[-1])
    total = num_positions(ablation, size)
    out: Tensor | None = None
    for chunk in _chunks(x.shape[0], total, budget):
        logp = F.log_softmax(classify(_at_positions(x, chunk, ablation, band, bounds)), dim=1)
        part = logp.view(x.shape[0], len(chunk), -1).logsumexp(1)
        out = part if out is None else torch.logaddexp(out, part)
    assert out is not None
    return out - torch.log(torch.tensor(float(total), dtype=out.dtype, device=out.device))


class AblatedClassifier(nn.Module):
    """A base network on ablated images (2C channels); on images (C channels), the smoothed
    classifier's surrogate (`soft_vote`). `ablation`, `band` and `bounds` say how it was
    trained (they are fixed by the architecture, not stored in the weights)."""

    def __init__(
        self,
        base: nn.Module,
        *,
        in_channels: int,
        size: tuple[int, int],
        ablation: str,
        band: int,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        check_ablation(ablation, band, size)
        self.base = base
        self.in_channels = in_channels
        self.size = tuple(size)
        self.ablation = ablation
        self.band = band
        self.bounds = tuple(bounds)

    @property
    def positions(self) -> int:
        return num_positions(self.ablation, self.size)  # type: ignore[arg-type]

    def ablate(self, x: Tensor, positions: Tensor) -> Tensor:
        return ablate(x, positions, self.ablation, self.band, self.bounds)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and x.shape[1] == 2 * self.in_channels:
            return self.base(x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"an ablated classifier takes (B, {self.in_channels}, H, W) images or "
                f"(B, {2 * self.in_channels}, H, W) ablated images, got {tuple(x.shape)}"
            )
        return soft_vote(self.base, x, self.ablation, self.band, self.bounds)  # type: ignore[arg-type]


class StripMLP(nn.Module):
    """A base classifier for column ablation that reads only the kept band. It finds the
    band's first column from the null encoding (a kept pixel has u + (1 - u) = 1 over the two
    channel halves, an ablated one 0), gathers the b kept columns (wrapping) into an aligned
    (2C, H, b) strip, and classifies the strip with a one-hot of the band's position by an
    MLP. Its weights are shared by every position, unlike a CNN's dense layers over the
    whole, mostly null image; it is still a function of the ablated image alone, so the
    certificate is unchanged."""

    def __init__(
        self, in_channels: int, size: tuple[int, int], band: int, num_classes: int
    ) -> None:
        super().__init__()
        h, w = size
        self.width, self.band = w, band
        self.mlp = nn.Sequential(
            nn.Linear(in_channels * h * band + w, STRIP_HIDDEN[0]),
            nn.ReLU(),
            nn.Linear(STRIP_HIDDEN[0], STRIP_HIDDEN[1]),
            nn.ReLU(),
            nn.Linear(STRIP_HIDDEN[1], num_classes),
        )

    def forward(self, a: Tensor) -> Tensor:
        n, channels, h, w = a.shape
        kept = (a != 0).any(2).any(1)  # (N, W)
        start = (kept & ~kept.roll(1, 1)).to(a.dtype).argmax(1)  # 0 when every column is kept
        cols = (start[:, None] + torch.arange(self.band, device=a.device)) % w  # (N, b)
        strip = a.gather(3, cols[:, None, None, :].expand(n, channels, h, self.band))
        where = F.one_hot(start, w).to(a.dtype)
        return self.mlp(torch.cat([strip.flatten(1), where], 1))


def _ablated_builder(ablation: str, band: int, strip: bool = False):
    inner = cnn_builder(WIDTHS, HIDDEN)

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 3:
            raise BadInput(f"an ablated network needs (C, H, W) images, got {input_shape}")
        c, h, w = input_shape
        check_ablation(ablation, band, (h, w), flag=f"{ablation} band")
        if strip:
            base: nn.Module = StripMLP(2 * c, (h, w), band, num_classes)
        else:
            base = inner((2 * c, h, w), num_classes)
        return AblatedClassifier(base, in_channels=c, size=(h, w), ablation=ablation, band=band)

    return build


ABLATED_ARCHS: dict[str, tuple[str, int]] = {
    "ablated-cnn-column2": ("column", 2),
    "ablated-cnn-column4": ("column", 4),
    "ablated-cnn-block10": ("block", 10),
    "ablated-strip-column2": ("column", 2),
}
for _name, (_ablation, _band) in ABLATED_ARCHS.items():
    ARCHS.register(_name)(_ablated_builder(_ablation, _band, _name.startswith("ablated-strip")))


@DEFENSES.register("patch-ablation")
@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationTraining(DefenseBase):
    """Training the base classifier of patch smoothing on randomly ablated images."""

    name: ClassVar[str] = "patch-ablation"
    views: int = VIEWS  # random positions per example and step

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.views < 1:
            raise BadInput(f"defense 'patch-ablation': views must be >= 1, got {self.views}")

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        net = unwrap(module)
        if not isinstance(net, AblatedClassifier):
            raise BadInput(
                f"defense 'patch-ablation' trains an ablated architecture "
                f"({', '.join(ABLATED_ARCHS)}), got {type(net).__name__}"
            )
        views = self.views
        positions = ctx.draw(  # (B, views); rows independent, as `draw` needs
            x,
            lambda batch: torch.randint(
                net.positions, (batch.shape[0], views), generator=ctx.gen, device=batch.device
            ),
        )
        x, y = x.repeat_interleave(views, 0), y.repeat_interleave(views, 0)
        logits = module(net.ablate(x, positions.flatten()))  # 2C channels: the base classifier
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        correct = round(int((logits.detach().argmax(1) == y).sum()) / views)
        return BatchMetrics(loss=value, clean_loss=value, clean_correct=correct)
