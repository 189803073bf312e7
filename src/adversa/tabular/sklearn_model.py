"""Models that are not PyTorch: any object with scikit-learn's `predict_proba` (or only
`predict`) as an adversa query view, so that black-box attacks (square on flat inputs, hsj)
and the transfer attack run on it.

`SklearnModel(estimator)` is a `Model` that grants score access (`predict_proba`; the scores
it returns are log-probabilities, clamped at 1e-12, so that margins stay informative near 0
and 1) or label access only (`predict`; one-hot labels). It refuses gradients with
`AccessError`, so gradient attacks fail fast, and it never runs a backward pass. Each call is
one batched `predict_proba` on a float64 numpy copy of the batch (no per-sample loop); calls
count as forward passes, and through the query views as queries.

`load_sklearn(path, trust_model_file=True)` reads a joblib/pickle file. Unpickling runs
arbitrary code from the file, so it refuses unless `trust_model_file` is set (CLI:
`--trust-model-file`).

`fit_surrogate(model, x)` distils the model into a small PyTorch MLP trained on its labels
(Papernot et al. 2017, "Practical Black-Box Attacks against Machine Learning",
arXiv:1602.02697, without their Jacobian augmentation: random points around the data
instead), for `get_attack("transfer", threat, surrogate=...)`. Cost: the target answers
`len(x) * (1 + augment)` queries once; training is `epochs` full-batch steps on the MLP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from adversa.errors import AccessError, BadInput, ModelLoadError
from adversa.model import Access, Model
from adversa.rng import make_generator
from adversa.safeload import PICKLE, require_trust


class _Estimator(nn.Module):
    """Holds the estimator so that `Model`'s module machinery (eval mode, frozen) applies."""

    def __init__(self, estimator: Any, scores: bool) -> None:
        super().__init__()
        self.estimator = estimator
        self.scores = scores
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise BadInput(
                f"estimator {type(estimator).__name__} has no classes_: fit it before wrapping"
            )
        self.classes = np.asarray(classes)
        if not np.array_equal(self.classes, np.arange(len(self.classes))):
            raise BadInput(
                f"estimator classes must be 0..C-1 (the labels adversa uses), got "
                f"{self.classes.tolist()[:10]}"
            )

    def forward(self, x: Tensor) -> Tensor:
        data = x.detach().reshape(x.shape[0], -1).cpu().numpy().astype(np.float64)
        if self.scores:
            proba = np.asarray(self.estimator.predict_proba(data))
            out = torch.from_numpy(proba).clamp_min(1e-12).log()
        else:
            labels = torch.from_numpy(np.asarray(self.estimator.predict(data)).astype(np.int64))
            out = nn.functional.one_hot(labels, len(self.classes)).double()
        return out.to(device=x.device, dtype=x.dtype)


class SklearnModel(Model):
    """A fitted scikit-learn-style classifier as a query-only `Model` (see the module docs).

    `access="scores"` (default when the estimator has `predict_proba`) or `"labels"`.
    """

    def __init__(
        self,
        estimator: Any,
        *,
        access: str | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        name: str | None = None,
    ) -> None:
        has_proba = hasattr(estimator, "predict_proba")
        if not (has_proba or hasattr(estimator, "predict")):
            raise BadInput(
                f"estimator must have predict_proba or predict, got {type(estimator).__name__}"
            )
        access = access or ("scores" if has_proba else "labels")
        if access not in ("scores", "labels"):
            raise BadInput(f"access must be 'scores' or 'labels', got {access!r}")
        if access == "scores" and not has_proba:
            raise BadInput(
                f"access='scores' needs predict_proba, which {type(estimator).__name__} lacks"
            )
        module = _Estimator(estimator, scores=access == "scores")
        super().__init__(
            module,
            num_classes=len(module.classes),
            bounds=bounds,
            name=name or type(estimator).__name__,
        )
        self.access = Access.SCORES if access == "scores" else Access.LABELS

    def __call__(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            raise AccessError(f"{self.name!r} is not differentiable: it grants no gradients")
        return super().__call__(x)


def load_joblib(path: str | Path, *, trust_model_file: bool = False) -> Any:
    """The object in a joblib/pickle file. Loading runs code from the file:
    `trust_model_file=True` is required (CLI: `--trust-model-file`)."""
    path = Path(path).expanduser()
    require_trust(path, PICKLE, trust_model_file)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling can raise anything
        raise ModelLoadError(f"{path}: not a joblib/pickle file; {type(exc).__name__}") from None


def load_sklearn(
    path: str | Path, *, trust_model_file: bool = False, **options: Any
) -> SklearnModel:
    """A fitted estimator from a joblib/pickle file (`load_joblib`) as a query-only `Model`."""
    estimator = load_joblib(path, trust_model_file=trust_model_file)
    return SklearnModel(estimator, name=Path(path).name, **options)


def fit_surrogate(
    model: Model,
    x: Tensor,
    *,
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 0.01,
    augment: int = 2,
    noise: float = 0.1,
    seed: int = 0,
) -> Model:
    """A PyTorch MLP trained to imitate `model`'s labels on `x` and on `augment` noisy copies
    of it (Gaussian, std `noise` times the box width, clipped to the box)."""
    if x.dim() != 2:
        raise BadInput(f"fit_surrogate needs flat inputs (N, D), got shape {tuple(x.shape)}")
    if augment < 0 or epochs < 1 or hidden < 1:
        raise BadInput(
            f"augment must be >= 0, epochs and hidden >= 1, got {augment}, {epochs}, {hidden}"
        )
    gen = make_generator(seed)
    lo, hi = model.bounds
    extra = [
        (x + noise * (hi - lo) * torch.randn(x.shape, generator=gen)).clamp(lo, hi)
        for _ in range(augment)
    ]
    data = torch.cat([x, *extra]).float()
    oracle = model.view(Access.LABELS)
    with torch.no_grad():
        labels = oracle(data).argmax(1)
    num_classes = model.num_classes or int(labels.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # scoped to this block: parameter init only
        net = nn.Sequential(
            nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        net.append(nn.Linear(hidden, num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(data), labels).backward()
        opt.step()
    net.eval()
    return Model(net, num_classes=num_classes, bounds=model.bounds, name=f"surrogate-{model.name}")
