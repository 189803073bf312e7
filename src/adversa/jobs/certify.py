"""`certify` as one library call: a frozen, typed `CertifyPlan` and `plan.run(model, data)`.

The plan says how to certify (randomized smoothing, IBP/CROWN bounds, or patch smoothing
against m x m patches), at which radii (patch sides), and whether to attack the same points
at the same radii to check the certificates (any contradiction is reported as a warning
starting with "BUG"). `run` returns the content of
`certify.json` (`adversa.certify.report.certify_report`); `adversa certify` only parses its
options into a plan, loads the model and data, writes the report and prints.

Example::

    plan = CertifyPlan(method="crown", eps=(0.005, 0.01), attack_check=True)
    report = plan.run(model, adversa.data.load_data("digits", split="test").take(50))
    report["results"][0]["certified_accuracy"]

    patches = CertifyPlan(method="patch-smoothing", size=(5,), attack_check=True)
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from adversa.certify import CertificationWarning, Smooth, run_certification
from adversa.certify.ablation import ABLATIONS, AblatedClassifier
from adversa.certify.patch_smoothing import (
    THRESHOLD,
    PatchAttack,
    PatchSmoothing,
    certify_patches,
)
from adversa.certify.report import certify_report, patch_certify_report
from adversa.certify.run import ALL_METHODS, DEFAULT_ATTACKS, PATCH_SMOOTHING, ProgressFn
from adversa.class_metrics import class_warnings, per_class
from adversa.data.dataset import Dataset
from adversa.errors import BadInput, describe, is_integer, is_real
from adversa.model import Model
from adversa.threat import ThreatModel

SMOOTHING_BATCH = 1000  # default noisy inputs per forward pass
BOUND_BATCH = 64  # default points per bound batch (and per smoothing attack batch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CertifyPlan:
    """What `adversa certify` does; `run(model, data)` does it. Validated on construction:
    every problem raises `BadInput` naming the field."""

    method: str  # "smoothing", "ibp", "crown", "crown-ibp", "alpha-crown", "patch-smoothing"
    eps: tuple[float, ...] = ()  # radii; (): sigma / 2 for smoothing (bounds need some)
    norm: str | None = None  # "linf" or "l2"; None: l2 for smoothing, else linf
    bounds: tuple[float, float] | None = None  # input range; None: the data's own
    sigma: float | None = None  # smoothing: noise standard deviation
    n0: int = 100  # smoothing: selection samples
    n: int = 10_000  # smoothing: estimation samples
    alpha: float = 0.001  # smoothing: failure probability
    batch_size: int | None = None  # noisy inputs per pass (1000) or points per bound batch (64)
    attack_check: bool = False  # also attack at the same radii
    attacks: tuple[str, ...] = DEFAULT_ATTACKS  # the check's attacks (bounds methods)
    eot: int = 16  # smoothing check: EOT noise draws
    seed: int = 0  # seeds the noise and the attacks
    size: tuple[float, ...] = ()  # patch-smoothing: patch sides in pixels, or area shares < 1
    ablation: str | None = None  # patch-smoothing: column or block; None: the model's (column)
    band: int | None = None  # patch-smoothing: band width b; None: the model's
    threshold: float | None = THRESHOLD  # patch-smoothing: a band votes for every class with
    # softmax >= it (Levine & Feizi's default 0.2); None: for its argmax class only
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        if self.method == PATCH_SMOOTHING:
            self._check_patch()
            return
        if self.method not in ALL_METHODS:
            methods = ", ".join((*ALL_METHODS, PATCH_SMOOTHING))
            raise BadInput(f"method must be one of {methods}, got {self.method!r}")
        if self.size or self.ablation is not None or self.band is not None:
            raise BadInput(f"size, ablation and band apply to {PATCH_SMOOTHING} only")
        smoothing = self.method == "smoothing"
        norm = self.norm or ("l2" if smoothing else "linf")
        if norm not in ("linf", "l2"):
            raise BadInput(f"norm must be linf or l2, got {norm!r}")
        object.__setattr__(self, "norm", norm)
        if smoothing and norm != "l2":
            raise BadInput("method smoothing certifies L2 radii; use norm l2")
        if smoothing and self.sigma is None:
            raise BadInput("method smoothing needs sigma")
        if not smoothing and self.sigma is not None:
            raise BadInput(f"sigma {self.sigma!r}: applies to method smoothing only")
        eps = self.eps
        if isinstance(eps, str) or not isinstance(eps, tuple | list):
            raise BadInput(f"eps must be a tuple of numbers, got {describe(eps)}")
        if not all(is_real(e) for e in eps):
            raise BadInput(f"eps must hold numbers, got {list(eps)!r}")
        if not eps and not smoothing:
            raise BadInput(f"method {self.method} needs eps")
        object.__setattr__(self, "eps", tuple(float(e) for e in eps))
        for name in ("batch_size", "eot"):
            value = getattr(self, name)
            if value is not None and (not is_integer(value) or value < 1):
                raise BadInput(f"{name} must be an integer >= 1, got {describe(value)}")
        if isinstance(self.attacks, str) or not isinstance(self.attacks, tuple | list):
            raise BadInput(f"attacks must be a tuple of names, got {describe(self.attacks)}")
        if not isinstance(self.attack_check, bool):
            raise BadInput(f"attack_check must be True or False, got {describe(self.attack_check)}")
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")
        self.smooth()  # sigma, n0, n, alpha: Smooth's own checks

    def _check_patch(self) -> None:
        if self.eps or self.sigma is not None or self.norm is not None:
            raise BadInput(f"eps, sigma and norm do not apply to {PATCH_SMOOTHING}; give size")
        size = self.size
        if isinstance(size, str) or not isinstance(size, tuple | list) or not size:
            raise BadInput(f"{PATCH_SMOOTHING} needs size: patch sides, got {describe(size)}")
        for s in size:
            if not (is_real(s) and (0 < s < 1 or (s >= 1 and float(s).is_integer()))):
                raise BadInput(
                    f"size {describe(s)}: expected a patch side in pixels (an integer >= 1) "
                    "or a share of the image area in (0, 1)"
                )
        object.__setattr__(self, "size", tuple(size))
        if self.ablation is not None and self.ablation not in ABLATIONS:
            raise BadInput(f"ablation must be column or block, got {describe(self.ablation)}")
        if self.band is not None and (not is_integer(self.band) or self.band < 1):
            raise BadInput(f"band must be an integer >= 1, got {describe(self.band)}")
        t = self.threshold
        if t is not None and not (is_real(t) and 0 < t <= 1):
            raise BadInput(f"threshold must be in (0, 1] or None (argmax), got {describe(t)}")
        if self.batch_size is not None and (not is_integer(self.batch_size) or self.batch_size < 1):
            raise BadInput(f"batch_size must be an integer >= 1, got {describe(self.batch_size)}")
        if not isinstance(self.attack_check, bool):
            raise BadInput(f"attack_check must be True or False, got {describe(self.attack_check)}")
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")

    def sides(self, data: Dataset) -> tuple[int, ...]:
        """The patch sides in pixels: a share f of the area is the side ceil(sqrt(f H W))."""
        if len(data.input_shape) != 3:
            raise BadInput(f"{PATCH_SMOOTHING} needs images (C, H, W), got {data.input_shape}")
        h, w = data.input_shape[1:]
        return tuple(int(s) if s >= 1 else math.ceil(math.sqrt(s * h * w)) for s in self.size)

    def patch_smoothing(self, data: Dataset, model: Model | None = None) -> PatchSmoothing:
        """Ablation and band (the plan's, else the model's if it is an ablated architecture,
        else column and `band` required), checked against the images."""
        net = None if model is None else model.module
        own = (net.ablation, net.band) if isinstance(net, AblatedClassifier) else (None, None)
        band = self.band or own[1] or (2 if model is None else None)
        if band is None:
            raise BadInput(
                f"band: model {model.name!r} is not an ablated architecture, so give the band "
                "width its base classifier was trained with (--band, and --ablation)"
            )
        bounds = tuple(self.bounds) if self.bounds is not None else tuple(data.bounds)
        smoothing = PatchSmoothing(
            ablation=self.ablation or own[0] or "column",
            band=band,
            sizes=self.sides(data),
            bounds=bounds,  # type: ignore[arg-type]
            threshold=self.threshold,
        )
        smoothing.check_fits(data.input_shape)
        return smoothing

    @property
    def smoothing(self) -> bool:
        return self.method == "smoothing"

    def batch(self) -> int:
        """Noisy inputs per forward pass (smoothing) or points per bound batch."""
        return self.batch_size or (SMOOTHING_BATCH if self.smoothing else BOUND_BATCH)

    def smooth(self) -> Smooth | None:
        """The smoothed classifier's procedure, for method smoothing."""
        if not self.smoothing:
            return None
        return Smooth(
            sigma=self.sigma,  # type: ignore[arg-type]
            n0=self.n0,
            n=self.n,
            alpha=self.alpha,
            batch_size=self.batch(),
            seed=self.seed,
        )

    def radii(self) -> tuple[float, ...]:
        """The radii certified: `eps`, or sigma / 2 for smoothing without any."""
        return self.eps or (self.sigma / 2,)  # type: ignore[operator]

    def threat(self, data: Dataset) -> ThreatModel:
        """The ball of the largest radius on `data`'s bounds (or the plan's); for patch
        smoothing, the box (any value inside a patch), once the patches fit the images."""
        bounds = tuple(self.bounds) if self.bounds is not None else tuple(data.bounds)
        if self.method == PATCH_SMOOTHING:
            self.patch_smoothing(data)
            return ThreatModel(norm="linf", eps=bounds[1] - bounds[0], bounds=bounds)  # type: ignore[arg-type]
        return ThreatModel(norm=self.norm, eps=max(self.radii()), bounds=bounds)  # type: ignore[arg-type]

    def run(
        self, model: Model, data: Dataset, progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Certify `data` as planned; the content of `certify.json` (its `config` starts
        with `provenance`). Certification warnings go to the report, not to `warnings`."""
        if self.method == PATCH_SMOOTHING:
            return self._run_patches(model, data, progress)
        start = time.perf_counter()
        threat = self.threat(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CertificationWarning)  # in the report, once
            result = run_certification(
                model,
                data.x,
                data.y,
                threat,
                list(self.radii()),
                method=self.method,
                smooth=self.smooth(),
                attacks=list(self.attacks) if self.attack_check else [],
                batch_size=BOUND_BATCH if self.smoothing else self.batch(),
                seed=self.seed,
                eot=self.eot,
                progress=progress,
            )
        config = self._config(data, threat, result.attacks)
        config["normalize"] = getattr(model, "normalization", None)
        report = certify_report(result, config=config, seconds=time.perf_counter() - start)
        with torch.no_grad():
            preds = model.predict(data.x.to(model.device), batch_size=self.batch())
        return _with_classes(report, data, preds, result.certified)

    def _run_patches(
        self, model: Model, data: Dataset, progress: ProgressFn | None
    ) -> dict[str, Any]:
        start = time.perf_counter()
        smoothing = self.patch_smoothing(data, model)
        attack = PatchAttack(seed=self.seed) if self.attack_check else None
        result = certify_patches(
            model,
            data.x,
            data.y,
            smoothing,
            attack=attack,
            batch_size=self.batch_size or BOUND_BATCH,
            progress=progress,
        )
        config: dict[str, Any] = {
            **self.provenance,
            "method": self.method,
            "size": list(self.size),
            "sizes_pixels": list(smoothing.sizes),
            "ablation": smoothing.ablation,
            "band": smoothing.band,
            "threshold": smoothing.threshold,
            "bounds": list(smoothing.bounds),
            "n": len(data),
            "batch_size": self.batch_size or BOUND_BATCH,
            "attack_check": self.attack_check,
            "attacks": [] if attack is None else [attack.describe()],
            "seed": self.seed,
            "class_names": list(data.class_names) if data.class_names else None,
            "normalize": getattr(model, "normalization", None),
        }
        report = patch_certify_report(result, config=config, seconds=time.perf_counter() - start)
        report["warnings"] = [*_trained_differently(model, smoothing), *report["warnings"]]
        report["seed"] = self.seed  # the votes draw nothing; the seed is the check's
        return _with_classes(report, data, result.prediction, result.certified)

    def _config(
        self, data: Dataset, threat: ThreatModel, attacks: tuple[str, ...]
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            **self.provenance,
            "method": self.method,
            "norm": self.norm,
            "eps": list(self.radii()),
            "bounds": list(threat.bounds),
            "n": len(data),
            "batch_size": self.batch(),
            "attack_check": self.attack_check,
            "attacks": list(attacks),
            "seed": self.seed,
            "class_names": list(data.class_names) if data.class_names else None,
        }
        if "class_map" in data.meta:  # an image folder: which folder is which label, and why
            config["class_map"] = data.meta["class_map"]
            config["labels_from"] = data.meta["labels_from"]
        if self.smoothing:
            config |= {"sigma": self.sigma, "n0": self.n0, "n_samples": self.n}
            config |= {"alpha": self.alpha, "eot": self.eot}
        return config


def _trained_differently(model: Model, smoothing: PatchSmoothing) -> list[str]:
    """A warning when an ablated model is certified with another ablation than its own."""
    net = model.module
    if not isinstance(net, AblatedClassifier):
        return []
    if (net.ablation, net.band) == (smoothing.ablation, smoothing.band):
        return []
    return [
        f"model {model.name!r} was trained on {net.ablation} ablation with band {net.band}, "
        f"certified with {smoothing.ablation} band {smoothing.band}: the certificates hold, "
        "but its votes are those of inputs it was not trained on"
    ]


def _with_classes(
    report: dict[str, Any],
    data: Dataset,
    preds: torch.Tensor,
    certified: tuple[torch.Tensor, ...],
) -> dict[str, Any]:
    """`report` with the model's recall and precision per class (`class_metrics`) from its
    predictions `preds` (the base model's; patch smoothing: the smoothed classifier's), each
    eps's certified points per class (`certified_by_class`: count and share of the class's
    rows) and the class warnings (a model no better than the base rate, or predicting one
    class for almost everything) added to `warnings`."""
    names = tuple(str(n) for n in data.class_names) if data.class_names else None
    preds = preds.cpu()
    y = data.y.cpu()
    report["class_metrics"] = per_class(y, preds, data.num_classes, names=names)
    support = torch.bincount(y, minlength=data.num_classes)
    for entry, mask in zip(report["results"], certified, strict=True):
        counts = torch.bincount(y[mask.cpu().bool()], minlength=data.num_classes)
        entry["certified_by_class"] = [
            {
                "class": k,
                "certified": int(counts[k]),
                "certified_recall": int(counts[k]) / int(support[k]) if int(support[k]) else None,
            }
            for k in range(len(support))
        ]
    found = class_warnings(y, preds, data.num_classes, names=names)
    report["warnings"] = list(dict.fromkeys([*report["warnings"], *found]))
    return report
