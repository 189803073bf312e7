"""`TrainConfig`: everything that decides what a training run computes, as one frozen value.

Two runs with equal configs (`config.to_dict()`) and the same world of floating-point
arithmetic produce the same weights: data order, initialisation and every random draw of the
defense are derived from `seed`. The dictionary form is what checkpoints and model cards
record, what `--resume` compares, and what `TrainConfig.from_dict` reads back.

Example::

    config = TrainConfig(
        data="mnist", arch="small-cnn", defense=DEFENSES.get("pgd-at", eps=0.3, steps=7),
        epochs=10, lr=3e-3,
    )
    result = train(config, "runs/pgd-at")
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

from adversa.checks import check_config_types
from adversa.data import Dataset, list_datasets, load_data, stratified_split
from adversa.defenses.base import DEFENSES, DefenseBase, defense_options
from adversa.errors import BadInput, describe, is_integer, is_real
from adversa.nets import ARCHS
from adversa.threat import NORMS, ThreatModel, check_bounds
from adversa.train.sampling import check_balance

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
DEFAULT_FINAL_EVAL: tuple[str, ...] = ("apgd-ce", "apgd-t")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A training run: data, architecture, defense and optimisation, all validated on creation.

    `defense` is a defense config (`DEFENSES.get(name, **options)`) or a registry name for its
    defaults. The learning rate decays from `lr` to 0 on a cosine over all batches.
    """

    data: str  # built-in name (trained on its "train" split) or a .npz / .csv / image folder
    arch: str  # a name in `adversa.nets.ARCHS`
    defense: DefenseBase | str = "none"  # config from `DEFENSES.get(...)`, or a name
    epochs: int = 10  # passes over the training data
    batch_size: int = 64  # global samples per batch (split over ranks under torchrun)
    lr: float = 1e-3  # peak learning rate (cosine decay to 0 over the run)
    optimizer: str = "adam"  # "adam" or "sgd"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2 penalty of the optimizer
    seed: int = 0  # initialisation, data order and every draw of the defense
    train_size: int | None = None  # train on the first n samples only (None: all)
    test_data: str | None = None  # None: the "test" split of a built-in, 20 % held out of a file
    label_column: str | None = None  # label column of a .csv dataset
    final_eval: tuple[str, ...] = DEFAULT_FINAL_EVAL  # attacks of the final robust evaluation
    eval_size: int | None = 1000  # test points for the final robust evaluation (None: all)
    eval_eps: float | None = None  # radius of the final evaluation; None: the defense's eps
    eval_norm: str | None = None  # norm of the final evaluation; None: the defense's norm
    bounds: tuple[float, float] | None = None  # input range of the data; None: the defense's
    # bounds if it has them, else the dataset's ([0, 1] for built-ins and files)
    class_balance: str = "none"  # epoch order: "none" (permutation), "sample" (classes drawn
    # equally often) or "sqrt" (drawn in proportion to sqrt(class size)); see train.sampling

    def __post_init__(self) -> None:
        if isinstance(self.defense, str):
            object.__setattr__(self, "defense", DEFENSES.get(self.defense))
        elif not isinstance(self.defense, DefenseBase):
            raise BadInput(
                f"defense must be a defense config (DEFENSES.get(name, ...)) or a name, got "
                f"{type(self.defense).__name__}"
            )
        if not isinstance(self.data, str) or not self.data.strip():
            raise BadInput(f"data must name a dataset, got {self.data!r}")
        if not isinstance(self.arch, str):
            raise BadInput(f"arch must be an architecture name, got {describe(self.arch)}")
        ARCHS.canonical(self.arch)  # unknown names raise UnknownName with suggestions
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        if not (is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"lr must be a finite number > 0, got {self.lr!r}")
        check_config_types(self, "training config")
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not 0 <= self.momentum < 1:
            raise BadInput(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BadInput(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not is_integer(self.seed):
            raise BadInput(f"seed must be an integer, got {self.seed!r}")
        if self.train_size is not None:
            _positive_int("train_size", self.train_size)
        check_balance(self.class_balance)
        if self.eval_size is not None:
            _positive_int("eval_size", self.eval_size)
        object.__setattr__(self, "final_eval", tuple(self.final_eval))
        for name in self.final_eval:
            if not isinstance(name, str):
                raise BadInput(f"final_eval must hold attack names, got {describe(name)}")
        if self.final_eval:
            from adversa.attacks import ATTACKS

            object.__setattr__(
                self, "final_eval", tuple(ATTACKS.canonical(a) for a in self.final_eval)
            )
        if self.eval_eps is not None and not (math.isfinite(self.eval_eps) and self.eval_eps >= 0):
            raise BadInput(f"eval_eps must be a finite number >= 0, got {self.eval_eps}")
        if self.eval_norm is not None and self.eval_norm not in NORMS:
            raise BadInput(f"eval_norm must be one of {', '.join(NORMS)}, got {self.eval_norm!r}")
        if self.bounds is not None:
            object.__setattr__(self, "bounds", check_bounds(self.bounds))
            own = self._defense_bounds()
            if own is not None and own != self.bounds:
                raise BadInput(
                    f"bounds {self.bounds} differ from the bounds {tuple(own)} of defense "
                    f"{self.defense_name!r}: give the defense the same range "
                    f"(DEFENSES.get({self.defense_name!r}, ..., bounds={self.bounds}))"
                )

    def data_bounds(self) -> tuple[float, float] | None:
        """The declared input range: `bounds`, else the defense's (it clips to them), else
        None (the dataset's own)."""
        if self.bounds is not None:
            return self.bounds
        return self._defense_bounds()

    @property
    def trained(self) -> DefenseBase:
        """The defense config (`defense` after `__post_init__` resolved a name)."""
        assert isinstance(self.defense, DefenseBase)
        return self.defense

    def _defense_bounds(self) -> tuple[float, float] | None:
        ball = self.trained.ball()
        return None if ball is None else ball.bounds

    @property
    def defense_name(self) -> str:
        return self.trained.name

    def eval_threat(self, bounds: tuple[float, float] | None = None) -> ThreatModel | None:
        """The threat model of the final robust evaluation, or None when there is none to
        run: `eval_eps` and `eval_norm` over the defense's ball (norm "linf" for a defense
        without one), in `bounds` (default: `data_bounds()`, else (0, 1))."""
        ball = self.trained.ball()
        eps = self.eval_eps if self.eval_eps is not None else (ball and ball.eps)
        if not self.final_eval or eps is None or eps <= 0:
            return None
        norm = self.eval_norm or (ball.norm if ball is not None else "linf")
        box = bounds if bounds is not None else self.data_bounds() or (0.0, 1.0)
        return ThreatModel(norm=norm, eps=float(eps), bounds=box)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict(to_dict())` gives an equal config."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["defense"] = self.defense_name
        out["defense_options"] = defense_options(self.trained)
        out["final_eval"] = list(self.final_eval)
        if self.bounds is None:
            del out["bounds"]  # so that runs from before the field existed still resume
        if self.class_balance == "none":
            del out["class_balance"]  # likewise (and zoo entries keep their cache keys)
        return _jsonable(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config `to_dict` described; unknown keys raise `BadInput`."""
        if not isinstance(data, Mapping):
            raise BadInput(f"training config must be a mapping, got {describe(data)}")
        values = dict(data)
        raw_options = values.pop("defense_options", {})
        if not isinstance(raw_options, Mapping):
            raise BadInput(f"defense_options must be a mapping, got {describe(raw_options)}")
        options = {k: _tuples(v) for k, v in raw_options.items()}
        values["defense"] = DEFENSES.get(values.get("defense", "none"), **options)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadInput(f"training config has unknown keys: {', '.join(unknown)}")
        for key in ("final_eval", "bounds"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)


def load_splits(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """(train, test) datasets of `config`.

    A built-in dataset gives its "train" and "test" splits; a file is split into a stratified
    80 % / 20 % (seeded with `adversa.data.SPLIT_SEED`) unless `test_data` names the test set.
    `train_size` keeps the first n training samples.
    """
    if config.data.strip().lower() in list_datasets():
        train = load_data(config.data, split="train")
        test_spec = config.test_data or config.data
        test = load_data(test_spec, split="test", label_column=config.label_column)
    else:
        full = load_data(config.data, label_column=config.label_column)
        if config.test_data is not None:
            train = full
            test = load_data(config.test_data, split="test", label_column=config.label_column)
        else:
            train_idx, test_idx = stratified_split(full.y.numpy())
            if len(test_idx) == 0 or len(train_idx) == 0:
                raise BadInput(
                    f"data {config.data!r} has {len(full)} samples: too few to hold out a test "
                    f"split (pass test_data)"
                )
            train, test = full.subset(_index(train_idx)), full.subset(_index(test_idx))
    if test.input_shape != train.input_shape:
        raise BadInput(
            f"test data has inputs of shape {test.input_shape}, training data {train.input_shape}"
        )
    if len(test) and int(test.y.max()) >= train.num_classes:
        raise BadInput(
            f"test data {test.name!r} has labels up to {int(test.y.max())}, beyond the "
            f"{train.num_classes} classes of the training data {train.name!r}"
        )
    if config.train_size is not None and config.train_size > len(train):
        log.warning(
            "train_size %d is larger than the %d training samples: training on all of them",
            config.train_size,
            len(train),
        )
    return train.take(config.train_size), test


def _index(idx: Any) -> Any:
    import torch

    return torch.as_tensor(idx, dtype=torch.long)


def _positive_int(name: str, value: Any) -> None:
    if not is_integer(value) or value < 1:
        raise BadInput(f"{name} must be an integer >= 1, got {value!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples configs hold (e.g. `bounds`)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
