"""Membership-inference metrics: ROC curve, ROC AUC, balanced accuracy and TPR at a fixed
low FPR, as Carlini et al. 2022 ("Membership Inference Attacks From First Principles",
arXiv:2112.03570) recommend reporting them, plus a log-log ROC plot as an SVG string.

Scores are "higher = more likely a member"; labels are bool (True = member). Cost: one sort
of N scores, O(N log N); no model passes.
"""

from __future__ import annotations

import dataclasses
import math
from html import escape

import torch
from torch import Tensor

from adversa.errors import BadInput, ShapeError

DEFAULT_FPRS: tuple[float, ...] = (0.01, 0.001)


def check_fpr(fpr: float, name: str = "fpr") -> float:
    """`fpr` as a float if it lies strictly inside (0, 1), else `BadInput` naming it."""
    value = float(fpr)
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise BadInput(f"{name} must lie strictly inside (0, 1), got {fpr!r}")
    return value


def roc_curve(scores: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    """(fpr, tpr), both float64 and starting at (0, 0), one point per distinct score.

    Tied scores form one point, so the curve does not depend on the order of ties."""
    scores = torch.as_tensor(scores).detach().flatten().double().cpu()
    members = torch.as_tensor(members).detach().flatten().bool().cpu()
    if scores.shape != members.shape:
        raise ShapeError(f"scores {tuple(scores.shape)} and members {tuple(members.shape)} differ")
    n_pos, n_neg = int(members.sum()), int((~members).sum())
    if n_pos == 0 or n_neg == 0:
        raise BadInput(f"members must hold both members and non-members, got {n_pos} and {n_neg}")
    if not torch.isfinite(scores).all():
        raise BadInput("scores must be finite (no NaN or inf)")
    order = torch.argsort(scores, descending=True, stable=True)
    s, m = scores[order], members[order].double()
    tp, fp = torch.cumsum(m, 0), torch.cumsum(1.0 - m, 0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last element of each group of ties
    zero = torch.zeros(1, dtype=torch.float64)
    return torch.cat([zero, fp[last] / n_neg]), torch.cat([zero, tp[last] / n_pos])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MembershipMetrics:
    """Summary of one attack's scores against the true membership."""

    auc: float  # area under the ROC curve (0.5 = chance)
    balanced_accuracy: float  # best over thresholds of (TPR + TNR) / 2
    tpr_at_fpr: dict[float, float]  # FPR target -> TPR at the best threshold with FPR <= target
    n_members: int
    n_nonmembers: int

    @property
    def min_fpr(self) -> float:
        """The smallest non-zero FPR the non-members can resolve: one false positive."""
        return 1.0 / self.n_nonmembers

    def resolvable(self, target: float) -> bool:
        """Whether the non-members can resolve FPR `target` (at least one false positive)."""
        return self.n_nonmembers >= needed_nonmembers(target)

    def warnings(self) -> list[str]:
        """An AUC below chance: the attack ranks non-members above members."""
        if self.auc >= 0.5:
            return []
        spread = chance_auc_spread(self.n_members, self.n_nonmembers)
        sample = f"{self.n_members} members and {self.n_nonmembers} non-members"
        if self.auc >= 0.5 - 2 * spread:
            return [
                f"AUC {self.auc:.3f} is below 0.5 but within chance (+-{spread:.3f} at {sample}): "
                "the attack finds no membership signal, in either direction"
            ]
        return [
            f"AUC {self.auc:.3f} is below 0.5 by more than chance explains (+-{spread:.3f} at "
            f"{sample}): the attack ranks non-members above members, so something is off, "
            "usually the reference / shadow models (trained unlike the target) or the "
            "membership split"
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "auc": self.auc,
            "balanced_accuracy": self.balanced_accuracy,
            "tpr_at_fpr": {str(k): v for k, v in self.tpr_at_fpr.items()},
            "tpr_at_fpr_resolvable": {str(k): self.resolvable(k) for k in self.tpr_at_fpr},
            "min_fpr": self.min_fpr,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "warnings": self.warnings(),
        }


def needed_nonmembers(target: float) -> int:
    """How many non-members resolve FPR `target`: ceil(1 / target), so that one false positive
    is within it (1,000 for 0.1%)."""
    return math.ceil(1.0 / check_fpr(target, "fpr target") - 1e-9)


def chance_auc_spread(n_members: int, n_nonmembers: int) -> float:
    """The standard deviation of a chance-level attack's AUC (Mann-Whitney under the null)."""
    return math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))


def tpr_at_fpr(fpr: Tensor, tpr: Tensor, target: float) -> float:
    """The highest TPR among ROC points with FPR <= `target` (in (0, 1))."""
    target = check_fpr(target, "fpr target")
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if bool(ok.any()) else 0.0


def membership_metrics(
    scores: Tensor, members: Tensor, fprs: tuple[float, ...] = DEFAULT_FPRS
) -> MembershipMetrics:
    """ROC AUC, balanced accuracy and TPR at each FPR in `fprs` (each in (0, 1))."""
    targets = tuple(check_fpr(f, "fpr target") for f in fprs)
    fpr, tpr = roc_curve(scores, members)
    auc = float(torch.trapezoid(tpr, fpr))
    members = torch.as_tensor(members).bool()
    return MembershipMetrics(
        auc=auc,
        balanced_accuracy=float(((tpr + 1.0 - fpr) / 2).max()),
        tpr_at_fpr={t: tpr_at_fpr(fpr, tpr, t) for t in targets},
        n_members=int(members.sum()),
        n_nonmembers=int((~members).sum()),
    )


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def roc_svg(curves: dict[str, tuple[Tensor, Tensor]], width: int = 420, height: int = 360) -> str:
    """A log-log ROC plot (FPR and TPR from 1e-3 to 1) of named (fpr, tpr) curves, with the
    chance diagonal, as an inline SVG string."""
    lo = 1e-3
    left, right, top, bottom = 50, 10, 10, 40
    pw, ph = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + pw * (math.log10(max(v, lo)) - math.log10(lo)) / -math.log10(lo)

    def py(v: float) -> float:
        return top + ph * (1 - (math.log10(max(v, lo)) - math.log10(lo)) / -math.log10(lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
        f'<line x1="{px(lo)}" y1="{py(lo)}" x2="{px(1)}" y2="{py(1)}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>',
    ]
    for k in range(4):
        v = 10.0 ** (-k)
        parts.append(f'<text x="{px(v)}" y="{height - 22}" text-anchor="middle">{v:g}</text>')
        parts.append(f'<text x="{left - 4}" y="{py(v) + 4}" text-anchor="end">{v:g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">FPR</text>')
    parts.append(
        f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
        'text-anchor="middle">TPR</text>'
    )
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        keep = fpr > 0
        points = " ".join(
            f"{px(f):.1f},{py(t):.1f}"
            for f, t in zip(fpr[keep].tolist(), tpr[keep].tolist(), strict=False)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        y = top + 14 + 13 * i
        parts.append(
            f'<line x1="{left + 6}" y1="{y - 4}" x2="{left + 20}" y2="{y - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        # an inline style, so a page's `svg text {fill: ...}` rule cannot grey the legend out
        parts.append(f'<text x="{left + 24}" y="{y}" style="fill:{colour}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
