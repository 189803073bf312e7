"""Label-only membership inference by distance to the decision boundary (Choquette-Choo,
Tramèr, Carlini & Papernot 2021, "Label-Only Membership Inference Attacks",
arXiv:2007.14321).

Training points tend to sit farther from the decision boundary than unseen points, so the
smallest L2 perturbation that changes the model's label is a membership score that needs
only predicted labels. The distance comes from a minimum-norm evasion attack of the adversa
registry run unbounded (`ThreatModel(norm="l2", eps=inf)`): HopSkipJump ("hsj") with label
access only, as in the paper's label-only setting, or, when gradients are available, DeepFool,
C&W or FAB (which the paper uses as an upper bound on what a label-only attacker can find).
A candidate the model already misclassifies scores 0 (the harness reports distance 0 for
it); one the attack never moves across the boundary scores the box's diameter, an upper
bound on its distance. The ROC over all thresholds is the paper's global-threshold attack.

Cost: that of the evasion attack per candidate (HSJ: at most `max_queries` label queries;
DeepFool: one forward and `candidates - 1` backward passes per step), plus one final check.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from adversa.errors import BadInput
from adversa.model import Access, Cost
from adversa.model.wrapped import Model
from adversa.privacy.membership import MembershipResult, check_candidates
from adversa.threat import ThreatModel

BOUNDARY_ATTACKS: tuple[str, ...] = ("auto", "hsj", "deepfool", "cw", "fab")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BoundaryDistance:
    """Configuration of the boundary-distance attack; `BoundaryDistance()(model, x, y)`
    scores the candidates (higher = farther from the boundary = more likely a member)."""

    attack: str = "auto"  # "auto" (deepfool with gradients, else hsj) or hsj/deepfool/cw/fab
    max_queries: int = 2000  # hsj: label queries per candidate
    batch_size: int = 100  # candidates per attack call (HSJ holds ~3 x probes x batch inputs)
    seed: int = 0  # seeds the evasion attack's random choices

    def __post_init__(self) -> None:
        if self.attack not in BOUNDARY_ATTACKS:
            raise BadInput(
                f"attack must be one of {', '.join(BOUNDARY_ATTACKS)}, got {self.attack!r}"
            )
        if self.max_queries < 1 or self.batch_size < 1:
            raise BadInput(
                f"max_queries and batch_size must be >= 1, got {self.max_queries}, "
                f"{self.batch_size}"
            )

    name = "boundary"

    def evasion(self, model: Model) -> str:
        """The registry attack that measures distances against `model`."""
        if self.attack != "auto":
            return self.attack
        return "deepfool" if model.access >= Access.GRADIENT else "hsj"

    def distances(self, model: Model, x: Tensor, y: Tensor) -> tuple[Tensor, Cost]:
        """(L2 distances (N,) to the boundary, cost) of the candidates (x, y)."""
        from adversa.attacks import get_attack

        check_candidates(x, y)
        name = self.evasion(model)
        threat = ThreatModel(norm="l2", eps=math.inf, bounds=tuple(model.bounds))
        overrides = {"max_queries": self.max_queries} if name == "hsj" else {}
        attack = get_attack(name, threat, seed=self.seed, **overrides)
        lo, hi = threat.bounds
        diameter = (hi - lo) * math.sqrt(x[0].numel())
        out, cost = [], Cost()
        for i in range(0, x.shape[0], self.batch_size):
            result = attack(model, x[i : i + self.batch_size], y[i : i + self.batch_size])
            found = result.distance.detach().float().cpu()
            out.append(torch.where(result.success.cpu(), found, torch.full_like(found, diameter)))
            cost = cost + result.cost
        return torch.cat(out), cost

    def __call__(self, model: Model, x: Tensor, y: Tensor) -> MembershipResult:
        distances, cost = self.distances(model, x, y)
        return MembershipResult(name=self.name, scores=distances, cost=cost)
