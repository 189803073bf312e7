"""The channels-last memory layout for convolutional models (`Model(channels_last=True)`).

On CPU (oneDNN) and on GPUs with tensor cores, convolutions in NHWC layout run faster than in
the default NCHW: on one CPU thread, PGD-10 on ResNet-18 at 224x224 takes about 12% less
time (docs/models.md). Only the layout changes, never a value's meaning, so the module's
parameters are converted once and each 4-D input is converted on its way in. Gradients leave
in the caller's layout, so attacks, reports and saved tensors never see the NHWC strides.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adversa.errors import BadInput


class _ToChannelsLast(torch.autograd.Function):
    """`x` in channels-last layout; its gradient goes back contiguous (one copy of an
    input-sized tensor per backward pass)."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous()


def to_channels_last(x: Tensor) -> Tensor:
    """A 4-D `x` in channels-last layout (differentiably); anything else unchanged."""
    if x.dim() != 4:
        return x
    return _ToChannelsLast.apply(x)


def convert_module(module: nn.Module, channels_last: object) -> bool:
    """Converts `module`'s 4-D parameters and buffers to channels-last, in place, when
    `channels_last` is True; returns the flag. The parameters stay the same objects (an
    optimiser made before keeps working)."""
    if not isinstance(channels_last, bool):
        raise BadInput(f"channels_last must be True or False, got {channels_last!r}")
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return channels_last


def is_layout_error(error: RuntimeError) -> bool:
    """Whether `error` is what a forward assuming the default layout raises on channels-last
    strides (`.view` on a tensor whose strides it cannot reinterpret); out-of-memory and
    other errors are not the layout's and pass through."""
    if isinstance(error, torch.OutOfMemoryError):
        return False
    text = str(error)
    return "view size is not compatible" in text or "stride" in text


def layout_error(name: str, error: RuntimeError) -> BadInput:
    """The one line for a forward pass that raised in channels-last layout: the module's
    error, and the usual cause when the model runs in the default layout."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BadInput(
        f"--channels-last: model {name!r} raised on channels-last input: {first} (if it runs "
        "without --channels-last, its forward assumes the default layout, e.g. calls .view "
        "where .reshape is needed)"
    )
