"""Constraints stated in a data set's original units, and reports of what an attack changed.

`constraints_for(dataset, ...)` builds `FeatureConstraints` from feature names and values in
original units (for a data set scaled with a min-max scaler in `meta["scaler"]`, such as
"breast-cancer" and "fraud"); with `from_meta=True` it starts from `meta["constraints"]`
(the "fraud" built-in ships one). `feature_changes(dataset, x, x_adv)` undoes the scaler
(`adversa.data.unscale`) and lists, per row, which features changed and by how much.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from adversa.data.dataset import Dataset, unscale
from adversa.errors import BadInput
from adversa.tabular.constraints import FeatureConstraints

Feature = int | str


def _index(dataset: Dataset, feature: Feature) -> int:
    names = list(dataset.feature_names or ())
    if isinstance(feature, str):
        if feature not in names:
            raise BadInput(f"dataset {dataset.name!r} has no feature {feature!r}")
        return names.index(feature)
    return int(feature)


def constraints_for(
    dataset: Dataset,
    *,
    immutable: Sequence[Feature] = (),
    integer: Sequence[Feature] = (),
    increase_only: Sequence[Feature] = (),
    categorical: Sequence[Sequence[Feature]] = (),
    lower: Mapping[Feature, float] | None = None,
    upper: Mapping[Feature, float] | None = None,
    weights: Mapping[Feature, float] | None = None,
    from_meta: bool = False,
) -> FeatureConstraints:
    """`FeatureConstraints` for `dataset`'s scaled inputs, from names (or indices) and bounds
    in original units. Integer grids follow the scaler: `unit = 1 / scale`, `origin =
    -min / scale`. Unscaled data sets use their values as they are."""
    if dataset.x.dim() != 2:
        raise BadInput(f"constraints need a flat tabular dataset, {dataset.name!r} is not")
    for key, features in (
        ("immutable", immutable),
        ("integer", integer),
        ("increase_only", increase_only),
    ):
        _check_features(key, features)
    if isinstance(categorical, str) or not isinstance(categorical, Sequence):
        raise BadInput(
            f"categorical must be a list of groups (lists of features), got {_shown(categorical)}"
        )
    for i, group in enumerate(categorical):
        _check_features(f"categorical[{i}]", group)
    for key, values in (("lower", lower), ("upper", upper), ("weights", weights)):
        if values is not None:
            _check_values(key, values)
    d = dataset.x.shape[1]
    spec: dict[str, Any] = dict(dataset.meta.get("constraints", {})) if from_meta else {}
    scaler = dataset.meta.get("scaler")
    lo = list(scaler["min"]) if scaler else [0.0] * d
    scale = list(scaler["scale"]) if scaler else [1.0] * d

    def idx(features: Sequence[Feature]) -> tuple[int, ...]:
        return tuple(_index(dataset, f) for f in features)

    def merged(key: str, given: Sequence[Feature]) -> tuple[int, ...]:
        return tuple(dict.fromkeys(idx(spec.get(key, ())) + idx(given)))

    def per_feature(values: Mapping[Feature, float] | None, default: float, scaled: bool):
        out = [default] * d
        for feature, value in (values or {}).items():
            i = _index(dataset, feature)
            out[i] = (float(value) - lo[i]) / scale[i] if scaled else float(value)
        return out

    lower = {**spec.get("lower", {}), **(lower or {})}
    upper = {**spec.get("upper", {}), **(upper or {})}
    groups = [idx(g) for g in spec.get("categorical", ())] + [idx(g) for g in categorical]
    return FeatureConstraints(
        num_features=d,
        lower=per_feature(lower, -float("inf"), True),
        upper=per_feature(upper, float("inf"), True),
        immutable=merged("immutable", immutable),
        integer=merged("integer", integer),
        increase_only=merged("increase_only", increase_only),
        categorical=groups,
        unit=[1.0 / s for s in scale],
        origin=[-m / s for m, s in zip(lo, scale, strict=True)],
        weights=per_feature(weights, 1.0, False),
        feature_names=dataset.feature_names,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureChanges:
    """Per-row feature changes in original units: `before`, `after` (B, D) and `changed`
    (bool, B, D: moved by more than `atol` in the scaled space)."""

    before: Tensor
    after: Tensor
    changed: Tensor
    feature_names: tuple[str, ...]

    @property
    def delta(self) -> Tensor:
        return self.after - self.before

    def records(self) -> list[list[dict[str, Any]]]:
        """For each row, `[{feature, before, after, delta}]` over its changed features."""
        rows: list[list[dict[str, Any]]] = [[] for _ in range(self.before.shape[0])]
        for r, c in torch.nonzero(self.changed).tolist():  # reporting, not a hot path
            b, a = float(self.before[r, c]), float(self.after[r, c])
            rows[r].append(
                {"feature": self.feature_names[c], "before": b, "after": a, "delta": a - b}
            )
        return rows


def feature_changes(
    dataset: Dataset, x: Tensor, x_adv: Tensor, atol: float = 1e-6
) -> FeatureChanges:
    """Which features `x_adv` changed relative to `x` (both scaled, (B, D)), and by how much
    in original units (`unscale`; unscaled data sets are reported as they are)."""
    scaled = "scaler" in dataset.meta
    before = unscale(dataset, x.double()) if scaled else x.double()
    after = unscale(dataset, x_adv.double()) if scaled else x_adv.double()
    names = dataset.feature_names or tuple(f"x{i}" for i in range(x.shape[1]))
    return FeatureChanges(before, after, (x_adv - x).abs() > atol, tuple(names))


def scaler_changes(
    x: Tensor,
    x_adv: Tensor,
    scaler: Mapping[str, Any] | None,
    feature_names: Sequence[str] | None = None,
    atol: float = 1e-6,
) -> FeatureChanges:
    """`feature_changes` from a scaler record (`{"min": [...], "scale": [...]}`, as in a data
    set's `meta["scaler"]`) instead of a data set; None reports the inputs as they are."""
    if x.dim() != 2 or x_adv.shape != x.shape:
        raise BadInput(
            f"x and x_adv must be flat (B, D) and alike, got {tuple(x.shape)}, {tuple(x_adv.shape)}"
        )
    before, after = x.detach().cpu().double(), x_adv.detach().cpu().double()
    if scaler is not None:
        lo = torch.as_tensor(scaler["min"], dtype=torch.float64)
        scale = torch.as_tensor(scaler["scale"], dtype=torch.float64)
        if lo.shape != (x.shape[1],) or scale.shape != (x.shape[1],):
            raise BadInput(f"the scaler has {lo.numel()} features, the inputs {x.shape[1]}")
        before, after = before * scale + lo, after * scale + lo
    names = tuple(feature_names) if feature_names else tuple(f"x{i}" for i in range(x.shape[1]))
    if len(names) != x.shape[1]:
        raise BadInput(f"{len(names)} feature names for {x.shape[1]} features")
    changed = (x_adv.detach().cpu() - x.detach().cpu()).abs() > atol
    return FeatureChanges(before, after, changed, names)


def example_changes(
    x: Tensor,
    x_adv: Tensor,
    scaler: Mapping[str, Any] | None,
    feature_names: Sequence[str] | None = None,
) -> list[list[dict[str, Any]]]:
    """Per row, its changed features in original units (`{feature, before, after, delta}`),
    largest change first, measured as a share of the feature's range (the scaled change)."""
    changes = scaler_changes(x, x_adv, scaler, feature_names)
    size = (x_adv.detach().cpu() - x.detach().cpu()).abs()
    rows = changes.records()
    for r, row in enumerate(rows):
        order = {name: float(size[r, i]) for i, name in enumerate(changes.feature_names)}
        row.sort(key=lambda rec: -order[rec["feature"]])
    return rows


CONSTRAINT_KEYS = (
    "immutable",
    "integer",
    "increase_only",
    "categorical",
    "lower",
    "upper",
    "weights",
)


def load_constraints(dataset: Dataset, spec: str) -> FeatureConstraints:
    """Constraints for the CLI's `--constraints SPEC`: "data" takes the data set's own
    (`meta["constraints"]`, e.g. "fraud"); a SPEC starting with `{` (or `[`) is inline JSON;
    otherwise SPEC is a JSON file. The JSON object's keys are those of `constraints_for`
    (features by name or index, values in original units); every problem raises `BadInput`
    naming `--constraints`."""
    from pathlib import Path

    if spec == "data":
        if not dataset.meta.get("constraints"):
            raise BadInput(
                f"--constraints data: {dataset.name!r} declares no constraints; pass a JSON file"
            )
        return constraints_for(dataset, from_meta=True)
    inline = spec.lstrip().startswith(("{", "["))
    shown = spec if len(spec) <= 60 else spec[:57] + "..."
    label = f"--constraints {shown!r}" if inline else f"--constraints {spec}"
    if inline:
        text = spec
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise BadInput(f"{label}: no such file (give a JSON file, inline JSON or 'data')")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{label}: cannot read the file ({exc})") from None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{label}: not valid JSON ({exc})") from None
    if not isinstance(options, dict):
        raise BadInput(
            f'{label}: expected a JSON object such as {{"immutable": ["age"]}}, got '
            f"{_shown(options)}"
        )
    unknown = sorted(set(options) - set(CONSTRAINT_KEYS))
    if unknown:
        raise BadInput(f"{label}: unknown key(s) {unknown}; known: {list(CONSTRAINT_KEYS)}")
    try:
        return constraints_for(dataset, **options)
    except BadInput as exc:
        raise BadInput(f"{label}: {exc}") from None


def _json_type(value: object) -> str:
    names = {list: "list", dict: "object", str: "string", bool: "boolean", int: "number"}
    return "null" if value is None else names.get(type(value), "number")


def _shown(value: object) -> str:
    """`value` as a message shows it: its JSON type, and itself when short."""
    text = repr(value)
    return f"a {_json_type(value)}" + (f" {text}" if len(text) <= 40 else "")


def _check_features(key: str, value: object) -> None:
    """`value` is a list of feature names or indices (a bare string would be read one
    character at a time)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        hint = f" (write [{json.dumps(value)}])" if isinstance(value, str | int) else ""
        raise BadInput(
            f"{key} must be a list of feature names or indices, got {_shown(value)}{hint}"
        )
    bad = [f for f in value if isinstance(f, bool) or not isinstance(f, str | int)]
    if bad:
        raise BadInput(f"{key} must list feature names or indices, got {bad[0]!r}")


def _check_values(key: str, value: object) -> None:
    """`value` maps feature names or indices to finite numbers."""
    if not isinstance(value, Mapping):
        raise BadInput(
            f'{key} must map feature names to numbers (e.g. {{"age": 18}}), got {_shown(value)}'
        )
    for feature, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise BadInput(f"{key}[{feature!r}] must be a number, got {number!r}")
        if not math.isfinite(number):
            raise BadInput(f"{key}[{feature!r}] must be finite, got {number!r}")
