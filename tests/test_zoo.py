"""The model zoo: catalogue, architectures, seeded training, the cache, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest
import torch

from adversa import Model, ThreatModel, get_attack
from adversa.data import load_data
from adversa.errors import BadInput, UnknownName
from adversa.io import atomic_open, atomic_torch_save, atomic_write_bytes, atomic_write_text
from adversa.nets import MLP, SmallCNN, build_arch
from adversa.zoo import (
    ZooEntry,
    cache,
    list_models,
    load_zoo_entry,
    read_card,
    train_zoo_entry,
    zoo_entry,
    zoo_paths,
)


def _tiny(name: str = "mnist-cnn-pgd", **changes: object) -> ZooEntry:
    """A reduced recipe that trains in about a second."""
    base = {"epochs": 1, "train_size": 256, "batch_size": 64}
    if zoo_entry(name).defense == "pgd-at":
        base["pgd_steps"] = 3
    return dataclasses.replace(zoo_entry(name), **{**base, **changes})


# ---------------------------------------------------------------- catalogue and architectures


def test_catalogue() -> None:
    names = list_models()
    assert {"mnist-cnn", "mnist-cnn-pgd", "mnist-cnn-trades", "breast-cancer-mlp"} <= set(names)
    for name in names:
        entry = zoo_entry(name)
        assert entry.name == name and entry.description
        assert load_data(entry.data, split="test").num_classes >= 2
    pgd = zoo_entry("mnist-cnn-pgd")
    assert pgd.defense == "pgd-at" and pgd.eps == 0.3
    trades = zoo_entry("mnist-cnn-trades")
    assert trades.defense == "trades" and trades.beta == 6.0 and trades.epochs == pgd.epochs
    config = trades.train_config()  # zoo entries are TrainConfigs trained by the one loop
    assert config.defense.name == "trades" and config.defense.beta == 6.0
    assert config.defense.threat.eps == 0.3 and config.defense.steps == 7 and config.epochs == 40


def test_unknown_model_suggests() -> None:
    with pytest.raises(UnknownName, match="did you mean 'mnist-cnn"):
        zoo_entry("mnist-cn")


def test_entry_validation() -> None:
    with pytest.raises(BadInput, match="defense must be one of"):
        dataclasses.replace(zoo_entry("mnist-cnn"), defense="magic")
    with pytest.raises(BadInput, match="pgd-at needs 0 < eps"):
        dataclasses.replace(zoo_entry("mnist-cnn-pgd"), eps=0.0)


def test_fingerprint_tracks_the_recipe_only() -> None:
    entry = zoo_entry("mnist-cnn")
    assert entry.fingerprint == dataclasses.replace(entry, description="other").fingerprint
    assert entry.fingerprint != dataclasses.replace(entry, epochs=1).fingerprint


def test_architectures() -> None:
    x = torch.rand(3, 1, 28, 28)
    assert SmallCNN(1, 10)(x).shape == (3, 10)
    assert build_arch("wide-cnn", (1, 28, 28), 10)(x).shape == (3, 10)
    assert MLP(30, (8,), 2)(torch.rand(4, 30)).shape == (4, 2)
    assert build_arch("mlp", (1, 8, 8), 10)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    # plain Sequential of Conv2d / Linear / ReLU / Flatten, as bound propagation expects
    kinds = {type(m) for m in SmallCNN()}
    assert kinds <= {torch.nn.Conv2d, torch.nn.ReLU, torch.nn.Flatten, torch.nn.Linear}
    with pytest.raises(UnknownName, match="architecture"):
        build_arch("resnet-9000", (1, 28, 28), 10)
    with pytest.raises(BadInput, match="divisible by 4"):
        SmallCNN(input_size=30)


# ---------------------------------------------------------------- training and the cache


def test_training_is_seeded_and_leaves_global_rng_alone() -> None:
    entry = _tiny(epochs=1, train_size=128)
    rng_before = torch.get_rng_state()
    a, card = train_zoo_entry(entry)
    b, _ = train_zoo_entry(entry)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert card["train_size"] == 128 and card["test_size"] == 1000
    assert 0.0 <= card["clean_accuracy"] <= 1.0 and not a.training


def test_reduced_pgd_training_is_cached_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _tiny()
    calls: list[tuple[str, int, int]] = []
    module = load_zoo_entry(entry, cache_dir=tmp_path, progress=lambda *a: calls.append(a))
    assert calls and calls[-1][1] == calls[-1][2] == 4  # 256 samples / 64 per step
    assert calls[0][0] == "training mnist-cnn-pgd"

    weights, card_path = zoo_paths(entry, tmp_path)
    files = sorted(p.name for p in weights.parent.iterdir())
    assert files == sorted([weights.name, card_path.name, weights.with_suffix(".lock").name])
    card = json.loads(card_path.read_text())
    assert card == read_card(entry, tmp_path)
    assert card["fingerprint"] == entry.fingerprint and card["entry"]["defense"] == "pgd-at"
    assert card["versions"]["torch"] == torch.__version__
    assert card["train_seconds"] > 0 and "weights_sha256" in card

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached model was retrained")

    monkeypatch.setattr(cache, "train_zoo_entry", no_training)
    again = load_zoo_entry(entry, cache_dir=tmp_path, progress=lambda *a: calls.append(a))
    assert len(calls) == 4 and not again.training
    for va, vb in zip(module.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(va, vb)


def test_pgd_adversarial_training_buys_robustness() -> None:
    """A reduced mnist-cnn-pgd recipe (1,000 digits, 6 epochs, a few seconds) must resist
    PGD at eps 0.2 far better than the same recipe without the adversary (Madry et al.)."""
    test = load_data("mnist").take(200)
    threat = ThreatModel(norm="linf", eps=0.2)
    robust = {}
    for name in ("mnist-cnn", "mnist-cnn-pgd"):
        entry = dataclasses.replace(zoo_entry(name), epochs=6, train_size=1000)
        module, card = train_zoo_entry(entry)
        # the adversary runs every step on every point (no early stop), which costs the
        # adversarially trained model a few points of clean accuracy at this tiny budget
        assert card["clean_accuracy"] > (0.8 if name == "mnist-cnn" else 0.75)
        result = get_attack("pgd", threat, steps=20)(Model(module, num_classes=10), test.x, test.y)
        robust[name] = 1 - float(result.success.float().mean())
    assert robust["mnist-cnn"] < 0.1
    assert robust["mnist-cnn-pgd"] > 0.3


def test_corrupt_cache_is_retrained(tmp_path: Path) -> None:
    entry = _tiny("breast-cancer-mlp", train_size=None, epochs=2)
    load_zoo_entry(entry, cache_dir=tmp_path)
    weights, _ = zoo_paths(entry, tmp_path)
    weights.write_bytes(b"garbage")
    module = load_zoo_entry(entry, cache_dir=tmp_path)
    assert module(torch.rand(2, 30)).shape == (2, 2)
    assert read_card(entry, tmp_path)["weights_sha256"] == cache._sha256(weights)


def test_unwritable_cache_still_returns_a_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    entry = _tiny("breast-cancer-mlp", train_size=None, epochs=1)
    with caplog.at_level(logging.WARNING, logger="adversa.zoo.cache"):
        module = load_zoo_entry(entry, cache_dir=blocker / "cache")
    assert "not writable" in caplog.text
    assert module(torch.rand(2, 30)).shape == (2, 2)


def test_env_var_sets_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVERSA_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ADVERSA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "adversa"


def test_mnist_cnn_fixture(mnist_cnn: tuple[Model, object]) -> None:
    """The session's full "mnist-cnn": the default model most tests attack."""
    model, test = mnist_cnn
    clean = float((model.predict(test.x) == test.y).float().mean())
    assert clean >= 0.95
    assert read_card("mnist-cnn")["clean_accuracy"] == pytest.approx(clean, abs=1e-6)
    x, y = test.x[:64], test.y[:64]
    result = get_attack("pgd", ThreatModel(norm="linf", eps=0.3), steps=10)(model, x, y)
    assert result.success.float().mean() > 0.9  # an undefended model falls at eps 0.3


# ---------------------------------------------------------------- atomic writes


def test_atomic_writes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    atomic_write_bytes(target, b"[1]")
    assert target.read_bytes() == b"[1]"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0o600
    state = {"w": torch.arange(3)}
    atomic_torch_save(state, tmp_path / "s.pt")
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], state["w"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["report.json", "s.pt", "sub"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
