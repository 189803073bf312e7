"""`evaluate` as one library call: a frozen, typed `EvaluationPlan` and `plan.run(model, data)`.

The plan says what to measure: the threat (norm, eps sweep, bounds, tabular constraints), the
battery (attack names, their overrides, seed, batch size, the costlier masking checks), how
to adapt the attacks (EOT, BPDA), an input-side defense or detector, certification, a
backdoor's attack success rate, and the class whose evasion counts (`evade_class`: only its
rows are attacked; `adversa.tabular.evasion`). `run` composes the algorithms below it and
returns the `Report` that `adversa evaluate` writes; the command line only parses its
options into a plan, loads the model and data, and prints. Attacks are built per eps by the
battery alone (`adversa.evaluation.attack_list`), which also validates every eps.

Example::

    plan = EvaluationPlan(norm="linf", eps=(0.05, 0.1), attacks=("fgsm", "pgd"), steps=10)
    report = plan.run(model, adversa.data.load_data("digits").take(200))
    report.robust_accuracy, report.results

Under torchrun every rank runs the plan (the battery shards its points and gathers the
results); the caller sets up the process group, and writes the report from rank 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from adversa.attacks import ATTACKS
from adversa.attacks.adaptive import EOT, bpda
from adversa.certify.consistency import attach_certification, certify_sweep
from adversa.checks import check_batch
from adversa.data.dataset import Dataset
from adversa.data.files import folder_class_warning
from adversa.errors import BadInput, describe, is_integer, is_real
from adversa.evaluation.adaptive_eval import attach_eot_notes, attach_to_report, redundant_eot
from adversa.evaluation.attack_list import NamedAttack, sweep_threats
from adversa.evaluation.battery import ProgressFn, evaluate_sweep
from adversa.evaluation.report import Classes, Report, write_reports
from adversa.input_defenses.spec import parse_defense
from adversa.jobs.backdoor import backdoor_summary
from adversa.jobs.defended import evaluate_input_defense
from adversa.model import Access, Model, check_model_accepts
from adversa.model.normalization_check import normalization_warnings
from adversa.physical.masked import MaskedThreat
from adversa.physical.masks import mask_summary, masked_threat
from adversa.physical.rp2 import transformed
from adversa.physical.transforms import Transforms
from adversa.tabular import ConstrainedThreat
from adversa.tabular.changes import load_constraints
from adversa.tabular.constraints import FeatureConstraints
from adversa.tabular.evasion import class_rows, default_class, resolve_class
from adversa.threat import NORMS, ThreatModel

BPDA_METHODS = ("identity",)
CERTIFY_METHODS = ("ibp", "crown")


def default_attacks(norm: str, gradients: bool = True) -> tuple[str, ...]:
    """Cheap first: fgsm, pgd, then deepfool (linf, l2) and cw (l2). A model without gradient
    access (e.g. scikit-learn) gets the black-box attacks for its norm: square, hsj."""
    if not gradients:
        return tuple(n for n in ("square", "hsj") if norm in ATTACKS.factory(n).norms)
    names = ["fgsm", "pgd"]
    if "deepfool" in ATTACKS and norm in ("linf", "l2"):
        names.append("deepfool")
    if "cw" in ATTACKS and norm == "l2":
        names.append("cw")
    return tuple(names)


def _optional_int(name: str, value: object, low: int = 1) -> None:
    if value is not None and (not is_integer(value) or value < low):
        raise BadInput(f"{name} must be an integer >= {low} or None, got {describe(value)}")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise BadInput(f"{name} must be one of {', '.join(choices)} or None, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluationPlan:
    """What `adversa evaluate` measures; `run(model, data)` measures it. Validated on
    construction: every problem raises `BadInput` naming the field."""

    norm: str  # "linf", "l2" or "l1"
    eps: tuple[float, ...]  # radii of the sweep; the first is the headline
    bounds: tuple[float, float] | None = None  # input range; None: the data's own
    attacks: tuple[str, ...] = ()  # registry names in cascade order; (): by norm and access
    steps: int | None = None  # overrides the steps of every attack that has that option
    surrogate: Model | nn.Module | None = None  # the model "transfer" crafts its examples on
    seed: int = 0  # seeds every attack
    batch_size: int = 256  # points per attack batch
    check_masking: bool = False  # also the costlier convergence and full-range eps checks
    eot: int | None = None  # attack the mean logits over this many draws (EOT)
    bpda: str | None = None  # "identity": differentiate non_differentiable parts as identity
    defense: str | None = None  # input-defense spec, evaluated naively and adaptively
    detector: str | None = None  # adversarial-input detector spec
    detector_fpr: float = 0.05  # clean false-positive rate the detector is calibrated at
    detector_data: Dataset | None = None  # clean points, disjoint from `data`, to fit it on
    certify: str | None = None  # "ibp" or "crown": verified accuracy beside robust accuracy
    constraints: FeatureConstraints | str | None = None  # tabular; str: "data", JSON or file
    mask: str | torch.Tensor | None = None  # a MASKS name, PNG or 0/1 tensor: the threat is a
    # MaskedThreat (perturb only inside it; linf eps = the box width: unbounded there)
    transforms: str | None = None  # "rotate=15,...": the model sees a fresh draw each pass
    backdoor: str | None = None  # a directory from `adversa poison`: its trigger's ASR
    evade_class: int | str | None = None  # attack only this class's rows (index or name) and
    # report how many caught ones evade; None: all rows (the fraud set still counts frauds)
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        _choice("norm", self.norm, NORMS)
        eps = self.eps
        if isinstance(eps, str) or not isinstance(eps, tuple | list) or not eps:
            raise BadInput(f"eps must be a non-empty tuple of numbers, got {describe(eps)}")
        if not all(is_real(e) for e in eps):
            raise BadInput(f"eps must hold numbers, got {list(eps)!r}")
        object.__setattr__(self, "eps", tuple(float(e) for e in eps))
        if self.bounds is not None and not (
            isinstance(self.bounds, tuple | list)
            and len(self.bounds) == 2
            and all(is_real(b) for b in self.bounds)
        ):
            raise BadInput(f"bounds must be (lo, hi) or None, got {describe(self.bounds)}")
        if isinstance(self.attacks, str) or not isinstance(self.attacks, tuple | list):
            raise BadInput(f"attacks must be a tuple of names, got {describe(self.attacks)}")
        object.__setattr__(self, "attacks", tuple(ATTACKS.canonical(a) for a in self.attacks))
        for name in ("steps", "eot", "batch_size"):
            _optional_int(name, getattr(self, name))
        _optional_int("seed", self.seed, low=-(2**63))
        if self.seed is None or self.batch_size is None:
            raise BadInput("seed and batch_size must be integers, not None")
        if not isinstance(self.check_masking, bool):
            raise BadInput(
                f"check_masking must be True or False, got {describe(self.check_masking)}"
            )
        _choice("bpda", self.bpda, BPDA_METHODS)
        _choice("certify", self.certify, CERTIFY_METHODS)
        self._check_parts()

    def _check_parts(self) -> None:
        """The options that depend on each other."""
        if self.mask is not None and self.constraints is not None:
            raise BadInput("mask and constraints do not combine: a mask is for images")
        if self.transforms is not None:
            Transforms.parse(self.transforms)
        if self.bpda and self.defense:
            raise BadInput("bpda is implied by defense: the adaptive run applies it")
        if not is_real(self.detector_fpr) or not 0 < self.detector_fpr < 1:
            raise BadInput(f"detector_fpr must be in (0, 1), got {self.detector_fpr!r}")
        if self.detector is not None and self.detector_data is None:
            raise BadInput("detector needs detector_data: clean points to fit and calibrate on")
        if self.surrogate is not None and "transfer" not in self.attacks:
            raise BadInput("surrogate: only the 'transfer' attack uses one; add it to attacks")
        if self.defense is not None:
            parse_defense(self.defense)
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")
        if self.evade_class is not None and not (
            is_integer(self.evade_class) or isinstance(self.evade_class, str)
        ):
            raise BadInput(
                f"evade_class must be a class index, a class name or None, got "
                f"{describe(self.evade_class)}"
            )

    # -- the pieces, from the data ------------------------------------------------------

    def threat(self, data: Dataset) -> ThreatModel:
        """The headline threat (first eps) on `data`: its bounds unless the plan has its
        own, with the tabular constraints when there are any."""
        bounds = tuple(self.bounds) if self.bounds is not None else tuple(data.bounds)
        if self.mask is not None:
            return masked_threat(self.norm, self.eps[0], bounds, self.mask, data.x.shape[1:])
        if self.constraints is None:
            return ThreatModel(norm=self.norm, eps=self.eps[0], bounds=bounds)
        constraints = self.constraints
        if isinstance(constraints, str):
            constraints = load_constraints(data, constraints)
        return ConstrainedThreat(
            norm=self.norm, eps=self.eps[0], bounds=bounds, constraints=constraints
        )

    def check(self, data: Dataset) -> ThreatModel:
        """Check `data` against the sweep before any model is loaded (the battery's checks:
        every eps, and the data's shape, values and bounds); returns `threat(data)`."""
        if not isinstance(data, Dataset):
            raise BadInput(f"data must be an adversa Dataset, got {describe(data)}")
        threat = self.threat(data)
        threats = sweep_threats(threat, self.eps)
        check_batch(data.x, data.y, max(threats, key=lambda t: t.eps), None)
        if self.evade_class is not None:
            class_rows(data, resolve_class(data, self.evade_class))
        return threat

    def classes(self, model: Model, data: Dataset) -> tuple[Classes, Dataset]:
        """How the report counts per class, and the data the battery attacks: with
        `evade_class`, that class's rows only (the clean predictions on all of `data` still
        give every class's recall and precision; behind an input defense or detector, only
        the attacked rows count); else all of `data`, with the data set's default evasion
        class (fraud's frauds) if it has one."""
        names = tuple(str(n) for n in data.class_names) if data.class_names else None
        num_classes = data.num_classes
        if self.evade_class is None:
            return Classes(
                num_classes=num_classes, names=names, evade_class=default_class(data)
            ), data
        cls = resolve_class(data, self.evade_class)
        rows = class_rows(data, cls)
        attacked = data.subset(rows)
        if self.defense or self.detector:
            return Classes(num_classes=num_classes, names=names, evade_class=cls), attacked
        with torch.no_grad():
            clean = model.predict(data.x.to(model.device), batch_size=self.batch_size).cpu()
        classes = Classes(
            num_classes=num_classes,
            names=names,
            evade_class=cls,
            y=data.y,
            clean_pred=clean,
            rows=rows,
        )
        return classes, attacked

    def attack_names(self, model: Model) -> tuple[str, ...]:
        """The plan's attacks, or the defaults for its norm and the model's access."""
        if self.attacks:
            return self.attacks
        return default_attacks(self.norm, gradients=model.access >= Access.GRADIENT)

    def battery(self, names: tuple[str, ...]) -> list[NamedAttack]:
        """The attacks with their overrides (`steps` where the attack has that option,
        `surrogate` for "transfer"); the battery builds them at each eps."""
        out = []
        for name in names:
            factory = ATTACKS.factory(name)
            fields = (
                {f.name for f in dataclasses.fields(factory)}
                if (dataclasses.is_dataclass(factory))
                else set()
            )
            options: dict[str, Any] = {}
            if self.steps is not None and "steps" in fields:
                options["steps"] = self.steps
            if name == "transfer":
                options["surrogate"] = self.surrogate
            out.append(NamedAttack(name, options))
        return out

    # -- the run -------------------------------------------------------------------------

    def run(
        self,
        model: Model | nn.Module,
        data: Dataset,
        progress: ProgressFn | None = None,
        *,
        out: str | os.PathLike[str] | None = None,
    ) -> Report:
        """Evaluate `model` on `data` as planned; the report holds every number `adversa
        evaluate` writes (its `config` starts with `provenance`). With `out`, also write
        `out/report.json` and `out/report.html` (the gallery from the attacks' examples; for
        scaled tabular data the features changed, in the data's original units)."""
        start = time.perf_counter()
        threat = self.check(data)
        if not isinstance(model, Model):
            if not isinstance(model, nn.Module):
                raise BadInput(
                    f"model must be an adversa Model or nn.Module, got {describe(model)}"
                )
            model = Model(model, bounds=tuple(threat.bounds))
        normalization = getattr(model, "normalization", None)  # before any wrapper
        normalization_notes = normalization_warnings(model, data.x, data.y)
        input_side = bool(self.defense or self.detector)
        eot_notes = None  # with EOT on the plain model: a warning if it is deterministic
        if self.transforms is not None:
            model = transformed(model, Transforms.parse(self.transforms), self.seed)
        if self.eot is not None and not input_side:
            eot_notes = redundant_eot(model, data.x, self.eot)
            model = EOT(model, self.eot)
        backdoor = self._backdoor(model, data)  # before the attacks: it can fail
        n_all = len(data)
        classes, data = self.classes(model, data)
        names = self.attack_names(model)
        attacks = self.battery(names)
        evaluation = None
        if input_side:
            evaluation = evaluate_input_defense(self, model, data, threat, attacks, progress)
            sweep = evaluation.adaptive
        else:
            with bpda(model, self.bpda) if self.bpda else contextlib.nullcontext():
                sweep = evaluate_sweep(
                    model,
                    data.x,
                    data.y,
                    threat,
                    self.eps,
                    attacks,
                    batch_size=self.batch_size,
                    seed=self.seed,
                    progress=progress,
                    check_masking=self.check_masking,
                )
        config = self._config(data, threat, names, backdoor)
        config["normalize"] = normalization
        if self.evade_class is not None:
            config |= {"evade_class": classes.evade_class, "n_all": n_all}
        report = Report.from_results(
            sweep, config=config, seconds=time.perf_counter() - start, classes=classes
        )
        if eot_notes is not None:
            report = attach_eot_notes(report, eot_notes)
        report = self._finish(report, model, data, sweep, evaluation)
        report = dataclasses.replace(
            report,
            warnings=(*normalization_notes, *report.warnings),
            seconds=time.perf_counter() - start,
        )
        if out is not None:
            write_reports(
                out,
                report,
                sweep,
                kind=data.kind,
                class_names=data.class_names,
                feature_names=data.feature_names,
                scaler=data.meta.get("scaler"),
            )
        return report

    def _backdoor(self, model: Model, data: Dataset) -> dict[str, Any] | None:
        if self.backdoor is None:
            return None
        check_model_accepts(model, data.x, data=f"--data {self.provenance.get('data', data.name)}")
        return backdoor_summary(model, data, self.backdoor)

    def _config(
        self, data: Dataset, threat: ThreatModel, names: tuple[str, ...], backdoor: Any
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            **self.provenance,
            "norm": self.norm,
            "eps": list(self.eps),
            "bounds": list(threat.bounds),
            "attacks": list(names),
            "n": len(data),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "steps": self.steps,
            "eot": self.eot,
            "bpda": self.bpda,
            "check_masking": self.check_masking,
            "certify": self.certify,
            "constraints": self.constraints
            if not isinstance(self.constraints, FeatureConstraints)
            else "given",
            "class_names": list(data.class_names) if data.class_names else None,
            "transforms": self.transforms,
        }
        if isinstance(threat, MaskedThreat):
            config["mask"] = mask_summary(threat, self.mask)
        if "class_map" in data.meta:  # an image folder: which folder is which label, and why
            config["class_map"] = data.meta["class_map"]
            config["labels_from"] = data.meta["labels_from"]
        if backdoor is not None:
            config["backdoor"] = backdoor
        return config

    def _finish(
        self, report: Report, model: Model, data: Dataset, sweep: Any, evaluation: Any
    ) -> Report:
        """The folder-label warning, the input defense's entry and the certificates."""
        if "class_map" in data.meta:
            warning = folder_class_warning(data, _num_outputs(model, data))
            if warning:
                report = dataclasses.replace(report, warnings=(*report.warnings, warning))
        if evaluation is not None:
            report = attach_to_report(report, evaluation)
        if self.certify:
            entries, bugs = certify_sweep(model, sweep, self.certify, self.batch_size, None)
            report = attach_certification(report, entries, bugs)
        return report


def _num_outputs(model: Model, data: Dataset) -> int | None:
    """How many classes the model scores (one forward pass on one point if not yet known)."""
    if model.num_classes is not None:
        return int(model.num_classes)
    with torch.no_grad():
        return int(model(data.x[:1].to(model.device)).shape[-1])
