"""Categorical search: a discrete beam search over one-hot groups and integer features,
alternated with a continuous attack on the numeric features, for tabular threat models.

Gradient steps cannot switch a category: a one-hot group is re-encoded by the argmax of its
entries after each step (`FeatureConstraints.project`), and a step of size eps < 0.5 never
lifts an "off" entry above the "on" one. Integer features move only when a step crosses half
a grid unit. The search here moves them directly, in the spirit of the greedy categorical
search of Kantchelian, Tygar & Joseph (2016, "Evasion and Hardening of Tree Ensemble
Classifiers", ICML; coordinate moves scored by the model) and the constrained mixed search of
Simonetto et al. (2022, "A Unified Framework for Adversarial Attack and Defense in
Constrained Feature Space", IJCAI), as a beam search scored by the model's margin.

Each of `rounds` rounds does two things per still-robust sample:

1. Continuous: the registry attack `continuous` (PGD when the model grants gradients, Square
   when it grants scores only, with `continuous="auto"`) runs around the current categories
   with the numeric features restarted from the clean row. Categorical features lie outside
   the norm ball (see `adversa.tabular.constraints`), so this ball is the clean row's.
2. Discrete: a beam search of `depth` steps. A move switches one mutable group to another of
   its categories, or moves one mutable integer feature one grid unit up or (unless it is
   increase-only) down. Every move of every beam state is projected by the threat model (so
   it respects immutables, monotone features, bounds, the integer grid and the eps budget),
   duplicates and no-ops are dropped, and all candidates of the batch are scored by the
   margin loss in ONE batched forward pass per step. The `beam` best candidates per sample
   are expanded next; the best point seen per sample is kept (a fooling point beats any
   other).

Samples leave as soon as they are fooled. With a plain `ThreatModel` (no constraints) there
are no discrete moves and the attack is its continuous part.

Cost per sample: one forward pass (the clean check), then per round the continuous attack's
cost with its own harness check (PGD: at most `steps` forward and backward passes plus 3
forward; Square: at most `queries` + 1 queries) plus one forward pass to score its result, and
at most `depth * beam * M` forward passes (queries) for the search, where M = the sizes of the
mutable groups + 2 per mutable integer feature (1 if increase-only); plus the harness's final
check. Fooled samples stop early.

Example::

    constraints = constraints_for(data, from_meta=True)
    threat = ConstrainedThreat(norm="linf", eps=0.1, constraints=constraints)
    result = get_attack("categorical-search", threat)(model, x, y)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.attacks.base import (
    ATTACKS,
    AttackBase,
    AttackResult,
    get_attack,
    register_attack,
    run_attack,
)
from adversa.errors import require
from adversa.losses import get_loss, is_adversarial
from adversa.model import Access, Model, as_model
from adversa.threat import ThreatModel

_AUTO = "auto"


@register_attack("categorical-search", aliases=("cat-search",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class CategoricalSearch(AttackBase):
    continuous: str | None = _AUTO  # numeric attack: registry name, "auto" or None (none)
    steps: int = 20  # steps of a gradient continuous attack, per round
    queries: int = 200  # query budget of a score-based continuous attack, per round
    rounds: int = 2  # alternations of the continuous attack and the discrete search
    beam: int = 4  # states kept per sample in the discrete search
    depth: int = 3  # discrete moves per round

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "queries", "rounds", "beam", "depth"):
            value = getattr(self, name)
            require(value >= 1, f"{name} must be >= 1, got {value}")
        if self.continuous not in (None, _AUTO):
            require(
                ATTACKS.canonical(self.continuous) != self.name,
                "categorical-search cannot use itself as its continuous attack",
            )
            self._inner(0)  # validates the name, its norms and options now

    @property
    def access(self) -> Access:  # type: ignore[override]
        """The most the attack uses: scores for the search (it ranks candidates by margin),
        more if the continuous attack needs it. "auto" reports gradients, which it uses when
        the model grants them; on a scores-only model `__call__` falls back to Square."""
        if self.continuous == _AUTO:
            return Access.GRADIENT
        if self.continuous is None:
            return Access.SCORES
        return max(Access.SCORES, ATTACKS.factory(ATTACKS.canonical(self.continuous)).access)

    def __call__(self, model: Model | torch.nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        if self.continuous != _AUTO:
            return run_attack(self, model, x, y)
        wrapped = as_model(model, self.threat.bounds)
        name = "pgd" if wrapped.access >= Access.GRADIENT else "square"
        if self.threat.norm not in ATTACKS.factory(name).norms:
            name = None  # square has no l1 version: search only
        return run_attack(dataclasses.replace(self, continuous=name), wrapped, x, y)

    def _inner(self, round_: int) -> AttackBase:
        name = ATTACKS.canonical(str(self.continuous))
        fields = {f.name for f in dataclasses.fields(ATTACKS.factory(name))}
        options: dict[str, int] = {"seed": self.seed + round_}
        if "steps" in fields:
            options["steps"] = self.steps
        if "queries" in fields:
            options["queries"] = self.queries
        return get_attack(name, self.threat, **options)

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        threat = self.threat
        loss_fn = get_loss("margin", threat.targeted)
        moves = discrete_moves(threat, x)
        cat = _categorical_mask(threat, x)
        with torch.no_grad():
            logits = model(x)
        best = x.clone()
        best_score = torch.where(
            is_adversarial(logits, y, threat.targeted), torch.inf, loss_fn(logits, y)
        )
        for round_ in range(self.rounds):
            todo = torch.nonzero(best_score < torch.inf).squeeze(1)
            if todo.numel() == 0:
                break
            if self.continuous is not None and (round_ == 0 or moves is not None):
                base = torch.where(cat, best[todo], x[todo])
                adv = self._inner(round_)(model, base, y[todo]).x_adv
                adv = threat.project(adv, x[todo])
                with torch.no_grad():
                    logits = model(adv)
                score = loss_fn(logits, y[todo])
                fooled = is_adversarial(logits, y[todo], threat.targeted)
                score = torch.where(fooled, torch.inf, score)
                better = score > best_score[todo]
                best[todo[better]] = adv[better]
                best_score[todo[better]] = score[better]
                todo = todo[~fooled]
            if moves is not None and todo.numel():
                found, found_score = beam_search(
                    model, threat, x[todo], y[todo], best[todo], moves, self.beam, self.depth
                )
                better = found_score > best_score[todo]
                best[todo[better]] = found[better]
                best_score[todo[better]] = found_score[better]
        return best


@dataclasses.dataclass(frozen=True)
class Moves:
    """M discrete moves as masks over D features: a move sets the features in `set_mask`
    to `set_value` and adds `add` to the others."""

    set_mask: Tensor  # (M, D) bool
    set_value: Tensor  # (M, D)
    add: Tensor  # (M, D)

    def apply(self, states: Tensor) -> Tensor:
        """(B, S, D) states -> (B, S, M, D) moved states (not yet projected)."""
        s = states[:, :, None, :]
        return torch.where(self.set_mask, self.set_value, s + self.add)


def discrete_moves(threat: ThreatModel, like: Tensor) -> Moves | None:
    """The moves the threat's constraints allow, or None when there are none: one per
    category of each group without an immutable feature, and +-1 grid unit per mutable
    integer feature (+1 only when increase-only)."""
    constraints = getattr(threat, "constraints", None)
    if constraints is None:
        return None
    d = constraints.num_features
    lo, hi = threat.bounds
    fixed = set(constraints.immutable)
    rows: list[tuple[list[int], list[float], list[float]]] = []
    for group in constraints.categorical:
        if fixed & set(group):
            continue
        for on in group:
            values = [lo] * d
            values[on] = hi
            rows.append((list(group), values, [0.0] * d))
    for i in constraints.integer:
        if i in fixed:
            continue
        for sign in (1.0,) if i in constraints.increase_only else (1.0, -1.0):
            add = [0.0] * d
            add[i] = sign * constraints.unit[i]
            rows.append(([], [0.0] * d, add))
    if not rows:
        return None
    set_mask = torch.zeros((len(rows), d), dtype=torch.bool, device=like.device)
    for m, (features, _, _) in enumerate(rows):
        set_mask[m, features] = True
    as_tensor = dict(dtype=like.dtype, device=like.device)
    set_value = torch.tensor([r[1] for r in rows], **as_tensor)
    add = torch.tensor([r[2] for r in rows], **as_tensor)
    return Moves(set_mask, set_value, add)


def _categorical_mask(threat: ThreatModel, like: Tensor) -> Tensor:
    mask = torch.zeros(like.shape[1], dtype=torch.bool, device=like.device)
    constraints = getattr(threat, "constraints", None)
    if constraints is not None:
        mask[[i for g in constraints.categorical for i in g]] = True
    return mask


def beam_search(
    model: Model,
    threat: ThreatModel,
    x: Tensor,
    y: Tensor,
    start: Tensor,
    moves: Moves,
    beam: int,
    depth: int,
) -> tuple[Tensor, Tensor]:
    """Beam search from `start` (B, D) around the clean rows `x`; returns the best point per
    sample and its score (the margin, +inf when it fools the model). One batched forward
    pass per step over every new, distinct candidate of the samples not yet fooled."""
    loss_fn = get_loss("margin", threat.targeted)
    b, d = x.shape
    m = moves.set_mask.shape[0]
    tol = 1e-6 * (threat.bounds[1] - threat.bounds[0])
    states = start[:, None, :].expand(b, beam, d).clone()
    alive = torch.zeros((b, beam), dtype=torch.bool, device=x.device)
    alive[:, 0] = True
    best = start.clone()
    best_score = torch.full((b,), -torch.inf, dtype=x.dtype, device=x.device)
    rows_x = x.repeat_interleave(beam * m, dim=0)
    for _ in range(depth):
        cand = moves.apply(states).reshape(b * beam * m, d)
        cand = threat.project(cand, rows_x).reshape(b, beam * m, d)
        parent = states.repeat_interleave(m, dim=1)
        valid = alive.repeat_interleave(m, dim=1) & (best_score < torch.inf)[:, None]
        valid &= (cand - parent).abs().amax(2) > tol  # no-ops were scored already
        exact = "donot_use_mm_for_euclid_dist"
        same = torch.cdist(cand, cand, compute_mode=exact) <= tol  # (B, C, C)
        earlier = torch.ones_like(same[0]).tril(-1)  # j < i
        valid &= ~(same & earlier & valid[:, None, :]).any(2)
        rows = torch.nonzero(valid)
        if rows.shape[0] == 0:
            break
        with torch.no_grad():
            logits = model(cand[rows[:, 0], rows[:, 1]])
        owner = rows[:, 0]
        score_rows = loss_fn(logits, y[owner])
        fooled = is_adversarial(logits, y[owner], threat.targeted)
        score = torch.full((b, beam * m), -torch.inf, dtype=x.dtype, device=x.device)
        score[rows[:, 0], rows[:, 1]] = torch.where(fooled, torch.inf, score_rows).to(x.dtype)
        top, pick = score.topk(min(beam, beam * m), dim=1)
        better = top[:, 0] > best_score
        best = torch.where(better[:, None], cand[torch.arange(b), pick[:, 0]], best)
        best_score = torch.where(better, top[:, 0], best_score)
        states = cand.gather(1, pick[:, :, None].expand(-1, -1, d))
        alive = top > -torch.inf
    return best, best_score
