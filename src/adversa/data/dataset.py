"""`Dataset`: labelled inputs in known bounds, as every command and attack consumes them."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from adversa.errors import BadInput, ShapeError

KINDS: tuple[str, ...] = ("image", "tabular")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled set of inputs, ready for a model that maps `bounds` to logits.

    `x` is float32 of shape (N, ...) (images: (N, C, H, W)); `y` is int64 of shape (N,) with
    labels in [0, num_classes). Values of `x` are expected, not guaranteed, to lie in `bounds`:
    user files are never rescaled silently, and the evaluation's bounds check reports them.
    `meta` records provenance: the source, the split and its seed, and for scaled tabular data
    the scaler (see `unscale`).
    """

    name: str
    x: Tensor  # float32, (N, ...), values in `bounds`
    y: Tensor  # int64, (N,), labels in [0, num_classes)
    num_classes: int
    kind: str  # "image" or "tabular"
    bounds: tuple[float, float] = (0.0, 1.0)
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or self.x.dtype != torch.float32:
            raise BadInput(f"dataset {self.name!r}: x must be a float32 tensor")
        if not isinstance(self.y, Tensor) or self.y.dtype != torch.int64:
            raise BadInput(f"dataset {self.name!r}: y must be an int64 tensor")
        if self.x.dim() < 2 or self.y.dim() != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ShapeError(
                f"dataset {self.name!r}: x must be (N, ...) and y (N,), got x "
                f"{tuple(self.x.shape)} and y {tuple(self.y.shape)}"
            )
        if self.kind not in KINDS:
            raise BadInput(f"dataset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.num_classes < 1:
            raise BadInput(f"dataset {self.name!r}: num_classes must be >= 1")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise BadInput(
                f"dataset {self.name!r}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes"
            )
        if self.feature_names is not None and len(self.feature_names) != self.x[0].numel():
            raise BadInput(
                f"dataset {self.name!r}: {len(self.feature_names)} feature names for "
                f"{self.x[0].numel()} features"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. (1, 28, 28)."""
        return tuple(self.x.shape[1:])

    def subset(self, index: Tensor | slice) -> Dataset:
        """The samples at `index` (a slice, an index tensor or a bool mask), same metadata."""
        return dataclasses.replace(self, x=self.x[index], y=self.y[index])

    def take(self, n: int | None) -> Dataset:
        """The first `n` samples (all of them when `n` is None or too large)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise BadInput(f"n must be >= 1, got {n}")
        return self.subset(slice(0, n))


def unscale(dataset: Dataset, x: Tensor) -> Tensor:
    """Map scaled features back to the original units: `x * scale + min`, per feature.

    Only for datasets that carry a scaler in `meta["scaler"]` (e.g. "breast-cancer"); `x` is
    (N, F) or (F,) in the scaled space.
    """
    scaler = dataset.meta.get("scaler")
    if scaler is None:
        raise BadInput(f"dataset {dataset.name!r} was not scaled; there is nothing to unscale")
    lo = torch.as_tensor(scaler["min"], dtype=x.dtype, device=x.device)
    scale = torch.as_tensor(scaler["scale"], dtype=x.dtype, device=x.device)
    if x.shape[-1] != lo.shape[0]:
        raise ShapeError(
            f"x has {x.shape[-1]} features, the scaler of {dataset.name!r} has {lo.shape[0]}"
        )
    return x * scale + lo
