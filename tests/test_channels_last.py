"""`Model(channels_last=True)` and `evaluate --channels-last`: the convolutions run in the
channels-last memory layout, with the same logits, gradients and attack results as in the
default layout, and nothing in that layout leaves the model."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from torch import nn

from adversa import Model, ThreatModel, get_attack
from adversa.cli.main import main
from adversa.errors import BadInput
from adversa.load import load_model
from tests.conftest import digits_split, refused

CNN_SOURCE = """import torch
from torch import nn


def make():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 10),
    )
"""


def make_cnn() -> nn.Module:
    namespace: dict = {}
    exec(CNN_SOURCE, namespace)  # the same network the command-line test loads from a file
    return namespace["make"]()


@functools.cache
def trained_state() -> dict[str, torch.Tensor]:
    """The small CNN trained full-batch for 150 Adam steps on the digits (about a second)."""
    x_train, y_train, _, _ = digits_split()
    x_train = x_train.reshape(-1, 1, 8, 8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = make_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x_train), y_train).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def small_cnn() -> nn.Module:
    net = make_cnn()
    net.load_state_dict(trained_state())
    return net.eval()


def digits_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = digits_split()
    return x[:n].reshape(-1, 1, 8, 8), y[:n]


def test_same_logits_and_gradients_in_the_callers_layout():
    net = small_cnn()
    x, y = digits_images(64)
    plain = Model(small_cnn(), num_classes=10)
    weights = [p for p in net.parameters()]
    fast = Model(net, num_classes=10, channels_last=True)
    # the parameters stay the same objects, now in channels-last layout
    assert [p for p in net.parameters()] == weights
    assert net[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net[3].weight.is_contiguous()
    grads = []
    for model in (plain, fast):
        x_in = x.clone().requires_grad_(True)
        logits = model(x_in)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), x_in)
        grads.append((logits.detach(), grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-4)
    assert grads[1][1].is_contiguous()  # the caller's layout, not NHWC


def test_attacks_find_the_same_points():
    x, y = digits_images(200)
    plain = Model(small_cnn(), num_classes=10)
    fast = Model(small_cnn(), num_classes=10, channels_last=True)
    threat = ThreatModel(norm="linf", eps=0.05)
    results = [get_attack("pgd", threat, steps=10, seed=0)(m, x, y) for m in (plain, fast)]
    assert results[1].x_adv.is_contiguous()
    assert results[0].cost.forward == results[1].cost.forward
    # float sums in another order may flip a tied gradient sign; the outcomes agree
    assert 0.2 <= results[0].success_rate <= 0.9
    assert abs(results[0].success_rate - results[1].success_rate) <= 0.02
    assert (results[0].x_adv - results[1].x_adv).abs().max() <= 0.05 + 1e-6


class ViewsConvOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_a_forward_that_needs_the_default_layout_is_named():
    x, _ = digits_images(4)
    assert Model(ViewsConvOutput())(x).shape == (4, 10)
    with pytest.raises(BadInput, match=r"--channels-last: model 'model' raised .*view"):
        Model(ViewsConvOutput(), channels_last=True)(x)
    # an error of another kind is the model's own, and passes through unchanged
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        wrong_width = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(5, 10))
        Model(wrong_width, channels_last=True)(x)
    with pytest.raises(BadInput, match="channels_last must be True or False, got 'yes'"):
        Model(ViewsConvOutput(), channels_last="yes")


def test_query_only_models_refuse_the_layout():
    with pytest.raises(BadInput, match="--channels-last: applies to PyTorch models, not sklearn"):
        load_model("sklearn:m.joblib", channels_last=True)


def test_evaluate_channels_last_on_the_command_line(tmp_path, capsys):
    """The report records the layout, and its robust accuracy is the default layout's."""
    x, y = digits_images(150)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    (tmp_path / "net.py").write_text(CNN_SOURCE)
    torch.save(trained_state(), tmp_path / "w.pt")
    robust = {}
    for flag in (False, True):
        out = tmp_path / f"run-{flag}"
        argv = ["evaluate", "--model", f"{tmp_path / 'net.py'}:make", "--weights"]
        argv += [str(tmp_path / "w.pt"), "--data", str(tmp_path / "d.npz"), "--norm", "linf"]
        argv += ["--eps", "0.05", "--attacks", "fgsm,pgd", "--out", str(out)]
        argv += ["--channels-last"] if flag else []
        assert main(argv) == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert report["config"]["channels_last"] is flag
        robust[flag] = report["robust_accuracy"]
    assert 0.05 <= robust[False] <= 0.8
    assert abs(robust[True] - robust[False]) <= 0.02


def test_evaluate_names_the_flag_when_the_model_needs_the_default_layout(tmp_path, capsys):
    """Colour images: the normalisation check's passes go through the model's layout too, so
    a `.view` model stops with the one-line error, not an internal error."""
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n\nclass V(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.c = nn.Conv2d(3, 4, 3)\n        self.f = nn.Linear(4 * 6 * 6, 10)\n\n"
        "    def forward(self, x):\n        return self.f(self.c(x).view(x.shape[0], -1))\n\n\n"
        "def make():\n    return V()\n"
    )
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=np.arange(8) % 10)
    argv = ["evaluate", "--model", f"{tmp_path / 'net.py'}:make", "--data"]
    argv += [str(tmp_path / "d.npz"), "--norm", "linf", "--eps", "0.05", "--attacks", "fgsm"]
    argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 0, capsys.readouterr().err  # the default layout runs
    capsys.readouterr()
    refused([*argv, "--channels-last"], capsys, r"--channels-last: model .* raised .*view")
