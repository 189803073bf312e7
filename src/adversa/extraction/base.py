"""Model extraction: the `Extraction` protocol, `ExtractionResult`, the `EXTRACTIONS` registry,
the `run_extraction` harness and the training loop every copy shares.

An extraction method gets query access only: the harness hands it the target's scores-only
view (`Model.view(Access.SCORES)`, or whatever query view an API-side defense serves), opens
a cost scope on it and checks afterwards that no backward pass went through the target and
that the method stayed within its query budget. Methods implement `_extract` only.

Example::

    method = EXTRACTIONS.get("knockoff", queries=5000, seed=0)
    result = method(target, pool)              # pool: unlabelled inputs (N, ...)
    fidelity(result.copy, target, x_test)      # agreement of the copy with the target
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from adversa.checks import check_config_types
from adversa.errors import BadInput, ShapeError, describe, require
from adversa.model import Access, Cost, Model, as_model
from adversa.nets import build_arch
from adversa.registry import Registry
from adversa.rng import make_generator

QUERY_BATCH = 1024  # samples per query batch sent to the target


@dataclasses.dataclass(frozen=True, slots=True)
class ExtractionResult:
    """What one extraction produced: the `copy` (a trained `nn.Module` in eval mode), the
    `queries` it spent (counted by the harness on the target's query view), its `cost` (the
    target's passes: `backward` is 0 by construction), `seconds`, `seed` and method `details`
    (e.g. JBDA's rounds)."""

    name: str
    copy: nn.Module
    queries: int
    cost: Cost
    seconds: float
    seed: int
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


EXTRACTIONS: Registry[ExtractionBase] = Registry("extraction method")


def register_extraction(name: str):
    """Class decorator: register an `ExtractionBase` subclass under `name`, set its `name`."""

    def decorate(cls: type[ExtractionBase]) -> type[ExtractionBase]:
        cls.name = name
        EXTRACTIONS.register(name)(cls)
        return cls

    return decorate


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractionBase:
    """The fields every method shares; a method adds its own and implements `_extract`."""

    name: ClassVar[str] = "extraction"
    grouped: ClassVar[bool] = False  # whether `_extract` takes the pool's groups

    queries: int = 1000  # query budget: inputs sent to the target, each counted
    seed: int = 0  # seeds the copy's initialisation, its batches and the method's sampling
    arch: str | None = None  # the copy's architecture (None: small-cnn for images, else mlp)
    epochs: int = 10  # passes over the queried set when training the copy
    min_steps: int = 500  # ... but at least this many optimizer steps
    batch_size: int = 64  # samples per optimizer step
    lr: float = 3e-3  # Adam's peak learning rate (one-cycle schedule)

    def __post_init__(self) -> None:
        check_config_types(self, f"extraction {self.name!r}")
        require(self.queries >= 1, f"--queries must be >= 1, got {self.queries}")
        for field in ("epochs", "batch_size"):
            value = getattr(self, field)
            require(value >= 1, f"{field} must be >= 1, got {value}")
        require(self.min_steps >= 0, f"min_steps must be >= 0, got {self.min_steps}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")

    def __call__(
        self, model: Model | nn.Module, pool: Tensor, groups: Tensor | None = None
    ) -> ExtractionResult:
        return run_extraction(self, model, pool, groups)

    def _extract(self, api: Model, pool: Tensor, gen: torch.Generator) -> tuple[nn.Module, dict]:
        raise NotImplementedError

    def new_copy(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """A freshly initialised copy (seeded by `seed`, torch's global RNG untouched)."""
        arch = self.arch or ("small-cnn" if len(input_shape) == 3 else "mlp")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return build_arch(arch, input_shape, num_classes)

    def fit(self, x: Tensor, targets: Tensor, num_classes: int, gen: torch.Generator) -> nn.Module:
        """A new copy trained on `(x, targets)`: cross-entropy on labels (B,) or on
        probabilities (B, C) (soft labels, as Knockoff Nets train on)."""
        net = self.new_copy(tuple(x.shape[1:]), num_classes).to(x.device)
        return train_copy(net, x, targets, self, gen)


def train_copy(
    net: nn.Module, x: Tensor, targets: Tensor, config: ExtractionBase, gen: torch.Generator
) -> nn.Module:
    """Train `net` with Adam and a one-cycle schedule on `(x, targets)` for `config.epochs`
    passes (at least `config.min_steps` steps) of minibatches drawn with `gen`; eval mode."""
    n = x.shape[0]
    batch = min(config.batch_size, n)
    steps = max(config.epochs * -(-n // batch), config.min_steps, 1)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps)
    soft = targets.dim() == 2
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen, device=gen.device)
        log_p = nn.functional.log_softmax(net(x[idx]), 1)
        loss = (
            -(targets[idx] * log_p).sum(1).mean()
            if soft
            else nn.functional.nll_loss(log_p, targets[idx])
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return net.eval()


@torch.no_grad()
def query(api: Model, x: Tensor) -> Tensor:
    """The target's returned scores for `x`, in batches of `QUERY_BATCH`, as probabilities
    (B, C): a query view that already returns probabilities (a defended API, whose rows sum to
    1) is taken as is, logits are turned into probabilities."""
    out = torch.cat([api(x[i : i + QUERY_BATCH]) for i in range(0, x.shape[0], QUERY_BATCH)])
    sums = out.sum(1)
    if bool((out >= 0).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
        return out.float()
    return nn.functional.softmax(out.float(), 1)


@torch.no_grad()
def fidelity(copy: nn.Module | Model, target: Model | nn.Module, x: Tensor) -> float:
    """Share of `x` on which `copy` and `target` predict the same label (Jagielski et al.
    2020's fidelity); `target`'s passes are counted on its meter, not as queries."""
    target = as_model(target)
    ours = as_model(copy, target.bounds).predict(x)
    return float((ours.cpu() == target.predict(x).cpu()).float().mean())


@torch.no_grad()
def accuracy(net: nn.Module | Model, x: Tensor, y: Tensor) -> float:
    """Share of `x` that `net` labels as `y`."""
    return float((as_model(net).predict(x).cpu() == y.cpu()).float().mean())


def run_extraction(
    method: ExtractionBase, model: Model | nn.Module, pool: Tensor, groups: Tensor | None = None
) -> ExtractionResult:
    """The harness every method runs in: check the pool (and its `groups` (N,), integer
    group ids that grouped methods sample among; others ignore them), give the method the
    target's scores-only view (kept when `model` already is a query view, e.g. a defended
    API), count its passes, refuse a method that overspends, stamp cost and seconds."""
    model = as_model(model)
    if not isinstance(pool, Tensor) or not pool.is_floating_point() or pool.dim() < 2:
        raise BadInput(f"pool must be a float tensor (N, ...), got {describe(pool)}")
    if pool.shape[0] < 1:
        raise BadInput("pool is empty: give at least one input to query")
    lo, hi = model.bounds
    pmin, pmax = torch.aminmax(pool)
    if float(pmin) < lo - 1e-6 or float(pmax) > hi + 1e-6:
        raise BadInput(
            f"pool values lie in [{float(pmin):.3g}, {float(pmax):.3g}], outside the model's "
            f"bounds [{lo:g}, {hi:g}]"
        )
    if groups is not None and (
        not isinstance(groups, Tensor)
        or groups.shape != pool.shape[:1]
        or groups.is_floating_point()
        or bool((groups < 0).any())
    ):
        raise BadInput(
            f"groups must be non-negative integers (N,) with N = {pool.shape[0]} pool inputs, "
            f"got {describe(groups)}"
        )
    api = model.view(Access.SCORES) if model.access >= Access.SCORES else model
    pool = pool.to(model.device)
    gen = make_generator(method.seed, model.device)
    try:  # outside the scope: learning the class count is not the method's query
        model.resolve_num_classes(pool[:1])
        with torch.no_grad():
            model(pool[:1])
    except RuntimeError as exc:
        raise ShapeError(
            f"pool inputs of shape {tuple(pool.shape[1:])} do not fit model "
            f"{model.name!r}: {str(exc).splitlines()[0]}"
        ) from None
    start = time.perf_counter()
    with api.counting() as spent:
        extra = {"groups": None if groups is None else groups.to(pool.device)}
        copy, details = method._extract(api, pool, gen, **(extra if method.grouped else {}))
    cost = spent.freeze(time.perf_counter() - start)
    if cost.backward:  # impossible through a query view; kept as the contract's check
        raise RuntimeError(f"extraction {method.name!r} ran {cost.backward} backward passes")
    if cost.queries > method.queries:
        raise RuntimeError(
            f"extraction {method.name!r} spent {cost.queries} queries of {method.queries}"
        )
    return ExtractionResult(
        name=method.name,
        copy=copy,
        queries=cost.queries,
        cost=cost,
        seconds=cost.seconds,
        seed=method.seed,
        details=details,
    )
