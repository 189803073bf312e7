"""Detectors in the classifier's feature space.

- `MahalanobisDetector` (Lee, Lee, Lee & Shin 2018, "A Simple Unified Framework for Detecting
  Out-of-Distribution Samples and Adversarial Attacks", arXiv:1807.03888): class-conditional
  Gaussians with a shared covariance fitted to clean features, per layer; a layer's score is
  the squared Mahalanobis distance to the closest class mean. The paper combines layers with
  a logistic regression fitted on adversarial examples and pre-processes inputs; to stay
  fitted on clean data only, we z-score each layer with its clean statistics and average.
- `LIDDetector` (Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey 2018,
  "Characterizing Adversarial Subspaces Using Local Intrinsic Dimensionality",
  arXiv:1801.02613): the maximum-likelihood LID estimate of each input against a clean
  reference set, per layer, -(1/k sum_i log(d_i / d_k))^-1 over its k nearest neighbours.
  The paper fits a logistic regression on LIDs of clean, noisy and adversarial examples; to
  stay fitted on clean data only, we z-score each layer's LID with its clean statistics
  (leave-one-out on the reference set) and average the layers.

Features are read with forward hooks during one classifier pass, so both scores are
differentiable in the input. By default both use the output of every activation module
(Mahalanobis averages feature maps over space, as Lee et al.), LID also the logits; a
classifier without activation modules falls back to "penultimate", the input of its last
`nn.Linear` (all but the last layer of an `nn.Sequential`).

Cost per input: one classifier pass, plus per layer a (D x D) quadratic form and a distance to
each class mean (Mahalanobis), or distances to the M reference points (LID: O(M x D)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from adversa.errors import BadInput, ShapeError
from adversa.input_defenses.detectors import Detector, module_dtype

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.Tanh)
LOGITS = "logits"  # the layer name that stands for the classifier's output
PENULTIMATE = "penultimate"  # the input of the last nn.Linear


def penultimate_layer(module: nn.Module) -> str:
    """The qualified name of the last `nn.Linear` in `module` (whose input is the penultimate
    feature vector); `BadInput` when there is none."""
    names = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise BadInput(
            "the classifier has no nn.Linear layer to take penultimate features from; name "
            "the feature layer explicitly (layer=...)"
        )
    return names[-1]


def activation_layers(module: nn.Module) -> list[str]:
    """Qualified names of the activation submodules of `module`, in registration order."""
    return [name for name, m in module.named_modules() if isinstance(m, ACTIVATIONS) and name]


def check_layers(module: nn.Module, layers: Sequence[str]) -> list[str]:
    """`layers` as a list, each a submodule name of `module`, "penultimate" or "logits"."""
    table = dict(module.named_modules())
    missing = [n for n in layers if n not in table and n not in (PENULTIMATE, LOGITS)]
    if missing:
        raise BadInput(
            f"the classifier has no submodule named {', '.join(map(repr, missing))}; "
            f"submodules: {', '.join(n for n in table if n) or 'none'}"
        )
    if PENULTIMATE in layers:
        penultimate_layer(module)
    return list(layers)


@contextlib.contextmanager
def _tap(module: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Record, during the forward passes made inside the block, the output of each named
    submodule of `module` ("penultimate": the input of its last `nn.Linear`)."""
    table = dict(module.named_modules())
    named = {n: (penultimate_layer(module) if n == PENULTIMATE else n) for n in layers}
    missing = [n for n in named.values() if n not in table]
    if missing:
        raise BadInput(
            f"the classifier has no submodule named {', '.join(map(repr, missing))}; "
            f"submodules: {', '.join(n for n in table if n) or 'none'}"
        )
    seen: dict[str, Tensor] = {}

    def pre(name: str):
        return lambda _m, args: seen.__setitem__(name, args[0])

    def post(name: str):
        return lambda _m, _args, out: seen.__setitem__(name, out)

    handles = [
        table[target].register_forward_pre_hook(pre(name))
        if name == PENULTIMATE
        else table[target].register_forward_hook(post(name))
        for name, target in named.items()
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def default_layers(module: nn.Module) -> list[str]:
    """Every activation module's output, or the penultimate features if there is none."""
    return activation_layers(module) or [PENULTIMATE]


def _batched(fn, x: Tensor, batch_size: int) -> list[Tensor]:
    with torch.no_grad():
        parts = [fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return [torch.cat(p) for p in zip(*parts, strict=True)]


class MahalanobisDetector(Detector):
    """Per layer, the squared Mahalanobis distance of the features to the closest class mean
    under a shared covariance fitted on clean data (shrunk by `shrinkage` x its mean variance
    towards the identity, since ReLU features are often rank-deficient); layers are z-scored
    with their clean statistics and averaged. Feature maps (B, C, H, W) are averaged over
    space first, as in Lee et al. `layers` defaults to every activation module's output (the
    paper's feature ensemble; the low layers are the ones that see an L-inf perturbation);
    "penultimate" names the input of the last `nn.Linear`. `fit` needs labels."""

    name = "mahalanobis"

    def __init__(
        self,
        classifier: nn.Module,
        layers: Sequence[str] | None = None,
        shrinkage: float = 1e-2,
    ) -> None:
        super().__init__()
        if not isinstance(shrinkage, int | float) or not 0 <= shrinkage <= 1:
            raise BadInput(f"shrinkage must be a number in [0, 1], got {shrinkage!r}")
        self.classifier = classifier
        self.layers = check_layers(classifier, layers or default_layers(classifier))
        if not self.layers:
            raise BadInput("MahalanobisDetector needs at least one layer")
        self.shrinkage = float(shrinkage)
        self.fitted = False

    def features(self, x: Tensor) -> list[Tensor]:
        with _tap(self.classifier, self.layers) as seen:
            self.classifier(x.to(module_dtype(self.classifier, x.dtype)))
        return [
            seen[n].mean((2, 3)) if seen[n].dim() == 4 else seen[n].flatten(1) for n in self.layers
        ]

    def fit(self, x: Tensor, y: Tensor | None = None, *, batch_size: int = 256) -> Detector:
        if y is None or y.shape != (x.shape[0],):
            raise BadInput("MahalanobisDetector.fit needs labels y shaped (N,)")
        y = y.to(x.device).long()
        classes = torch.unique(y)
        for i, feats in enumerate(_batched(lambda b: tuple(self.features(b)), x, batch_size)):
            feats = feats.double()
            means = torch.stack([feats[y == c].mean(0) for c in classes])
            centred = feats - means[torch.searchsorted(classes, y)]
            cov = centred.T @ centred / max(1, feats.shape[0] - classes.numel())
            ridge = self.shrinkage * cov.diagonal().mean().clamp_min(1e-12)
            eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
            precision = torch.linalg.inv(cov + ridge * eye)
            self.register_buffer(f"means_{i}", means.float())
            self.register_buffer(f"precision_{i}", ((precision + precision.T) / 2).float())
        self.fitted = True
        distances = torch.cat(
            [
                self._distances(self._features_nograd(x[i : i + batch_size]))
                for i in range(0, x.shape[0], batch_size)
            ]
        )
        self.register_buffer("dist_mean", distances.mean(0))
        self.register_buffer("dist_std", distances.std(0).clamp_min(1e-6))
        return self

    def _features_nograd(self, x: Tensor) -> list[Tensor]:
        with torch.no_grad():
            return self.features(x)

    def _distances(self, feats: list[Tensor]) -> Tensor:
        """(B, layers): squared distance to the closest class mean in each layer."""
        out = []
        for i, f in enumerate(feats):
            means = getattr(self, f"means_{i}").to(f.dtype)
            precision = getattr(self, f"precision_{i}").to(f.dtype)
            fp = f @ precision
            quad = (fp * f).sum(1, keepdim=True) - 2 * fp @ means.T
            quad = quad + ((means @ precision) * means).sum(1)[None]
            out.append(quad.amin(1))
        return torch.stack(out, 1)

    def score(self, x: Tensor) -> Tensor:
        if not self.fitted:
            raise BadInput("MahalanobisDetector is not fitted: call fit(x, y) first")
        z = (self._distances(self.features(x)) - self.dist_mean) / self.dist_std
        return z.mean(1).to(x.dtype)


class LIDDetector(Detector):
    """Mean over layers of the z-scored LID estimate against `reference` clean inputs with `k`
    nearest neighbours. `layers` names submodules whose outputs are used ("logits" for the
    classifier's output); by default every activation module and the logits."""

    name = "lid"

    def __init__(
        self,
        classifier: nn.Module,
        k: int = 20,
        layers: Sequence[str] | None = None,
        reference: int = 1000,
    ) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise BadInput(f"k must be an integer >= 2, got {k!r}")
        if isinstance(reference, bool) or not isinstance(reference, int) or reference <= k:
            raise BadInput(f"reference must be an integer > k ({k}), got {reference!r}")
        self.classifier = classifier
        self.k, self.reference = k, reference
        default = [*activation_layers(classifier), LOGITS]
        self.layers = check_layers(classifier, layers or default)
        self.register_buffer("lid_mean", torch.empty(0))
        self.register_buffer("lid_std", torch.empty(0))

    @property
    def _refs(self) -> list[Tensor]:
        """The reference set's activations per layer (buffers, so they follow `.to()`)."""
        return (
            [getattr(self, f"reference_{i}") for i in range(len(self.layers))]
            if hasattr(self, "reference_0")
            else []
        )

    def activations(self, x: Tensor) -> list[Tensor]:
        named = [n for n in self.layers if n != LOGITS]
        with _tap(self.classifier, named) as seen:
            logits = self.classifier(x.to(module_dtype(self.classifier, x.dtype)))
        seen[LOGITS] = logits
        return [seen[n].flatten(1) for n in self.layers]

    def _lids(self, acts: list[Tensor], skip_self: bool = False) -> Tensor:
        """(B, layers) LID estimates of activations against the reference set."""
        out = []
        for a, ref in zip(acts, self._refs, strict=True):
            d = torch.cdist(a, ref.to(a.dtype))
            d = d.topk(self.k + int(skip_self), dim=1, largest=False).values[:, int(skip_self) :]
            d = d.clamp_min(1e-12)
            log_ratio = torch.log(d / d[:, -1:]).mean(1)
            out.append(-1.0 / log_ratio.clamp(max=-1e-12))
        return torch.stack(out, 1)

    def fit(self, x: Tensor, y: Tensor | None = None, *, batch_size: int = 256) -> Detector:
        if x.shape[0] <= self.k + 1:
            raise BadInput(f"LIDDetector.fit needs more than k + 1 = {self.k + 1} inputs")
        refs = x[: self.reference]
        for i, ref in enumerate(_batched(lambda b: tuple(self.activations(b)), refs, batch_size)):
            self.register_buffer(f"reference_{i}", ref)
        lids = torch.cat(
            [
                self._lids(self._acts_nograd(refs[i : i + batch_size]), skip_self=True)
                for i in range(0, refs.shape[0], batch_size)
            ]
        )
        self.lid_mean, self.lid_std = lids.mean(0), lids.std(0).clamp_min(1e-6)
        return self

    def _acts_nograd(self, x: Tensor) -> list[Tensor]:
        with torch.no_grad():
            return self.activations(x)

    def score(self, x: Tensor) -> Tensor:
        if not self._refs:
            raise BadInput("LIDDetector is not fitted: call fit(x) first")
        lids = self._lids(self.activations(x))
        if lids.shape[1] != self.lid_mean.numel():
            raise ShapeError("LIDDetector: the layers changed since fit()")
        return (
            ((lids - self.lid_mean.to(lids.dtype)) / self.lid_std.to(lids.dtype))
            .mean(1)
            .to(x.dtype)
        )
