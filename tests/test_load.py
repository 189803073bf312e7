"""Loading models: zoo names, TorchScript, torch.export (.pt2), file.py:factory + weights."""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from adversa import Model, ThreatModel, get_attack
from adversa.errors import BadInput, ModelLoadError, UnknownName
from adversa.load import load_model

FACTORY_SOURCE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def make():
    return Net()


def broken():
    raise RuntimeError("factory exploded")


def not_a_module():
    return 42
"""


def _net() -> nn.Module:
    """A tiny CNN on (1, 8, 8) inputs, with the same layout as FACTORY_SOURCE's Net."""
    gen = torch.Generator().manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4 * 8 * 8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).flatten(1))

    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


@pytest.fixture
def net() -> nn.Module:
    return _net()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "mynet.py"
    path.write_text(FACTORY_SOURCE)
    return path


def _same_outputs(model: Model, net: nn.Module, x: torch.Tensor) -> None:
    assert isinstance(model, Model)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)


# ---------------------------------------------------------------- formats


def test_zoo_name(adversa_cache: str) -> None:
    model = load_model("breast-cancer-mlp")
    assert model.name == "breast-cancer-mlp" and not model.module.training
    assert model(torch.rand(3, 30)).shape == (3, 2)


def test_torchscript(tmp_path: Path, net: nn.Module, x: torch.Tensor) -> None:
    path = tmp_path / "net.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(path))
    model = load_model(str(path), num_classes=10)
    assert model.name == "net.ts" and model.num_classes == 10
    _same_outputs(model, net, x)


def test_torch_export_with_dynamic_batch(tmp_path: Path, net: nn.Module, x: torch.Tensor) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (x[:2],), dynamic_shapes=({0: batch},))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    with pytest.raises(
        BadInput, match=r"net\.pt2: it is a torch\.export archive.*--trust-model-file"
    ):
        load_model(str(path))  # torch.export.load unpickles: refused without trust
    model = load_model(str(path), trust_model_file=True)
    for n in (1, 3, 5):
        _same_outputs(model, net, x[:n])
    with model.eval_mode(), model.frozen():  # exported graphs reject .train()/.eval() by default
        pass
    result = get_attack("fgsm", ThreatModel(norm="linf", eps=0.1))(model, x, net(x).argmax(1))
    assert result.cost.backward > 0


def test_factory_with_pt_weights(
    tmp_path: Path, factory_file: Path, net: nn.Module, x: torch.Tensor
) -> None:
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    model = load_model(f"{factory_file}:make", weights=str(weights))
    assert model.name == "mynet.py:make"
    _same_outputs(model, net, x)


def test_factory_with_safetensors(
    tmp_path: Path, factory_file: Path, net: nn.Module, x: torch.Tensor
) -> None:
    weights = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(weights))
    _same_outputs(load_model(f"{factory_file}:make", weights=str(weights)), net, x)


def test_factory_checkpoint_dict_and_ddp_prefix(
    tmp_path: Path, factory_file: Path, net: nn.Module, x: torch.Tensor
) -> None:
    weights = tmp_path / "ckpt.pt"
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, weights)
    _same_outputs(load_model(f"{factory_file}:make", weights=str(weights)), net, x)


def test_factory_without_weights_warns(
    factory_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="adversa.load"):
        model = load_model(f"{factory_file}:make")
    assert "no weights given" in caplog.text
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


# ---------------------------------------------------------------- failures


def test_unknown_name_suggests() -> None:
    with pytest.raises(UnknownName, match="did you mean 'mnist-cnn'"):
        load_model("mnist-cnm")


@pytest.mark.parametrize("spec", ["models/missing.pt", "missing.pt2", "~/nothing/here.ts"])
def test_missing_file(spec: str) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(spec)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(str(tmp_path))


def test_not_torchscript(tmp_path: Path, net: nn.Module) -> None:
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"hello")
    with pytest.raises(ModelLoadError, match=r"junk\.ts: not a TorchScript archive.*accepted: "):
        load_model(str(junk))
    state = tmp_path / "state.pt"
    torch.save(net.state_dict(), state)
    with pytest.raises(ModelLoadError, match=r"state\.pt: .*torch\.save checkpoint.*--weights"):
        load_model(str(state))


def test_not_an_export_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"hello")  # the suffix does not make it an archive: its content decides
    with pytest.raises(ModelLoadError, match=r"junk\.pt2: not a TorchScript archive.*\.pt2"):
        load_model(str(junk), trust_model_file=True)
    fake = tmp_path / "fake.pt2"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("fake/archive_format", "pt2")
    with pytest.raises(ModelLoadError, match=r"fake\.pt2: not a torch\.export archive"):
        load_model(str(fake), trust_model_file=True)


def test_factory_failures(tmp_path: Path, factory_file: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no factory 'nope' in file; .*broken, make"):
        load_model(f"{factory_file}:nope")
    with pytest.raises(ModelLoadError, match=r"broken\(\) raised RuntimeError: factory exploded"):
        load_model(f"{factory_file}:broken")
    with pytest.raises(ModelLoadError, match=r"must return a torch\.nn\.Module, got int"):
        load_model(f"{factory_file}:not_a_module")
    with pytest.raises(ModelLoadError, match=r"mynet\.py: a Python file needs the factory"):
        load_model(str(factory_file))
    with pytest.raises(ModelLoadError, match=r"absent\.py: no such file"):
        load_model(f"{tmp_path / 'absent.py'}:make")
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(ModelLoadError, match=r"bad\.py: importing it failed: ModuleNotFoundError"):
        load_model(f"{bad}:make")


def test_weights_failures(tmp_path: Path, factory_file: Path, net: nn.Module) -> None:
    spec = f"{factory_file}:make"
    with pytest.raises(ModelLoadError, match="weights file not found"):
        load_model(spec, weights=str(tmp_path / "none.pt"))

    partial = tmp_path / "partial.pt"
    state = net.state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("head")}, partial)
    with pytest.raises(ModelLoadError, match=r"missing keys: head\.bias, head\.weight"):
        load_model(spec, weights=str(partial))

    extra = tmp_path / "extra.pt"
    torch.save({**state, "fc9.weight": torch.zeros(1)}, extra)
    with pytest.raises(ModelLoadError, match=r"unexpected keys: fc9\.weight"):
        load_model(spec, weights=str(extra))

    wrong = tmp_path / "wrong.pt"
    torch.save({**state, "head.bias": torch.zeros(7)}, wrong)
    with pytest.raises(ModelLoadError, match=r"size mismatch for head\.bias"):
        load_model(spec, weights=str(wrong))

    pickled = tmp_path / "pickled.pt"
    torch.save({"net": _PickledThing()}, pickled)
    with pytest.raises(ModelLoadError, match=r"pickled\.pt: refused: .*other than tensors"):
        load_model(spec, weights=str(pickled))

    not_state = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_state)
    with pytest.raises(ModelLoadError, match="does not hold a state_dict"):
        load_model(spec, weights=str(not_state))


class _PickledThing:
    """An arbitrary object: loading it would need full unpickling, which load_model refuses."""


@pytest.mark.parametrize("spec", ["hf:some/dir", "builtin:minilm"])
def test_text_models_are_pointed_to_text_attack(spec: str) -> None:
    with pytest.raises(BadInput, match="adversa text-attack"):
        load_model(spec)
