"""ONNX models: run by PyTorch operators for white-box attacks, or by onnxruntime, query-only.

`load_onnx(path)` first builds an `OnnxGraph` (adversa.model.onnx_graph: the graph's nodes run
by torch functions, so gradients reach the input) and checks it against onnxruntime on a
random input in the declared bounds (same logits within 1e-4, relative to their scale); then
every attack, gradient ones included, runs on it. A graph with an operator the interpreter
lacks, or whose result disagrees with onnxruntime, is served by onnxruntime instead, as a
score-access model: gradient attacks are refused with `AccessError`, and `evaluate` picks the
black-box attacks by default. The model's name says which path was taken
(`m.onnx [torch]`, `m.onnx [onnxruntime, query-only]`), and a warning names the operator.

Why not onnx2torch: its converters import torchvision (which does not import beside every
torch build here), and it failed on this package's own ResNet-18 exported at opsets 17 to 20
while onnxruntime ran it; an interpreter of the specification's operators is short.

ONNX files are protobuf messages: reading one runs no code from it, so no trust flag is needed.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from adversa.errors import AccessError, ModelLoadError
from adversa.model.onnx_graph import OnnxGraph, UnsupportedOperator
from adversa.model.wrapped import Access, Model

log = logging.getLogger(__name__)

CONVERTED, RUNTIME = "torch", "onnxruntime, query-only"
AGREEMENT_RTOL = 1e-4  # converted vs onnxruntime logits, relative to their scale


def _require(package: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise ModelLoadError(
            f"loading ONNX models needs the {package} package ({error}); install adversa's "
            "onnx extra (make does)"
        ) from None


class _Session(nn.Module):
    """An onnxruntime session as a module: float32 in, logits out, no gradients."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {_first(error)}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        batch = first.shape[0] if first.shape else None
        # A graph exported with a fixed batch size runs in chunks of that size.
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        data = x.detach().to("cpu", torch.float32).numpy()
        size = self.fixed_batch or len(data)
        outs = []
        for start in range(0, len(data), size):
            chunk = data[start : start + size]
            short = size - len(chunk)
            if short:  # the last chunk, padded with copies of its last row
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
            logits = np.asarray(self.session.run(None, {self.input_name: chunk})[0])
            outs.append(logits[: size - short])
        logits = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
        return torch.from_numpy(logits).to(device=x.device, dtype=x.dtype)


class OnnxRuntimeModel(Model):
    """An ONNX graph served by onnxruntime: score access only (see the module docs)."""

    def __init__(
        self,
        session: _Session,
        *,
        num_classes: int | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        name: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            session, num_classes=num_classes, bounds=bounds, name=name, mean=mean, std=std
        )
        self.access = Access.SCORES

    def __call__(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            raise AccessError(
                f"{self.name!r} runs in onnxruntime and grants no gradients; use a black-box "
                "attack (square, simba, hsj)"
            )
        return super().__call__(x)


def read_graph(path: Path) -> Any:
    """The ONNX `ModelProto` at `path` (protobuf: reading it runs nothing from the file)."""
    onnx = _require("onnx")
    try:
        return onnx.load(str(path))
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"{path}: not a readable ONNX model: {_first(error)}") from None


def input_shape(model: Any, path: Path) -> tuple[int, ...]:
    """The graph's first input's shape without the batch dimension (dynamic sizes: 1)."""
    graph = model.graph
    if not graph.input:
        raise ModelLoadError(f"{path}: the ONNX graph has no input")
    dims = graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims[1:])


def load_onnx(
    path: Path,
    *,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Model:
    """The ONNX model at `path`: run by torch operators (white-box) when every operator is
    supported and the result agrees with onnxruntime, else by onnxruntime (query-only).
    Cost: one probe forward pass of each."""
    proto = read_graph(path)  # parsed once, for the shape and the interpreter
    shape = input_shape(proto, path)
    session = _Session(path)
    runtime = OnnxRuntimeModel(
        session,
        num_classes=num_classes,
        bounds=bounds,
        name=f"{path.name} [{RUNTIME}]",
        mean=mean,
        std=std,
    )
    converted, reason = _convert(proto)
    if converted is not None:
        lo, hi = bounds
        probe = lo + (hi - lo) * torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            theirs = session(probe)
            try:
                ours = converted.eval()(probe)
            except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as failure:
                ours = None
                reason = f"running it with torch operators failed ({_first(failure)})"
        error = math.inf
        if ours is not None and ours.shape == theirs.shape:
            scale = float(theirs.abs().max().clamp_min(1.0))
            error = float((ours - theirs).abs().max()) / scale
        if error <= AGREEMENT_RTOL:
            return Model(
                converted.to(device),
                num_classes=num_classes,
                bounds=bounds,
                name=f"{path.name} [{CONVERTED}]",
                mean=mean,
                std=std,
            )
        if ours is not None:
            reason = f"its torch run disagrees with onnxruntime (relative error {error:.2g})"
    log.warning(
        "%s: %s; running it with onnxruntime as a query-only model: gradient attacks are "
        "refused and evaluate uses the black-box attacks",
        path,
        reason,
    )
    return runtime


def _convert(proto: Any) -> tuple[nn.Module | None, str]:
    """The graph as torch operators, or (None, the reason) when an operator is missing."""
    try:
        return OnnxGraph(proto), ""
    except UnsupportedOperator as error:
        return None, f"{error} is not supported for gradients"


def _first(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
