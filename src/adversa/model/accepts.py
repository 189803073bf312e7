"""`check_model_accepts`: does a model take this data? The one model/data check, on one sample:
commands run it before any work, and the library runs it when it must learn the number of
classes, or (`diagnose_mismatch`) when a forward pass fails, so that a mismatch is a one-line
`ShapeError` (exit 2) instead of a torch traceback halfway through.

What the model raises on that sample is sorted by its message: a shape mismatch (a matrix
product, a channel count, a reshape, a feature count, ...) becomes `ShapeError` naming the
data's shape and what the model's first layer takes; a dtype or device clash inside the model
becomes `BadInput` saying so; out of memory and anything unrecognised propagate unchanged
(exit 1: they are not the data's fault, or not known to be).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from adversa.errors import AdversaError, BadInput, ShapeError

if TYPE_CHECKING:  # wrapped.py imports this module
    from adversa.model.wrapped import Model

_CONV = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_OOM = re.compile(r"out of memory|can't allocate memory|cannot allocate memory", re.I)
_DEVICE = re.compile(
    r"same device|device type|Expected all tensors to be on|cuda\.\w*Tensor|on device", re.I
)
_DTYPE = re.compile(
    r"dtype|scalar type|Input type \(\w+\) and (?:weight|bias) type|type \w+ but found", re.I
)
_SHAPE = re.compile(
    r"shape|size mismatch|must match the size|channels|features|dimension|\b\d+D\b|unbatched"
    r"|values to unpack|input size|kernel size|input_size|normalized_shape|size of tensor"
    r"|broadcast|elements not|number of elements|out of bounds|view size",
    re.I,
)


def check_model_accepts(model: Model, x: Tensor, *, data: str = "the data") -> Tensor:
    """Run the first sample of `x` through `model` (eval mode, no gradients, past any query
    view, so it costs no counted query) and return its logits, of shape (1, classes).

    Raises `ShapeError` when the model rejects the sample's shape, returns something other
    than one row of logits, or returns a number of logits other than `model.num_classes`;
    `BadInput` on a dtype or device clash inside the model or on NaN or infinite logits;
    `data` names the data in the messages (e.g. "--data digits"). Out of memory and
    unrecognised errors propagate.
    """
    if not isinstance(x, Tensor) or x.dim() < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ShapeError(f"{data} must be a batch of shape (N, ...), got {shape}")
    if x.shape[0] == 0:
        raise ShapeError(f"{data} is an empty batch")
    inner = model.base  # past any view (query-only, EOT): one pass, never a query
    sample = x[:1].to(inner.device)
    per_sample = tuple(x.shape[1:])
    try:
        with torch.no_grad(), inner.eval_mode():
            out = inner.run_module(sample)
    except AdversaError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        text = str(exc)
        if _OOM.search(text):
            raise
        if _DEVICE.search(text):
            raise BadInput(
                f"model {inner.name!r} failed on {data} with a device error: "
                f"{_line(text, _DEVICE)}; put the whole model on one device"
            ) from None
        if _DTYPE.search(text):
            raise BadInput(
                f"model {inner.name!r} failed on {data} (cast to its dtype {inner.dtype}) with a "
                f"dtype error: {_line(text, _DTYPE)}; give its parameters and buffers one dtype"
            ) from None
        if _SHAPE.search(text):
            raise ShapeError(
                f"the model rejected an input of shape {per_sample} (per sample, "
                f"{math.prod(per_sample)} values, from {data}): {_line(text, _SHAPE)}"
                f"{_first_layer(inner.module)}"
            ) from None
        raise
    if out.dim() != 2:
        raise ShapeError(
            f"model {inner.name!r} must return logits of shape (N, classes), got shape "
            f"{tuple(out.shape)} for one input of shape {per_sample} from {data}"
        )
    if out.shape[0] != 1:
        raise ShapeError(
            f"model {inner.name!r} returned {out.shape[0]} rows of logits for one input of "
            f"shape {per_sample} from {data}: it reshapes the batch, so it expects inputs of "
            f"another shape{_first_layer(inner.module)}"
        )
    if not bool(out.isfinite().all()):
        raise BadInput(
            f"model {inner.name!r} returned NaN or infinite logits for the first input of "
            f"{data}: check the model and its weights"
        )
    if model.num_classes is not None and out.shape[1] != model.num_classes:
        raise ShapeError(
            f"model {inner.name!r} returns {out.shape[1]} logits per input, but it was "
            f"declared with num_classes={model.num_classes}"
        )
    return out


def infer_num_classes(model: Model, x: Tensor) -> int:
    """The model's number of classes, without changing the model: `model.num_classes` when
    known (no pass is made, so a randomised model's draws stay as they were), else the width
    of the logits `check_model_accepts` returns for `x[:1]`. `Model.resolve_num_classes`
    keeps the result on the model."""
    if model.num_classes is not None:
        return model.num_classes
    return int(check_model_accepts(model, x, data="x").shape[1])


@contextlib.contextmanager
def diagnose_mismatch(model: Model, x: Tensor, *, data: str = "the data") -> Iterator[None]:
    """Run a block that feeds `x` to `model`; when it fails with an error a model/data
    mismatch could cause, run `check_model_accepts` to say so (a `ShapeError` or `BadInput`
    in its place), else let the original error through. Costs nothing when the block works,
    unlike a check before it."""
    try:
        yield
    except AdversaError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError):
        check_model_accepts(model, x, data=data)
        raise


def _line(text: str, pattern: re.Pattern[str]) -> str:
    """The line of an error message that says what happened (TorchScript and torch.export
    put their own first line above the original message)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    return next((line for line in lines if pattern.search(line)), lines[0])


def _first_layer(module: nn.Module) -> str:
    """ "; its first layer takes ..." for the first linear or convolutional layer, if any."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            return f"; its first layer, {type(layer).__name__}, takes {layer.in_features} features"
        if isinstance(layer, _CONV):
            return f"; its first layer, {type(layer).__name__}, takes {layer.in_channels} channels"
    return ""
