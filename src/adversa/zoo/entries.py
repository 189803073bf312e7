"""The model zoo's catalogue: what each built-in model is and how it is trained.

An entry is a frozen recipe; `dataclasses.replace(entry, epochs=1, train_size=500)` gives a
cheaper variant (tests use this), with its own cache key since the recipe differs. Every entry
maps onto a `TrainConfig` (`entry.train_config()`) and is trained by the library's training
loop, `adversa.train.loop.train`, like any user's run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

from adversa.defenses import DEFENSES as REGISTRY
from adversa.errors import BadInput
from adversa.registry import Registry
from adversa.train.config import TrainConfig

DEFENSES: tuple[str, ...] = ("none", "pgd-at", "trades", "patch-ablation")
ADVERSARIAL: tuple[str, ...] = ("pgd-at", "trades")
ZOO_FORMAT = 2  # bump when training code changes in a way that should invalidate caches
# 2: trained by adversa.train.loop.train (per-epoch seeded order; full-PGD adversary)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZooEntry:
    """A recipe for one zoo model. Every field except `description` is part of the cache key."""

    name: str  # registry name, lower-kebab
    data: str  # built-in dataset: trained on its "train" split, scored on "test"
    arch: str  # a name in `adversa.nets.ARCHS`
    defense: str = "none"  # "none", "pgd-at" (Madry et al. 2018) or "trades" (Zhang et al. 2019)
    eps: float = 0.0  # pgd-at, trades: linf training radius
    epochs: int = 10  # passes over the training split
    seed: int = 0  # seeds initialisation, shuffling and PGD's random starts
    description: str = ""  # one line for `adversa zoo list`
    batch_size: int = 64  # samples per optimizer step
    lr: float = 1e-3  # Adam's peak learning rate (cosine decay to 0)
    train_size: int | None = None  # use only the first n training samples (None: all)
    pgd_steps: int = 10  # pgd-at, trades: steps of the inner maximisation per batch
    pgd_step_size: float | None = None  # None means 2.5 * current eps / steps
    eps_ramp: float = 0.0  # share of training over which eps grows from 0 to eps
    beta: float = 6.0  # trades: weight of the KL (robustness) term

    def __post_init__(self) -> None:
        if self.defense not in DEFENSES:
            raise BadInput(f"defense must be one of {', '.join(DEFENSES)}, got {self.defense!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise BadInput(f"zoo entry {self.name!r} needs epochs >= 1, batch_size >= 1 and lr > 0")
        if self.train_size is not None and self.train_size < 1:
            raise BadInput(f"train_size must be >= 1 or None, got {self.train_size}")
        if self.defense in ADVERSARIAL and not 0 < self.eps <= 1:
            raise BadInput(f"{self.defense} needs 0 < eps <= 1, got {self.eps}")

    def train_config(self) -> TrainConfig:
        """The recipe as a `TrainConfig` (Adam, cosine decay; no final robust evaluation: the
        zoo's card reports clean accuracy, `adversa evaluate` measures robustness)."""
        options: dict[str, object] = {}
        if self.defense in ADVERSARIAL:
            options = {
                "eps": self.eps,
                "steps": self.pgd_steps,
                "step_size": self.pgd_step_size,
                "eps_ramp": self.eps_ramp,
            }
        if self.defense == "trades":
            options["beta"] = self.beta
        return TrainConfig(
            data=self.data,
            arch=self.arch,
            defense=REGISTRY.get(self.defense, **options),
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer="adam",
            seed=self.seed,
            train_size=self.train_size,
            final_eval=(),
        )

    @property
    def fingerprint(self) -> str:
        """12 hex digits of a hash of the recipe (all fields but `description`)."""
        recipe = dataclasses.asdict(self)
        recipe.pop("description")
        recipe["format"] = ZOO_FORMAT
        blob = json.dumps(recipe, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# name -> recipe; `ZOO_ENTRIES.get(name, epochs=1)` gives a variant (`dataclasses.replace`)
ZOO_ENTRIES: Registry[ZooEntry] = Registry("model")
for _entry in (
    ZooEntry(
        name="mnist-cnn",
        data="mnist",
        arch="small-cnn",
        epochs=20,
        lr=2e-3,
        description="SmallCNN (Wong & Kolter 2018) on 4,000 MNIST digits, standard training",
    ),
    ZooEntry(
        name="mnist-cnn-pgd",
        data="mnist",
        arch="small-cnn",
        defense="pgd-at",
        eps=0.3,
        epochs=40,
        lr=3e-3,
        pgd_steps=7,
        eps_ramp=0.3,
        description="SmallCNN on 4,000 MNIST digits, PGD adversarial training "
        "(Madry et al. 2018) at linf eps 0.3, 7 steps, eps ramped over 30% of training",
    ),
    ZooEntry(
        name="mnist-cnn-trades",
        data="mnist",
        arch="small-cnn",
        defense="trades",
        eps=0.3,
        beta=6.0,
        epochs=40,
        lr=3e-3,
        pgd_steps=7,
        eps_ramp=0.3,
        description="SmallCNN on 4,000 MNIST digits, TRADES (Zhang et al. 2019) with beta 6 "
        "at linf eps 0.3, 7 steps, eps ramped over 30% of training",
    ),
    ZooEntry(
        name="breast-cancer-mlp",
        data="breast-cancer",
        arch="mlp",
        epochs=60,
        batch_size=32,
        description="MLP 30-64-32-2 on the min-max scaled breast-cancer table",
    ),
    ZooEntry(
        name="digits-mlp",
        data="digits",
        arch="mlp-wide",
        epochs=30,
        batch_size=32,
        description="MLP 64-256-128-10 on scikit-learn's 8x8 digits",
    ),
    ZooEntry(
        name="signs-cnn",
        data="signs",
        arch="pool-cnn",
        epochs=25,
        lr=2e-3,
        description="PoolCNN on 3,200 synthetic road signs (8 classes, 32x32 colour), "
        "standard training",
    ),
    ZooEntry(
        name="face-cnn",
        data="faces",
        arch="pool-cnn",
        epochs=30,
        batch_size=16,
        lr=2e-3,
        description="PoolCNN face detector (face vs non-face) on scikit-image's lfw_subset, "
        "160 train images",
    ),
    ZooEntry(
        name="mnist-cnn-ablated",
        data="mnist",
        arch="ablated-strip-column2",
        defense="patch-ablation",
        epochs=60,
        lr=2e-3,
        description="Base classifier for patch smoothing (Levine & Feizi 2020) on 4,000 MNIST "
        "digits: an MLP on the kept band of 2 columns and its position, 4 random bands per "
        "digit and step",
    ),
):
    ZOO_ENTRIES.register(_entry.name)(functools.partial(dataclasses.replace, _entry))


def list_models() -> list[str]:
    """Names of the zoo models."""
    return ZOO_ENTRIES.list()


def zoo_entry(name: str) -> ZooEntry:
    """The recipe of zoo model `name`; unknown names raise `UnknownName` with suggestions."""
    return ZOO_ENTRIES.get(name)
