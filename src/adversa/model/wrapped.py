"""`Model`: a classifier `nn.Module` mapping a batch in the threat model's bounds to logits,
wrapped so that attacks can count its cost and run it in eval mode without surprises.

A model can be *derived* (`Model.derive`): a view with another forward (the mean over EOT
draws) or a lower access level (scores or labels only) that shares the parent's module,
bounds, class count and `CostMeter`, so that a pass through any view is counted once, in
the scopes opened on any of them. Nothing copies another model's state.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from adversa.errors import AccessError, BadInput, describe, is_integer
from adversa.model.accepts import infer_num_classes
from adversa.model.cost import Cost, CostCounter, CostMeter
from adversa.model.layout import (
    convert_module,
    is_layout_error,
    layout_error,
    to_channels_last,
)
from adversa.model.options import AUTOCAST_DTYPES, check_autocast, check_normalization
from adversa.model.outputs import describe_output, take_logits
from adversa.nets.normalize import Normalize
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
    belongs inside the module: `mean` and `std` (one value, or one per channel) put
    `(x - mean) / std` in front of it, so attacks keep working on pixels in `bounds` while the
    network sees what it was trained on (`normalization` records them for reports).
    `num_classes` is given at construction or, when unknown, learnt once by
    `resolve_num_classes` (the harnesses call it on their first batch).

    `autocast` ("bfloat16" or "float16") runs the module under `torch.autocast` inside
    `reduced_precision()` scopes only: the harness opens one around an attack's search and
    closes it before its verification, so attacks run at the lower precision and every
    reported success is checked in the model's own precision. Logits leave in the model's
    dtype either way.

    `channels_last=True` converts the module's 4-D parameters to the channels-last memory
    layout (in place) and each 4-D input on its way in: faster convolutions on CPU and on
    tensor-core GPUs, the same values; gradients come back in the caller's layout. A forward
    that fails on that layout's strides (`.view`) raises `BadInput` naming the flag and the
    module's error; any other error passes through unchanged.

    `meter` is the `CostMeter` the passes are counted in: a fresh one, or that of another
    model whose passes this one makes (a composite around a classifier), so that both count
    in the same scopes. Views made by `derive` always share their parent's.

    Outputs other than a tensor are read by one rule, the same for every command: an output
    with a `logits` attribute or key (a Hugging Face `ModelOutput`, a dict, a named tuple)
    gives its `logits`; otherwise a tuple or list gives its first tensor. Either way a warning
    is logged once per `Model`, naming what the module returned and what was taken. Any other
    output (a dict without "logits", a tuple without a tensor, a number) raises `BadInput`
    naming what the module returned.
    """

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
        meter: CostMeter | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        autocast: str | None = None,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise BadInput(f"module must be a torch.nn.Module, got {describe(module)}")
        self.normalization = check_normalization(mean, std)
        if self.normalization is not None:
            module = nn.Sequential(Normalize(**self.normalization), module)
            if isinstance(module[1], torch.jit.ScriptModule):  # keep a TorchScript model whole
                module = torch.jit.script(module)
        if num_classes is not None and not (is_integer(num_classes) and num_classes >= 1):
            raise BadInput(
                f"num_classes must be a positive integer or None, got {describe(num_classes)}"
            )
        if not isinstance(name, str):
            raise BadInput(f"name must be a string, got {describe(name)}")
        if meter is not None and not isinstance(meter, CostMeter):
            raise BadInput(f"meter must be a CostMeter or None, got {describe(meter)}")
        self.module = module
        self._num_classes = None if num_classes is None else int(num_classes)
        self.bounds = check_bounds(bounds)
        self.name = name
        self.meter = meter if meter is not None else CostMeter()
        # How much of the model callers get; query views and non-PyTorch models grant less.
        self.access = Access.GRADIENT
        self._output_warned = False
        param = next(module.parameters(), None)
        buffer = next(module.buffers(), None)
        ref = param if param is not None else buffer
        self.device = ref.device if ref is not None else torch.device("cpu")
        self.dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        self.autocast = check_autocast(autocast, self.device)
        self.channels_last = convert_module(module, channels_last)
        self._reduced = False  # inside a reduced_precision() scope (kept by the base model)

    @property
    def num_classes(self) -> int | None:
        """The number of classes, or None while unknown (see `resolve_num_classes`)."""
        return self._num_classes

    @property
    def base(self) -> Model:
        """The model whose module pass this one's forward builds on: itself unless derived."""
        return self

    @property
    def counts_queries(self) -> bool:
        """True when calls through this model are counted as black-box queries (a query view,
        or a view derived from one)."""
        return False

    def resolve_num_classes(self, x: Tensor) -> int:
        """The number of classes. When it was not given at construction, it is learnt here,
        once, by `infer_num_classes` on `x` (one forward pass of the base model on `x[:1]`)
        and kept by the base model, so that it and every view derived from it know it."""
        base = self.base
        if base._num_classes is None:
            base._num_classes = infer_num_classes(self, x)
        return base._num_classes

    def __call__(self, x: Tensor) -> Tensor:
        return self.run_module(x)

    def run_module(self, x: Tensor) -> Tensor:
        """One pass of the module on `x` (cast to the model's dtype), counted in the meter:
        what calling a plain model does, and what views and composites build on."""
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        base = self.base
        if not base.channels_last:
            logits = self._run(x)
        else:
            try:
                logits = self._run(to_channels_last(x))
            except RuntimeError as error:
                if not is_layout_error(error):
                    raise
                raise layout_error(self.name, error) from error
        self.meter.record(logits, x.shape[0])
        return logits

    def _run(self, x: Tensor) -> Tensor:
        base = self.base
        if base._reduced and base.autocast is not None:
            with torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[base.autocast]):
                return self._logits(self.module(x)).to(self.dtype)
        return self._logits(self.module(x))

    @contextlib.contextmanager
    def reduced_precision(self) -> Iterator[None]:
        """Passes through this model and its views run under `autocast` (when set) until
        the scope closes."""
        base = self.base
        previous, base._reduced = base._reduced, True
        try:
            yield
        finally:
            base._reduced = previous

    def _logits(self, out: object) -> Tensor:
        """The logits in the module's output, by the rule in the class docstring."""
        if isinstance(out, Tensor):
            return out
        logits, taken = take_logits(out)
        if logits is None:
            raise BadInput(
                f"model {self.name!r} returned {describe_output(out)}, not logits: its forward "
                "must return a tensor (N, classes), an output with .logits, or a tuple whose "
                "first tensor is the logits"
            )
        if not self._output_warned:
            self._output_warned = True
            log.warning(
                "model %r returned %s; using %s, of shape %s, as the logits",
                self.name,
                describe_output(out),
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

    def counting(self) -> contextlib.AbstractContextManager[CostCounter]:
        """Open a scope; the yielded counter receives every pass made while it is open, through
        this model or any model sharing its meter (its views, its parent)."""
        return self.meter.scope()

    def eval_mode(self) -> contextlib.AbstractContextManager[None]:
        """Put every submodule in eval mode; restore each one's previous mode on exit."""
        return eval_mode(self.module)

    def frozen(self) -> contextlib.AbstractContextManager[None]:
        """Eval mode and parameters with requires_grad=False, so that backward passes compute
        input gradients only. Both are restored on exit, even on error."""
        return frozen(self.module)

    def derive(
        self,
        *,
        forward: Callable[[Tensor], Tensor] | None = None,
        access: Access | None = None,
        name: str | None = None,
    ) -> Model:
        """A view of this model: the same module, device, bounds, class count and meter, with
        `forward` in place of calling this model (it should call this model, so that its
        passes are counted), `access` (at most this model's) and `name`.

        A view below gradient access refuses inputs that require gradients (`AccessError`) and
        runs without autograd; the first such view on a chain counts each call's samples as
        queries as well as forward passes (a view of it does not count them again)."""
        return _Derived(self, forward=forward, access=access, name=name)

    def scores_only(self) -> Model:
        """A view that returns detached scores, counts queries and refuses gradients."""
        return self.derive(access=Access.SCORES)

    def labels_only(self) -> Model:
        """A view that returns one-hot labels (B, C), counts queries and refuses gradients."""
        return self.derive(forward=functools.partial(_one_hot_labels, self), access=Access.LABELS)

    def view(self, access: Access) -> Model:
        """What a black-box attack needing `access` queries: this model for gradient access or
        when it already is a query view of that level, else a query view (so that its calls
        count as queries)."""
        if access == Access.GRADIENT or (access == self.access and self.counts_queries):
            return self
        return self.labels_only() if access == Access.LABELS else self.derive(access=access)


class _Derived(Model):
    """A view made by `Model.derive`; see there."""

    def __init__(
        self,
        parent: Model,
        *,
        forward: Callable[[Tensor], Tensor] | None,
        access: Access | None,
        name: str | None,
    ) -> None:
        if forward is not None and not callable(forward):
            raise BadInput(f"forward must be a callable or None, got {describe(forward)}")
        if access is not None and not isinstance(access, Access):
            raise BadInput(f"access must be an Access level or None, got {describe(access)}")
        if access is not None and access > parent.access:
            raise AccessError(
                f"model {parent.name!r} grants {parent.access.name.lower()} access; a view of "
                f"it cannot grant {access.name.lower()}"
            )
        super().__init__(
            parent.module, bounds=parent.bounds, name=name or parent.name, meter=parent.meter
        )
        self.parent = parent
        self.access = parent.access if access is None else access
        self.rejects = parent.rejects
        self.device, self.dtype = parent.device, parent.dtype
        self._forward = forward if forward is not None else parent
        self._counts_own_queries = self.access < Access.GRADIENT and not parent.counts_queries

    @property
    def num_classes(self) -> int | None:
        return self.parent.num_classes

    @property
    def base(self) -> Model:
        return self.parent.base

    @property
    def counts_queries(self) -> bool:
        return self._counts_own_queries or self.parent.counts_queries

    def __call__(self, x: Tensor) -> Tensor:
        if self.access == Access.GRADIENT:
            return self._forward(x)
        if x.requires_grad:
            raise AccessError(
                f"the {self.access.name.lower()}-only view of {self.name!r} grants no "
                "gradient access"
            )
        with torch.no_grad():
            out = self._forward(x)
        if self._counts_own_queries:
            self.meter.add(Cost(queries=x.shape[0]))
        return out


def _one_hot_labels(model: Model, x: Tensor) -> Tensor:
    scores = model(x)
    return nn.functional.one_hot(scores.argmax(1), scores.shape[1]).to(scores.dtype)


def as_model(model: Model | nn.Module, bounds: tuple[float, float] = (0.0, 1.0)) -> Model:
    """`model` itself, or a plain `nn.Module` wrapped as a `Model` with `bounds`."""
    if isinstance(model, Model):
        return model
    if isinstance(model, nn.Module):
        return Model(model, bounds=bounds)
    raise BadInput(f"model must be an adversa Model or a torch.nn.Module, got {type(model)}")
