"""Knockoff Nets, adaptive strategy (Orekondy, Schiele & Fritz 2019, "Knockoff Nets: Stealing
Functionality of Black-Box Models", CVPR, arXiv:1812.02766, Section 4.2.2).

The pool is split into coarse groups (our pools: the source digit of `digits-28`, a data
set's labels; without groups, a seeded k-means of the pool into `clusters` groups). A
gradient bandit learns which groups are worth querying: preferences H over groups, policy
pi = softmax(H); each query draws a group from pi and an unused input from that group, and
after its reward r the preferences move along the policy gradient (r - r_mean)
(1[z = drawn] - pi_z) (r_mean: the mean reward so far). The reward is the paper's sum of
three terms, each min-max normalised over the rewards seen so far, averaged:

- certainty: the margin between the returned top-1 and top-2 probabilities;
- diversity: sum_k max(0, y_k - mean_k), against the mean returned vector of the previous
  round (the paper's window of recent queries);
- loss: the cross-entropy between the returned vector and the prediction of a copy trained
  online on the transfer set so far (`online_steps` Adam steps per round).

Batched: `rounds` rounds; each draws ceil(queries / rounds) queries from the same policy and
moves H by `bandit_lr` times the round's mean policy gradient (so the learning per run does
not depend on the budget). The final
copy is trained on the whole transfer set exactly as the random strategy's (`knockoff`), so
the two differ only in which inputs were queried. Cost: `queries` target queries (each pool
input at most once), no backward pass through the target; the online copy's training is
the attacker's own compute.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from adversa.errors import require
from adversa.extraction.base import ExtractionBase, query, register_extraction
from adversa.model import Model


@register_extraction("knockoff-adaptive")
@dataclasses.dataclass(frozen=True, kw_only=True)
class KnockoffAdaptive(ExtractionBase):
    """Knockoff Nets with the adaptive (gradient-bandit) choice of pool groups."""

    grouped = True
    rounds: int = 40  # bandit rounds (one policy, one update, ceil(queries / rounds) queries)
    bandit_lr: float = 4.0  # step size on each round's mean policy gradient
    online_steps: int = 20  # Adam steps of the online copy after each round
    clusters: int = 10  # k-means groups of a pool given without groups

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("rounds", "online_steps", "clusters"):
            value = getattr(self, field)
            require(value >= 1, f"{field} must be >= 1, got {value}")
        require(self.bandit_lr > 0, f"bandit_lr must be > 0, got {self.bandit_lr}")

    def _extract(
        self, api: Model, pool: Tensor, gen: torch.Generator, groups: Tensor | None = None
    ) -> tuple[nn.Module, dict]:
        if groups is None:
            groups = kmeans(pool.flatten(1), self.clusters, gen)
        groups = torch.unique(groups, return_inverse=True)[1]
        n_groups = int(groups.max()) + 1
        remaining = torch.bincount(groups, minlength=n_groups)
        used = torch.zeros_like(groups, dtype=torch.bool)
        online = self.new_copy(tuple(pool.shape[1:]), api.num_classes).to(pool.device)
        opt = torch.optim.Adam(online.parameters(), lr=self.lr)
        prefs = torch.zeros(n_groups, device=pool.device)
        bandit = _Rewards()
        picked: list[Tensor] = []
        returned: list[Tensor] = []
        budget = min(self.queries, pool.shape[0])
        round_size = -(-budget // self.rounds)
        while (spent := sum(len(i) for i in picked)) < budget:
            pi = torch.softmax(prefs.masked_fill(remaining == 0, -torch.inf), 0)
            draws = torch.multinomial(pi, min(round_size, budget - spent), True, generator=gen)
            idx = _draw_from_groups(groups, used, torch.bincount(draws, minlength=n_groups), gen)
            used[idx] = True
            remaining -= torch.bincount(groups[idx], minlength=n_groups)
            x, y = pool[idx], query(api, pool[idx])
            with torch.no_grad():
                log_q = nn.functional.log_softmax(online(x), 1)
            advantage = bandit.advantage(y, log_q)
            drawn = torch.bincount(groups[idx], weights=advantage, minlength=n_groups)
            prefs += self.bandit_lr * (drawn - advantage.sum() * pi) / idx.shape[0]
            picked.append(idx)
            returned.append(y)
            self._train_online(online, opt, pool[torch.cat(picked)], torch.cat(returned), gen)
        idx, probs = torch.cat(picked), torch.cat(returned)
        copy = self.fit(pool[idx], probs, api.num_classes, gen)
        return copy, {
            "transfer_set": int(idx.shape[0]),
            "groups": n_groups,
            "group_queries": torch.bincount(groups[idx], minlength=n_groups).tolist(),
            "policy": [round(p, 4) for p in torch.softmax(prefs, 0).tolist()],
            "rounds": len(picked),
        }

    def _train_online(
        self, net: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, gen: torch.Generator
    ) -> None:
        net.train()
        for _ in range(self.online_steps):
            batch = torch.randint(
                0, x.shape[0], (min(self.batch_size, x.shape[0]),), generator=gen, device=gen.device
            )
            loss = -(y[batch] * nn.functional.log_softmax(net(x[batch]), 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()


class _Rewards:
    """The paper's reward (certainty + diversity + loss, each min-max normalised over the
    rewards so far) minus the running mean reward: the bandit's advantage per query."""

    def __init__(self) -> None:
        self.low: Tensor | None = None
        self.high: Tensor | None = None
        self.previous: Tensor | None = None  # the mean returned vector of the last round
        self.total, self.count = 0.0, 0

    def advantage(self, y: Tensor, log_q: Tensor) -> Tensor:
        top2 = y.topk(2, 1).values
        certainty = top2[:, 0] - top2[:, 1]
        reference = self.previous if self.previous is not None else y.mean(0)
        diversity = (y - reference).clamp_min(0).sum(1)
        loss = -(y * log_q).sum(1)
        raw = torch.stack([certainty, diversity, loss], 1)
        low, high = raw.min(0).values, raw.max(0).values
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)
        reward = ((raw - self.low) / (self.high - self.low).clamp_min(1e-12)).mean(1)
        self.total += float(reward.sum())
        self.count += reward.shape[0]
        self.previous = y.mean(0)
        return reward - self.total / self.count


def _draw_from_groups(groups: Tensor, used: Tensor, counts: Tensor, gen: torch.Generator) -> Tensor:
    """Indices of `counts[z]` random unused inputs of each group z (fewer if it runs out)."""
    key = torch.rand(groups.shape[0], generator=gen, device=gen.device).to(groups.device)
    key = torch.where(used, 2.0, key)  # unused inputs first within each group
    order = torch.argsort(groups.double() * 4 + key.double())
    sorted_groups = groups[order]
    sizes = torch.bincount(groups, minlength=counts.shape[0])
    start = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(groups.shape[0], device=groups.device) - start[sorted_groups]
    take = (rank < counts[sorted_groups]) & ~used[order]
    return order[take]


def kmeans(x: Tensor, k: int, gen: torch.Generator, steps: int = 20) -> Tensor:
    """Group ids (N,) of a seeded k-means (Lloyd's algorithm, `steps` iterations, centres
    started at `k` random inputs; an empty cluster keeps its centre)."""
    k = min(k, x.shape[0])
    start = torch.randperm(x.shape[0], generator=gen, device=gen.device)[:k].to(x.device)
    centres = x[start].clone()
    for _ in range(steps):
        assign = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        sizes = torch.bincount(assign, minlength=k).unsqueeze(1)
        centres = torch.where(sizes > 0, sums / sizes.clamp_min(1), centres)
    return torch.cdist(x, centres).argmin(1)
