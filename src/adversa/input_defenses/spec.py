"""Input defenses and detectors named by string, as the CLI takes them.

A defense spec is `name` or `name:key=value,key=value`, and several can be chained with `+`
(applied left to right): `squeeze:bits=4`, `jpeg:quality=75`, `median:size=2`,
`resize-pad:low=0.8`, `noise:sigma=0.1`, `dropout:p=0.1`, `tvm:weight=0.05`,
`smooth:sigma=1`, `magnet:dir=DIR`, `dropout:p=0.5+tvm`. A detector spec has the same form:
`squeeze:bits=1,median=2`, `magnet:dir=DIR`, `mahalanobis`, `lid:k=20`.

Each name maps, in a `Registry`, to a frozen config dataclass whose fields are the options
(typed; values are converted from the string by the field's type, unknown options and names
are refused with the valid ones listed) and whose `build` makes the module. `defended(model,
spec)` wraps a classifier: `nn.Sequential(defense..., classifier)` is still a `Model`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from adversa.errors import BadInput
from adversa.input_defenses import detectors as det
from adversa.input_defenses import feature_detectors as fdet
from adversa.input_defenses import randomization as rnd
from adversa.input_defenses import transforms as tf
from adversa.input_defenses.reformer import load_reformer
from adversa.model import Model
from adversa.registry import Registry


@dataclasses.dataclass(frozen=True, slots=True)
class BuildContext:
    """What a spec needs besides its options."""

    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int = 0  # the default seed of randomised defenses
    device: torch.device | str = "cpu"


INPUT_DEFENSES: Registry[Any] = Registry("input defense")
INPUT_DETECTORS: Registry[Any] = Registry("detector")


@INPUT_DEFENSES.register("squeeze", aliases=("bit-depth", "bits"))
@dataclasses.dataclass(frozen=True, kw_only=True)
class SqueezeSpec:
    """Bit-depth reduction (feature squeezing, Xu et al. 2018)."""

    bits: int = 4  # bits per value, 1..8 (Xu et al.: 1 on MNIST)

    def build(self, ctx: BuildContext) -> nn.Module:
        return tf.BitDepth(self.bits, ctx.bounds)


@INPUT_DEFENSES.register("median")
@dataclasses.dataclass(frozen=True, kw_only=True)
class MedianSpec:
    """Median smoothing (feature squeezing, Xu et al. 2018)."""

    size: int = 2  # window side, 2..15

    def build(self, ctx: BuildContext) -> nn.Module:
        return tf.MedianSmoothing(self.size)


@INPUT_DEFENSES.register("smooth", aliases=("blur", "gaussian-blur"))
@dataclasses.dataclass(frozen=True, kw_only=True)
class SmoothSpec:
    """Gaussian spatial smoothing."""

    sigma: float = 1.0  # blur standard deviation in pixels

    def build(self, ctx: BuildContext) -> nn.Module:
        return tf.SpatialSmoothing(self.sigma)


@INPUT_DEFENSES.register("jpeg")
@dataclasses.dataclass(frozen=True, kw_only=True)
class JPEGSpec:
    """JPEG compression through Pillow (Guo et al. 2018)."""

    quality: int = 75  # JPEG quality, 1..100
    subsampling: str = "4:2:0"  # chroma subsampling of colour images

    def build(self, ctx: BuildContext) -> nn.Module:
        return tf.JPEG(self.quality, self.subsampling, ctx.bounds)


@INPUT_DEFENSES.register("tvm", aliases=("tv",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class TVMSpec:
    """Total-variation minimisation (Guo et al. 2018)."""

    weight: float = 0.05  # TV weight; larger smooths more
    steps: int = 50  # Chambolle iterations

    def build(self, ctx: BuildContext) -> nn.Module:
        return tf.TVM(self.weight, self.steps, ctx.bounds)


@INPUT_DEFENSES.register("resize-pad", aliases=("random-resize-pad", "resize"))
@dataclasses.dataclass(frozen=True, kw_only=True)
class ResizePadSpec:
    """Random resizing and padding (Xie et al. 2018)."""

    low: float = 0.8  # smallest resized side, as a share of the input side
    seed: int | None = None  # None: the evaluation's seed

    def build(self, ctx: BuildContext) -> nn.Module:
        return rnd.RandomResizePad(self.low, _seed(self.seed, ctx), ctx.bounds)


@INPUT_DEFENSES.register("noise", aliases=("gaussian-noise",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class NoiseSpec:
    """Additive Gaussian noise."""

    sigma: float = 0.1  # noise standard deviation
    seed: int | None = None  # None: the evaluation's seed

    def build(self, ctx: BuildContext) -> nn.Module:
        return rnd.GaussianNoise(self.sigma, _seed(self.seed, ctx), ctx.bounds)


@INPUT_DEFENSES.register("dropout", aliases=("pixel-dropout",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class DropoutSpec:
    """Random pixel dropout (Guo et al. 2018)."""

    p: float = 0.1  # probability of dropping a pixel
    seed: int | None = None  # None: the evaluation's seed

    def build(self, ctx: BuildContext) -> nn.Module:
        return rnd.PixelDropout(self.p, _seed(self.seed, ctx), ctx.bounds)


@INPUT_DEFENSES.register("magnet", aliases=("reformer",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class MagNetSpec:
    """MagNet's reformer (Meng & Chen 2017), trained by `adversa train-reformer`."""

    dir: str = ""  # the directory `adversa train-reformer --out` wrote

    def build(self, ctx: BuildContext) -> nn.Module:
        return load_reformer(_require_dir(self.dir), ctx.device)


@INPUT_DETECTORS.register("magnet", aliases=("reconstruction",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class MagNetDetectorSpec:
    """MagNet's reconstruction-error detector."""

    dir: str = ""  # the directory `adversa train-reformer --out` wrote
    p: int = 1  # 1: mean absolute error, 2: mean squared error

    def build(self, classifier: nn.Module, ctx: BuildContext) -> det.Detector:
        return det.MagNetDetector(load_reformer(_require_dir(self.dir), ctx.device), self.p)


@INPUT_DETECTORS.register("squeeze", aliases=("feature-squeezing",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class SqueezeDetectorSpec:
    """Feature squeezing's prediction-distance detector (Xu et al. 2018)."""

    bits: int = 1  # bit-depth squeezer (0: none)
    median: int = 2  # median-filter squeezer size (0: none)

    def build(self, classifier: nn.Module, ctx: BuildContext) -> det.Detector:
        return det.SqueezeDetector(classifier, self.bits, self.median, ctx.bounds)


@INPUT_DETECTORS.register("mahalanobis")
@dataclasses.dataclass(frozen=True, kw_only=True)
class MahalanobisSpec:
    """Mahalanobis distance to class means in feature space (Lee et al. 2018)."""

    layers: str = ""  # submodule names joined by '/', "penultimate"; "": every activation
    shrinkage: float = 1e-2  # covariance shrinkage towards the identity

    def build(self, classifier: nn.Module, ctx: BuildContext) -> det.Detector:
        layers = [n for n in self.layers.split("/") if n] or None
        return fdet.MahalanobisDetector(classifier, layers, self.shrinkage)


@INPUT_DETECTORS.register("lid")
@dataclasses.dataclass(frozen=True, kw_only=True)
class LIDSpec:
    """Local intrinsic dimensionality (Ma et al. 2018)."""

    k: int = 20  # nearest neighbours
    reference: int = 1000  # clean reference inputs
    layers: str = ""  # submodule names joined by '/', "logits"; "": activations and logits

    def build(self, classifier: nn.Module, ctx: BuildContext) -> det.Detector:
        layers = [n for n in self.layers.split("/") if n] or None
        return fdet.LIDDetector(classifier, self.k, layers, self.reference)


def _seed(seed: int | None, ctx: BuildContext) -> int:
    return ctx.seed if seed is None else seed


def _require_dir(directory: str) -> str:
    if not directory:
        raise BadInput("magnet needs the reformer's directory: magnet:dir=DIR")
    return directory


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(kind: str, name: str, key: str, text: str, annotation: Any) -> Any:
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if type(None) in typing.get_args(annotation) and text.lower() in ("none", ""):
        return None
    target = options[0]
    try:
        if target is bool:
            if text.lower() not in (*_TRUE, *_FALSE):
                raise ValueError
            return text.lower() in _TRUE
        return target(text)
    except ValueError:
        raise BadInput(
            f"{kind} {name!r}: option {key} must be {target.__name__}, got {text!r}"
        ) from None


def _parse_one(registry: Registry[Any], text: str) -> tuple[str, Any]:
    name, _, rest = text.strip().partition(":")
    canonical = registry.canonical(name)
    factory = registry.factory(canonical)
    hints = typing.get_type_hints(factory)
    options: dict[str, Any] = {}
    for item in (p for p in rest.split(",") if p.strip()):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise BadInput(f"{registry.kind} {name!r}: options are key=value, got {item!r}")
        if key not in hints:
            registry.get(canonical, **{key: None})  # raises, listing the valid options
        options[key] = _convert(registry.kind, canonical, key, value.strip(), hints[key])
    return canonical, registry.get(canonical, **options)


def parse_defense(spec: str) -> list[tuple[str, Any]]:
    """`name:key=value,...` chained with `+` -> [(canonical name, config), ...]."""
    parts = spec.split("+") if isinstance(spec, str) else []
    if not any(p.strip() for p in parts):
        raise BadInput(f"defense spec must name at least one defense, got {spec!r}")
    if not all(p.strip() for p in parts):
        raise BadInput(
            f"defense spec {spec!r} has an empty part: '+' must join two defenses "
            "(e.g. squeeze:bits=4+median:size=2)"
        )
    return [_parse_one(INPUT_DEFENSES, part) for part in parts]


def build_defense(spec: str, ctx: BuildContext = BuildContext()) -> nn.Sequential:
    """The chained defenses of `spec` as an `nn.Sequential` whose children are named after
    them (`squeeze`, `jpeg`, `jpeg_2`, ...), on `ctx.device`."""
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for name, config in parse_defense(spec):
        key = name if name not in modules else f"{name}_{len(modules) + 1}"
        modules[key] = config.build(ctx).to(ctx.device)
    return nn.Sequential(modules)


def defended(model: Model, spec: str, *, seed: int = 0) -> Model:
    """`model` behind the input defenses of `spec`: a `Model` wrapping
    `nn.Sequential(defense=..., classifier=model.module)`, with the same bounds and classes.
    Randomised defenses without an explicit seed use `seed`."""
    ctx = BuildContext(bounds=tuple(model.bounds), seed=seed, device=model.device)
    module = nn.Sequential(
        OrderedDict([("defense", build_defense(spec, ctx)), ("classifier", model.module)])
    )
    return Model(
        module, num_classes=model.num_classes, bounds=model.bounds, name=f"{model.name}+{spec}"
    )


def build_detector(
    spec: str, classifier: nn.Module, ctx: BuildContext = BuildContext()
) -> det.Detector:
    """The (unfitted, uncalibrated) detector named by `spec`, on `ctx.device`."""
    _, config = _parse_one(INPUT_DETECTORS, spec)
    return config.build(classifier, ctx).to(ctx.device)


def list_input_defenses() -> list[str]:
    return INPUT_DEFENSES.list()


def list_detectors() -> list[str]:
    return INPUT_DETECTORS.list()


def adaptive_parts(module: nn.Module) -> tuple[list[str], list[str]]:
    """(non-differentiable, randomised) qualified submodule names of `module`."""
    nondiff = [n for n, m in module.named_modules() if getattr(m, "non_differentiable", False)]
    randomized = [n for n, m in module.named_modules() if getattr(m, "randomized", False)]
    return nondiff, randomized
