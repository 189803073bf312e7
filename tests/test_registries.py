"""Every name -> thing table is a `Registry`: it lists its names, and an unknown name raises
`UnknownName` (a `BadInput`) with close suggestions, through the public lookup as well."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import adversa.train  # noqa: F401  (registers the certified-training defenses)
from adversa.attacks import ATTACKS
from adversa.data import DATASETS, list_datasets, load_data
from adversa.defenses import DEFENSES
from adversa.errors import BadInput, UnknownName
from adversa.input_defenses.spec import INPUT_DEFENSES, INPUT_DETECTORS, build_detector
from adversa.nets import ARCHS, build_arch
from adversa.physical.masks import MASKS
from adversa.physical.universal import UNIVERSAL_METHODS
from adversa.poisoning import POISON_DETECTORS, POISONS, get_detector
from adversa.registry import Registry
from adversa.zoo import ZOO_ENTRIES, list_models, zoo_entry

# registry, a name it must hold, a misspelling and the suggestion it must get
CASES: dict[str, tuple[Registry, str, str, str]] = {
    "attacks": (ATTACKS, "pgd", "pgdd", "pgd"),
    "defenses": (DEFENSES, "pgd-at", "pgd-att", "pgd-at"),
    "input-defenses": (INPUT_DEFENSES, "squeeze", "squeez", "squeeze"),
    "input-detectors": (INPUT_DETECTORS, "mahalanobis", "mahalanobi", "mahalanobis"),
    "poisons": (POISONS, "badnets", "badnet", "badnets"),
    "poison-detectors": (POISON_DETECTORS, "spectral", "spectrl", "spectral"),
    "datasets": (DATASETS, "mnist", "mnst", "mnist"),
    "zoo-entries": (ZOO_ENTRIES, "mnist-cnn", "mnist-cn", "mnist-cnn"),
    "architectures": (ARCHS, "small-cnn", "small-cn", "small-cnn"),
    "masks": (MASKS, "eyeglasses", "eyeglases", "eyeglasses"),
    "universal-methods": (UNIVERSAL_METHODS, "sgd-uap", "sgd-uapp", "sgd-uap"),
}


@pytest.mark.parametrize("which", sorted(CASES))
def test_registry_lists_names(which: str) -> None:
    registry, name, _, _ = CASES[which]
    names = registry.list()
    assert name in names
    assert names == sorted(names) and len(names) == len(set(names))
    assert all(n == n.strip().lower() and " " not in n for n in names)


@pytest.mark.parametrize("which", sorted(CASES))
def test_unknown_name_suggests(which: str) -> None:
    registry, _, typo, suggestion = CASES[which]
    with pytest.raises(UnknownName, match=f"did you mean '{suggestion}'") as info:
        registry.factory(typo)
    assert isinstance(info.value, BadInput) and isinstance(info.value, KeyError)
    assert info.value.kind == registry.kind


def test_distinct_detector_registries() -> None:
    assert INPUT_DETECTORS is not POISON_DETECTORS
    assert "spectral" not in INPUT_DETECTORS and "mahalanobis" not in POISON_DETECTORS


def test_public_listings_read_the_registries() -> None:
    assert list_datasets() == DATASETS.list()
    assert list_models() == ZOO_ENTRIES.list()


LOOKUPS: dict[str, tuple[Callable[[], object], str]] = {
    "load_data": (lambda: load_data("mnst"), "unknown dataset 'mnst'; did you mean 'mnist'"),
    "zoo_entry": (lambda: zoo_entry("mnist-cn"), "unknown model 'mnist-cn'; did you mean"),
    "build_arch": (
        lambda: build_arch("small-cn", (1, 28, 28), 10),
        "unknown architecture 'small-cn'; did you mean 'small-cnn'",
    ),
    "get_detector": (lambda: get_detector("spectrl"), "did you mean 'spectral'"),
    "build_detector": (lambda: build_detector("mahalanobi", None), "did you mean 'mahalanobis'"),
}


@pytest.mark.parametrize("which", sorted(LOOKUPS))
def test_public_lookups_raise_unknown_name(which: str) -> None:
    call, message = LOOKUPS[which]
    with pytest.raises(UnknownName, match=message):
        call()


def test_zoo_entry_variants_and_case() -> None:
    entry = zoo_entry(" MNIST-CNN ")
    assert entry.name == "mnist-cnn"
    cheap = ZOO_ENTRIES.get("mnist-cnn", epochs=1)
    assert cheap.epochs == 1 and cheap.fingerprint != entry.fingerprint
    with pytest.raises(BadInput, match="mnist-cnn"):
        ZOO_ENTRIES.get("mnist-cnn", epoch=1)


def test_architectures_build_for_their_inputs() -> None:
    for name in ARCHS.list():
        shape = (1, 28, 28) if "cnn" in name else (30,) if "mlp" in name else (3, 32, 32)
        assert build_arch(name, shape, 3).eval()(torch.zeros(2, *shape)).shape == (2, 3)
