"""`Model`: a classifier `nn.Module` mapping a batch in the threat model's bounds to logits,
wrapped so that attacks can count its cost and run it in eval mode without surprises."""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from adversa.errors import BadInput, describe, is_integer
from adversa.model.cost import CostCounter
from adversa.threat import check_bounds

log = logging.getLogger(__name__)


class Access(enum.IntEnum):
    """How much of the model an attack needs; views grant less than full gradient access."""

    LABELS = 0
    SCORES = 1
    GRADIENT = 2


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Every submodule of `module` in eval mode; each one's previous mode restored on exit."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.train(training)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and requires_grad=False on every parameter; both restored on exit."""
    params = [(p, p.requires_grad) for p in module.parameters()]
    with eval_mode(module):
        for p, _ in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in params:
                p.requires_grad_(flag)


class Model:
    """Wraps a classifier so that every forward pass (and every backward pass through its
    logits) is counted, per sample, in each open `counting()` scope.

    The module must map inputs in `bounds` to logits of shape (B, num_classes); normalisation
    belongs inside the module. `num_classes` is inferred on first use when not given.

    Outputs other than a tensor are read by one rule, the same for every command: an output
    with a `logits` attribute or key (a Hugging Face `ModelOutput`, a dict, a named tuple)
    gives its `logits`; otherwise a tuple or list gives its first tensor. Either way a warning
    is logged once per `Model`, naming what the module returned and what was taken. Any other
    output (a dict without "logits", a tuple without a tensor, a number) raises `BadInput`
    naming what the module returned.
    """

    access: Access = Access.GRADIENT
    # True when the last output means "input rejected" (a detector in front of the
    # classifier): predicting it is never an attack's success.
    rejects: bool = False

    def __init__(
        self,
        module: nn.Module,
        *,
        num_classes: int | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        name: str = "model",
    ) -> None:
        if not isinstance(module, nn.Module):
            raise BadInput(f"module must be a torch.nn.Module, got {describe(module)}")
        if num_classes is not None and not (is_integer(num_classes) and num_classes >= 1):
            raise BadInput(
                f"num_classes must be a positive integer or None, got {describe(num_classes)}"
            )
        if not isinstance(name, str):
            raise BadInput(f"name must be a string, got {describe(name)}")
        self.module = module
        self.num_classes = None if num_classes is None else int(num_classes)
        self.bounds = check_bounds(bounds)
        self.name = name
        self._output_warned = False
        param = next(module.parameters(), None)
        buffer = next(module.buffers(), None)
        ref = param if param is not None else buffer
        self.device = ref.device if ref is not None else torch.device("cpu")
        self.dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        self._counters: list[CostCounter] = []

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        logits = self._logits(self.module(x))
        n = x.shape[0]
        counters = tuple(self._counters)
        for counter in counters:
            counter.forward += n
        if counters and logits.requires_grad:

            def count_backward(grad: Tensor) -> None:
                for counter in counters:
                    counter.backward += n

            logits.register_hook(count_backward)
        return logits

    def _logits(self, out: object) -> Tensor:
        """The logits in the module's output, by the rule in the class docstring."""
        if isinstance(out, Tensor):
            return out
        logits, taken = _take_logits(out)
        if logits is None:
            raise BadInput(
                f"model {self.name!r} returned {_what(out)}, not logits: its forward must "
                "return a tensor (N, classes), an output with .logits, or a tuple whose first "
                "tensor is the logits"
            )
        if not self._output_warned:
            self._output_warned = True
            log.warning(
                "model %r returned %s; using %s, of shape %s, as the logits",
                self.name,
                _what(out),
                taken,
                tuple(logits.shape),
            )
        return logits

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Predicted labels (B,) for `x`, in batches, without gradients."""
        with self.eval_mode():
            preds = [
                self(x[i : i + batch_size].to(self.device)).argmax(1)
                for i in range(0, x.shape[0], batch_size)
            ]
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=self.device)

    @contextlib.contextmanager
    def counting(self) -> Iterator[CostCounter]:
        """Open a scope; the yielded counter receives every pass made while it is open."""
        counter = CostCounter()
        self._counters.append(counter)
        try:
            yield counter
        finally:
            self._counters.remove(counter)

    def eval_mode(self) -> contextlib.AbstractContextManager[None]:
        """Put every submodule in eval mode; restore each one's previous mode on exit."""
        return eval_mode(self.module)

    def frozen(self) -> contextlib.AbstractContextManager[None]:
        """Eval mode and parameters with requires_grad=False, so that backward passes compute
        input gradients only. Both are restored on exit, even on error."""
        return frozen(self.module)

    def scores_only(self) -> ScoresOnly:
        return ScoresOnly(self)

    def labels_only(self) -> LabelsOnly:
        return LabelsOnly(self)

    def view(self, access: Access) -> Model:
        """This model if it grants exactly `access`, else the matching query-only view."""
        if access == self.access or access == Access.GRADIENT:
            return self
        return self.scores_only() if access == Access.SCORES else self.labels_only()


def _take_logits(out: object) -> tuple[Tensor | None, str]:
    """(logits, which part of `out` they are), or (None, "") when `out` holds none."""
    if isinstance(out, Mapping):
        value = out.get("logits")
        return (value, "its 'logits' entry") if isinstance(value, Tensor) else (None, "")
    value = getattr(out, "logits", None)
    if isinstance(value, Tensor):
        return value, "its .logits"
    if isinstance(out, tuple | list):
        for i, item in enumerate(out):
            if isinstance(item, Tensor):
                return item, f"element {i}"
    return None, ""


def _what(out: object) -> str:
    """What a module returned, for a message: the type and, for containers, their parts."""
    kind = type(out).__name__
    if isinstance(out, Mapping):
        keys = ", ".join(repr(k) for k in list(out)[:6])
        return f"a {kind} with keys [{keys}]"
    if isinstance(out, tuple | list):
        parts = ", ".join(type(item).__name__ for item in out[:6])
        return f"a {kind} of {len(out)} items ({parts})"
    return f"a {kind}"


class ScoresOnly(Model):
    """A query-only view: returns detached scores, counts queries, refuses gradients."""

    access = Access.SCORES

    def __init__(self, inner: Model) -> None:
        while isinstance(inner, ScoresOnly):  # a view of a view would count queries twice
            inner = inner._inner
        self.__dict__.update(inner.__dict__)
        self._inner = inner

    def __call__(self, x: Tensor) -> Tensor:
        from adversa.errors import AccessError

        if x.requires_grad:
            raise AccessError(
                f"{type(self).__name__} view of {self.name!r} grants no gradient access"
            )
        with torch.no_grad():
            out = self._inner(x)
        for counter in self._inner._counters:
            counter.queries += x.shape[0]
        return out


class LabelsOnly(ScoresOnly):
    """A decision-only view: returns one-hot labels (B, C) instead of scores."""

    access = Access.LABELS

    def __call__(self, x: Tensor) -> Tensor:
        scores = super().__call__(x)
        return torch.nn.functional.one_hot(scores.argmax(1), scores.shape[1]).to(scores.dtype)
