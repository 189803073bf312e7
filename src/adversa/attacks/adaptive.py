"""Adaptive attacks on randomized and non-differentiable defenses (Athalye, Carlini & Wagner
2018, "Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420).

Both are wrappers of the *model*, not of an attack, so they compose with every gradient
attack in the registry:

- `EOT(model, samples=k)` (Expectation over Transformation, Athalye et al. 2018, Sec. 4.3):
  each call runs the randomized model on k draws of the batch (one stacked forward pass) and
  returns the logits averaged over the draws. Attacks therefore follow the gradient of the
  expected logits, which is the average of the k draws' gradients, and the harness verifies
  success against the expected classifier rather than one lucky draw.
  It is a view derived from the model (`Model.derive`): same module, class count and cost
  meter, with the averaging forward.
  Cost: k forward (and backward) passes per sample per call, counted by the inner model.
- `bpda(model, approximation="identity")` (Backward Pass Differentiable Approximation,
  Sec. 4.1): for the submodules marked non-differentiable (attribute `non_differentiable =
  True`) or named explicitly, keep the exact forward output but let gradients flow as through
  an approximation g: `out = g(x) + (f(x) - g(x)).detach()`. With g the identity this is the
  straight-through estimator. A context manager: hooks are removed on exit.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from adversa.errors import BadInput
from adversa.model import Model


def EOT(model: Model, samples: int) -> Model:
    """A view of `model` whose logits are the mean over `samples` stacked draws of it."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise BadInput(f"EOT samples must be an integer >= 1, got {samples!r}")
    if not isinstance(model, Model):
        raise BadInput(f"EOT needs an adversa Model, got {type(model).__name__}")
    forward = functools.partial(_mean_over_draws, model, samples)
    return model.derive(forward=forward, name=f"{model.name}+eot{samples}")


def _mean_over_draws(model: Model, samples: int, x: Tensor) -> Tensor:
    """The mean of `model`'s logits over `samples` draws of `x`, in one stacked pass."""
    draws = x.repeat((samples,) + (1,) * (x.dim() - 1))
    return model(draws).view(samples, x.shape[0], -1).mean(0)


Approximation = Callable[[Tensor], Tensor]


def _resolve(approximation: str | Approximation) -> Approximation:
    if callable(approximation):
        return approximation
    if approximation == "identity":
        return lambda x: x
    raise BadInput(f"bpda approximation must be 'identity' or a callable, got {approximation!r}")


def non_differentiable_modules(module: nn.Module) -> list[str]:
    """Qualified names of the submodules that declare `non_differentiable = True`."""
    return [name for name, m in module.named_modules() if getattr(m, "non_differentiable", False)]


@contextlib.contextmanager
def bpda(
    model: Model | nn.Module,
    approximation: str | Approximation = "identity",
    modules: list[str] | None = None,
) -> Iterator[list[str]]:
    """Within the block, the chosen submodules pass gradients through `approximation`.

    `modules` are qualified submodule names; by default every submodule marked
    `non_differentiable = True`. Each must map a tensor to a tensor of the same shape when the
    approximation is the identity. Yields the names it wrapped; raises `BadInput` if none.
    """
    module = model.module if isinstance(model, Model) else model
    g = _resolve(approximation)
    names = modules if modules is not None else non_differentiable_modules(module)
    table = dict(module.named_modules())
    missing = [n for n in names if n not in table]
    if missing:
        raise BadInput(f"bpda: no submodule named {', '.join(map(repr, missing))}")
    if not names:
        raise BadInput(
            "bpda: the model has no submodule marked non_differentiable=True; name the "
            "submodules to approximate"
        )

    def straight_through(_m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        (x,) = inputs
        if not torch.is_grad_enabled() or not x.requires_grad:
            return output
        approx = g(x)
        if approx.shape != output.shape:
            raise BadInput(
                f"bpda: the approximation returns shape {tuple(approx.shape)} but the module "
                f"returns {tuple(output.shape)}"
            )
        return approx + (output - approx).detach()

    handles = [table[n].register_forward_hook(straight_through) for n in names]
    try:
        yield names
    finally:
        for handle in handles:
            handle.remove()
