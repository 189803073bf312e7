"""`certify` as one library call: a frozen, typed `CertifyPlan` and `plan.run(model, data)`.

The plan says how to certify (randomized smoothing, or IBP/CROWN bounds), at which radii, and
whether to attack the same points at the same radii to check the certificates (any
contradiction is reported as a warning starting with "BUG"). `run` returns the content of
`certify.json` (`adversa.certify.report.certify_report`); `adversa certify` only parses its
options into a plan, loads the model and data, writes the report and prints.

Example::

    plan = CertifyPlan(method="crown", eps=(0.005, 0.01), attack_check=True)
    report = plan.run(model, adversa.data.load_data("digits", split="test").take(50))
    report["results"][0]["certified_accuracy"]
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from adversa.certify import CertificationWarning, Smooth, run_certification
from adversa.certify.report import certify_report
from adversa.certify.run import ALL_METHODS, DEFAULT_ATTACKS, ProgressFn
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

    method: str  # "smoothing", "ibp", "crown", "crown-ibp" or "alpha-crown"
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
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        if self.method not in ALL_METHODS:
            raise BadInput(f"method must be one of {', '.join(ALL_METHODS)}, got {self.method!r}")
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
        """The ball of the largest radius on `data`'s bounds (or the plan's)."""
        bounds = tuple(self.bounds) if self.bounds is not None else tuple(data.bounds)
        return ThreatModel(norm=self.norm, eps=max(self.radii()), bounds=bounds)  # type: ignore[arg-type]

    def run(
        self, model: Model, data: Dataset, progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Certify `data` as planned; the content of `certify.json` (its `config` starts
        with `provenance`). Certification warnings go to the report, not to `warnings`."""
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
        return _with_classes(report, model, data, result.certified, self.batch())

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


def _with_classes(
    report: dict[str, Any],
    model: Model,
    data: Dataset,
    certified: tuple[torch.Tensor, ...],
    batch_size: int,
) -> dict[str, Any]:
    """`report` with the base model's recall and precision per class (`class_metrics`), each
    eps's certified points per class (`certified_by_class`: count and share of the class's
    rows) and the class warnings (a model no better than the base rate, or predicting one
    class for almost everything) added to `warnings`."""
    names = tuple(str(n) for n in data.class_names) if data.class_names else None
    with torch.no_grad():
        preds = model.predict(data.x.to(model.device), batch_size=batch_size).cpu()
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
