"""`extract` as one library call: a frozen `ExtractPlan` and `plan.run(target, pool, test)`
-> the content of `report.json`.

For each method: copies trained at a geometric ladder of budgets up to `queries` (the
fidelity-versus-queries curve), each against the undefended API and against each defended one
(`defense`: one spec or several); each defense's cost to honest users on the test data; and
the best undefended copy (highest fidelity at the full budget) as the surrogate of a transfer
attack (FGSM, or any white-box attack, on the copy; labels only from the target), beside a surrogate
trained independently on labelled data when some is given, and beside a score-based
black-box attack (`blackbox_attack`, square by default) on the target with the same total
number of queries as the copy's extraction (floor(Q / n) per point; also the per-point budget
at which it matches the transfer attack's robust accuracy: `adversa.extraction.blackbox`).

Example::

    plan = ExtractPlan(methods=("knockoff",), queries=5000, defense="top1")
    report = plan.run(load_model("mnist-cnn"), load_pool("digits-28", 5000), load_data("mnist"))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from adversa.attacks import get_attack
from adversa.data.dataset import Dataset
from adversa.errors import BadInput, ShapeError, describe, is_integer
from adversa.extraction import (
    EXTRACTIONS,
    APIDefense,
    ExtractionBase,
    accuracy,
    fidelity,
    honest_cost,
    parse_defense,
    serve,
)
from adversa.extraction.blackbox import blackbox_comparison, check_blackbox_attack
from adversa.extraction.equivalent import weight_error
from adversa.model import Model
from adversa.rng import make_generator
from adversa.threat import ThreatModel
from adversa.versions import versions

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractPlan:
    """What to extract, how, against which defense, and the transfer check; validated."""

    methods: tuple[str, ...] = ("knockoff",)  # names in EXTRACTIONS
    queries: int = 5000  # query budget of the final copies
    curve: int = 4  # budgets on the curve: queries / 2**k for k < curve
    defense: str | tuple[str, ...] = "none"  # API-side defense spec(s) (`parse_defense`)
    arch: str | None = None  # the copy's architecture (None: small-cnn for images, else mlp)
    epochs: int = 10  # copy training passes (at least `min_steps` steps)
    min_steps: int = 500  # fewest optimizer steps per copy
    eps: float = 0.3  # transfer attack: linf radius
    transfer_attack: str = "fgsm"  # white-box attack run on the copy (full-eps steps transfer)
    transfer_n: int = 500  # transfer attack: test points
    blackbox_attack: str = "square"  # score-based attack at the extraction's budget (or none)
    seed: int = 0  # seeds every method, copy and the transfer attack
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        if isinstance(self.methods, str) or not self.methods:
            raise BadInput(f"--method: expected method names, got {describe(self.methods)}")
        object.__setattr__(
            self, "methods", tuple(dict.fromkeys(EXTRACTIONS.canonical(m) for m in self.methods))
        )
        for name in ("queries", "curve", "transfer_n"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if not 0 <= self.eps <= 1:
            raise BadInput(f"--eps must be in [0, 1], got {self.eps}")
        self.defenses()
        check_blackbox_attack(self.blackbox_attack)
        get_attack(
            "transfer",
            ThreatModel(norm="linf", eps=self.eps),
            attack=self.transfer_attack,
            surrogate=torch.nn.Identity(),
        )
        for method in self.methods:
            self.method(method, self.queries)  # each method's own checks

    def method(self, name: str, queries: int) -> ExtractionBase:
        """Method `name` at budget `queries` with the plan's seed and copy training."""
        return EXTRACTIONS.get(
            name,
            queries=queries,
            seed=self.seed,
            arch=self.arch,
            epochs=self.epochs,
            min_steps=self.min_steps,
        )

    def defenses(self) -> list[APIDefense]:
        """The defenses to run against, without `none` and repeats (first spec first)."""
        specs = (self.defense,) if isinstance(self.defense, str) else tuple(self.defense)
        if not specs or not all(isinstance(spec, str) for spec in specs):
            raise BadInput(f"--defense: expected defense specs, got {describe(self.defense)}")
        parsed = {d.label: d for d in map(parse_defense, specs) if d.kind != "none"}
        return list(parsed.values())

    def budgets(self) -> list[int]:
        return sorted({max(1, self.queries >> k) for k in range(self.curve)})

    def run(
        self,
        target: Model,
        pool: torch.Tensor,
        test: Dataset,
        surrogate_data: Dataset | None = None,
        progress: Progress | None = None,
        groups: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Extract `target` with every method from `pool` (unlabelled inputs; `groups` (N,):
        the pool's coarse groups, for knockoff-adaptive); fidelity and accuracy on `test`; the
        content of report.json."""
        start = time.perf_counter()
        note = progress or (lambda _: None)
        if tuple(pool.shape[1:]) != test.input_shape:
            raise ShapeError(
                f"--data: pool inputs of shape {tuple(pool.shape[1:])} do not fit the test data's "
                f"{test.input_shape} (the target's input)"
            )
        defenses = self.defenses()
        apis = {"none": serve(target, parse_defense("none"))}
        apis |= {d.label: serve(target, d) for d in defenses}
        rows, copies = [], {}
        for name in self.methods:
            row: dict[str, Any] = {"name": name, "curves": {}}
            for label, api in apis.items():
                curve = []
                for q in self.budgets():
                    note(f"{name} · defense {label} · {q} queries")
                    result = self.method(name, q)(api, pool, groups)
                    curve.append(
                        {
                            "queries": result.queries,
                            "fidelity": fidelity(result.copy, target, test.x),
                            "accuracy": accuracy(result.copy, test.x, test.y),
                            "backward_calls": result.cost.backward,
                            "seconds": result.seconds,
                            **result.details,
                        }
                    )
                row["curves"][label] = curve
                if label == "none":
                    copies[name] = result.copy
            if name == "equivalent":
                row |= _weight_error(target, copies[name], row["curves"]["none"][-1])
            final = row["curves"]["none"][-1]
            row |= {k: final[k] for k in ("fidelity", "accuracy", "queries", "backward_calls")}
            row["defended"] = {
                d.label: {
                    "fidelity": row["curves"][d.label][-1]["fidelity"],
                    "fidelity_drop": final["fidelity"] - row["curves"][d.label][-1]["fidelity"],
                }
                for d in defenses
            }
            if defenses:  # the first defense, also at the top level of the row
                first = row["defended"][defenses[0].label]
                row["defended_fidelity"] = first["fidelity"]
                row["fidelity_drop"] = first["fidelity_drop"]
            rows.append(row)
        best = max(rows, key=lambda r: r["fidelity"])
        warnings = []
        if pool.shape[0] < self.queries and {"copycat", "knockoff"} & set(self.methods):
            warnings.append(
                f"the pool has {pool.shape[0]} inputs, fewer than --queries {self.queries}: "
                "copycat and knockoff query each input once and spend no more"
            )
        note("transfer attack from the copy")
        transfer = self._transfer(target, copies[best["name"]], test, surrogate_data)
        if self.blackbox_attack != "none":
            note(f"{self.blackbox_attack} at {best['queries']} queries")
            threat = ThreatModel(norm="linf", eps=self.eps, bounds=target.bounds)
            x, y = test.x[: self.transfer_n], test.y[: self.transfer_n]
            transfer["blackbox"] = blackbox_comparison(
                target,
                x,
                y,
                threat,
                self.blackbox_attack,
                best["queries"],
                self.seed,
                match=transfer["copy_robust_accuracy"],
            )
        costs = [
            honest_cost(target, d, test.x, test.y)
            | {
                "fidelity_without": best["fidelity"],
                "fidelity_with": best["defended"][d.label]["fidelity"],
                "fidelity_drop": best["defended"][d.label]["fidelity_drop"],
            }
            for d in defenses
        ]
        report = {
            "target": target.name,
            "target_accuracy": accuracy(target, test.x, test.y),
            "best_method": best["name"],
            "fidelity": best["fidelity"],
            "accuracy": best["accuracy"],
            "queries": best["queries"],
            "backward_calls": sum(
                p["backward_calls"] for r in rows for c in r["curves"].values() for p in c
            ),
            "methods": rows,
            "defense": costs[0]
            if costs
            else honest_cost(target, parse_defense("none"), test.x, test.y),
            "defenses": costs,
            "transfer": transfer,
            "n_test": len(test),
            "warnings": warnings,
        }
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["methods"] = list(self.methods)
        config = {**{k: v for k, v in fields.items() if k != "provenance"}, **self.provenance}
        return report | {
            "config": config,
            "seed": self.seed,
            "versions": versions(),
            "seconds": time.perf_counter() - start,
        }

    def _transfer(
        self, target: Model, copy: torch.nn.Module, test: Dataset, surrogate_data: Dataset | None
    ) -> dict[str, Any]:
        """The target's robust accuracy on the first `transfer_n` test points under
        `transfer_attack` crafted on the copy (and on an independent surrogate, when
        `surrogate_data` is given)."""
        threat = ThreatModel(norm="linf", eps=self.eps, bounds=target.bounds)
        x, y = test.x[: self.transfer_n], test.y[: self.transfer_n]
        surrogates = {"copy": copy}
        if surrogate_data is not None:
            if surrogate_data.input_shape != test.input_shape:
                raise ShapeError(
                    f"surrogate data of shape {surrogate_data.input_shape} does not fit the "
                    f"test data's {test.input_shape}"
                )
            method = self.method(self.methods[0], self.queries)
            gen = make_generator(self.seed + 1)
            surrogates["independent"] = method.fit(
                surrogate_data.x, surrogate_data.y, test.num_classes, gen
            )
        out: dict[str, Any] = {
            "norm": "linf",
            "eps": self.eps,
            "attack": self.transfer_attack,
            "n": int(x.shape[0]),
            "clean_accuracy": accuracy(target, x, y),
        }
        for label, net in surrogates.items():
            attack = get_attack(
                "transfer", threat, seed=self.seed, surrogate=net, attack=self.transfer_attack
            )
            result = attack(target.labels_only(), x, y)
            out[f"{label}_robust_accuracy"] = 1.0 - result.success_rate
            out[f"{label}_surrogate_accuracy"] = accuracy(net, x, y)
        out["robust_accuracy"] = out["copy_robust_accuracy"]
        return out


def _weight_error(target: Model, copy: torch.nn.Module, point: dict[str, Any]) -> dict[str, Any]:
    """The recovered units' distance to the target's first layer when the target is a
    one-hidden-layer MLP (parameters W1 (H, d), b1, W2 (C, H), b2), else None: the
    evaluator's white-box check of Jagielski et al.'s weight recovery (the attack never
    reads the weights)."""
    params = list(target.module.parameters())
    shapes = [p.dim() for p in params]
    if shapes != [2, 1, 2, 1] or params[0].shape[0] != params[2].shape[1] or "units" not in point:
        return {"weight_error": None}
    return {"weight_error": weight_error(copy, point["units"], params[0], params[1])}
