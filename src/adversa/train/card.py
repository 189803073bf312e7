"""What a training run hands back: the trained module, its model card and its history.

The card (`card.json` next to `model.pt`) records what the model is (data, architecture,
input shape, classes), how it was made (defense and options, hyper-parameters, seed, world
size, versions, seconds) and how good it is: the final epoch's training metrics, clean test
accuracy and the robust accuracy from `adversa.evaluate` at the defense's threat model, the
per-sample worst case over the `final_eval` attacks (APGD-CE then APGD-T by default, the
first two stages of AutoAttack, Croce & Hein 2020, arXiv:2003.01690). Beside each accuracy
the card gives per-class recall and precision (`class_metrics`), and `warnings` says when the
model is no better than the base rate ("training collapsed"), predicts one class for almost
everything, or never recognises a class (`adversa.class_metrics`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adversa.class_metrics import class_warnings, per_class
from adversa.data import Dataset
from adversa.errors import BadInput
from adversa.model import Model
from adversa.train.config import TrainConfig
from adversa.train.output import load_training_output
from adversa.train.parts import test_predictions
from adversa.train.rundir import RunDir

log = logging.getLogger(__name__)

CARD_FORMAT = "adversa-train-card/1"


@dataclasses.dataclass(frozen=True, eq=False)
class TrainResult:
    """The trained module (eval mode), its card, the per-epoch metrics, and where the run was
    written (None for an in-memory run)."""

    module: nn.Module
    card: dict[str, Any]
    history: list[dict[str, Any]]
    out_dir: Path | None = None

    @property
    def model(self) -> Model:
        """The module as an `adversa.Model` (for attacks and `adversa.evaluate`)."""
        return Model(
            self.module,
            num_classes=int(self.card["num_classes"]),
            bounds=tuple(self.card["bounds"]),  # type: ignore[arg-type]
            name=self.card.get("name") or self.card["arch"],
        )

    @classmethod
    def load(
        cls, run: RunDir, history: list[dict[str, Any]], device: str | torch.device = "cpu"
    ) -> TrainResult:
        """A finished run read back from its directory."""
        model = load_training_output(run.path, device=device)
        card = run.finished_card()
        if card is None:
            raise BadInput(f"{run.path}: the run has no card.json and model.pt yet")
        return cls(model.module, card, list(history), run.path)


def final_evaluation(
    config: TrainConfig,
    module: nn.Module,
    test: Dataset,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
    clean_accuracy: float | None = None,
) -> dict[str, Any]:
    """Clean accuracy on the whole test split (`clean_accuracy` when already measured on the
    final weights), and robust accuracy on its first `eval_size` points under
    `config.eval_threat()` with the `final_eval` attacks (None when there is no threat model:
    a defense without eps and no `eval_eps`, or `final_eval=()`)."""
    from adversa.evaluation import evaluate
    from adversa.evaluation.report import Classes, result_entry

    preds = test_predictions(module, test, device).cpu()
    if clean_accuracy is None:
        clean_accuracy = float((preds == test.y).float().mean())
    names = test.class_names
    out: dict[str, Any] = {"clean_accuracy": clean_accuracy, "n": len(test)}
    out["class_metrics"] = per_class(test.y, preds, test.num_classes, names=names)
    out["warnings"] = class_warnings(
        test.y, preds, test.num_classes, names=names, collapse="training collapsed"
    )
    threat = config.eval_threat(test.bounds)
    out["robust"] = None
    if threat is None:
        return out
    subset = test.take(config.eval_size)
    model = Model(module, num_classes=test.num_classes, bounds=test.bounds, name=config.arch)
    result = evaluate(
        model,
        subset.x.to(device),
        subset.y.to(device),
        threat,
        list(config.final_eval),
        seed=config.seed,
        progress=progress,
    )
    robust = result_entry(result, Classes(num_classes=test.num_classes, names=names))
    robust.update({"norm": threat.norm, "n": result.n, "attacks_run": list(config.final_eval)})
    out["robust"] = robust
    return out


def build_card(
    config: TrainConfig,
    train: Dataset,
    test: Dataset,
    *,
    history: list[dict[str, Any]],
    evaluation: dict[str, Any],
    seconds: float,
    cpu_seconds: float,
    world: int,
    device: torch.device,
    name: str | None = None,
) -> dict[str, Any]:
    """The model card of a finished run, as plain JSON values (what card.json holds)."""
    from adversa.versions import versions

    card = {
        "format": CARD_FORMAT,
        "name": name or f"{config.arch}-{config.defense_name}",
        "data": config.data,
        "test_data": config.test_data or config.data,
        "arch": config.arch,
        "input_shape": list(train.input_shape),
        "num_classes": train.num_classes,
        "bounds": list(train.bounds),
        "n_train": len(train),
        "n_test": len(test),
        "defense": {
            "name": config.defense_name,
            "options": config.to_dict()["defense_options"],
            "steps_per_batch": config.trained.steps_per_batch,
        },
        "hyperparameters": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "schedule": "cosine",
            "optimizer": config.optimizer,
            "momentum": config.momentum if config.optimizer == "sgd" else None,
            "weight_decay": config.weight_decay,
            "train_size": config.train_size,
            "class_balance": config.class_balance,
        },
        "seed": config.seed,
        "config": config.to_dict(),
        "final_epoch": history[-1] if history else None,
        "evaluation": {k: v for k, v in evaluation.items() if k != "warnings"},
        "warnings": list(evaluation.get("warnings", ())),
        "train_seconds": round(seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),
        "world_size": world,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return json.loads(json.dumps(card))
