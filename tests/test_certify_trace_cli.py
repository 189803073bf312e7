"""`adversa certify` and `evaluate --certify` on a model written the usual way (functional
calls, max pooling, a view inside forward), loaded from a `.py` factory or a TorchScript
archive: verified accuracy beside robust accuracy with no certified point broken, and
unsupported operations refused with exit 2 and one line naming them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import digits_split

from adversa.cli.main import main

NET = """
import torch
import torch.nn.functional as F
from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)
        self.act = act

    def forward(self, x):
        x = x.view(-1, 1, 8, 8)
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = self.fc1(x.flatten(1))
        if self.act == "softmax":  # unsupported
            x = torch.softmax(x, 1)
        else:
            x = F.gelu(x, approximate="tanh") if self.act == "gelu" else torch.relu(x)
        return self.fc2(x)


def make():
    return DigitsCNN()


def make_gelu():
    return DigitsCNN("gelu")


def make_softmax():
    return DigitsCNN("softmax")
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The factory file, weights trained for 80 Adam steps (about 2 s) and 60 test digits."""
    root = tmp_path_factory.mktemp("certify-trace")
    (root / "net.py").write_text(NET)
    namespace: dict = {}
    exec(compile(NET, "net.py", "exec"), namespace)  # the same class the CLI will load
    x_train, y_train, x_test, y_test = digits_split()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = namespace["make"]()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(80):
        loss = F.cross_entropy(net(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), root / "weights.pt")
    np.savez(root / "digits.npz", x=x_test[:60].numpy(), y=y_test[:60].numpy())
    return root


def _model(root, factory="make"):
    return ["--model", f"{root / 'net.py'}:{factory}", "--weights", str(root / "weights.pt")]


def test_cli_certifies_a_functional_cnn_with_max_pooling(files, tmp_path, capsys):
    argv = [
        "certify", *_model(files), "--data", str(files / "digits.npz"), "--method", "crown",
        "--eps", "0.005,0.02", "--attack-check", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "certify.json").read_text())
    assert data["consistent"] is True and data["n"] == 60
    for entry in data["results"]:
        assert entry["verified_accuracy"] <= entry["empirical_robust_accuracy"]
        assert entry["violations"] == []
    assert data["results"][0]["verified_accuracy"] > 0.5
    assert data["results"][0]["verified_accuracy"] >= data["results"][1]["verified_accuracy"]
    argv[argv.index("crown")] = "alpha-crown"
    argv[argv.index("0.005,0.02")] = "0.02"
    argv[-1] = str(tmp_path / "alpha")
    assert main(argv) == 0, capsys.readouterr().err
    alpha = json.loads((tmp_path / "alpha" / "certify.json").read_text())
    assert alpha["method"] == "alpha-crown" and alpha["consistent"] is True
    (entry,) = alpha["results"]
    assert (
        entry["violations"] == []
        and entry["verified_accuracy"] <= entry["empirical_robust_accuracy"]
    )
    assert entry["verified_accuracy"] >= data["results"][1]["verified_accuracy"]


def test_cli_evaluate_certify_on_a_functional_cnn(files, tmp_path, capsys):
    argv = [
        "evaluate", *_model(files), "--data", str(files / "digits.npz"), "--norm", "linf",
        "--eps", "0.005,0.02", "--attacks", "pgd", "--certify", "crown", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    entries = report["certified"]
    assert [e["eps"] for e in entries] == [0.005, 0.02]
    for entry, result in zip(entries, report["results"], strict=True):
        assert entry["certified_accuracy"] <= result["robust_accuracy"]
        assert entry["certified_but_broken"] == 0
    assert entries[0]["certified_accuracy"] > 0.5
    assert not any(w.startswith("BUG") for w in report["warnings"])


def test_cli_certifies_a_network_with_gelu(files, tmp_path, capsys):
    """The same weights with GELU (tanh form) in place of the hidden ReLU: certified by CROWN
    and alpha-CROWN, no certified point broken by the attack check."""
    argv = [
        "certify", *_model(files, "make_gelu"), "--data", str(files / "digits.npz"),
        "--method", "crown", "--eps", "0.005,0.02", "--attack-check", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "certify.json").read_text())
    assert data["consistent"] is True and data["n"] == 60
    for entry in data["results"]:
        assert entry["violations"] == []
        assert entry["verified_accuracy"] <= entry["empirical_robust_accuracy"]
    assert data["results"][0]["verified_accuracy"] > 0.5
    argv[argv.index("crown")], argv[-1] = "alpha-crown", str(tmp_path / "alpha")
    assert main(argv) == 0, capsys.readouterr().err
    alpha = json.loads((tmp_path / "alpha" / "certify.json").read_text())
    for entry, crown in zip(alpha["results"], data["results"], strict=True):
        assert entry["violations"] == []
        assert entry["verified_accuracy"] >= crown["verified_accuracy"]


def test_cli_refuses_unsupported_operations_with_exit_2(files, tmp_path, capsys):
    base = ["--data", str(files / "digits.npz"), "--method", "crown", "--eps", "0.01"]
    assert main(["certify", *_model(files, "make_softmax"), *base, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unsupported operation" in err and "softmax at node 'softmax' (net.py:" in err


def test_cli_certifies_a_torchscript_archive_as_its_python_model(files, tmp_path, capsys):
    namespace: dict = {}
    exec(compile(NET, "net.py", "exec"), namespace)
    net = namespace["make"]()
    net.load_state_dict(torch.load(files / "weights.pt"))
    scripted = tmp_path / "net.ts"
    torch.jit.save(torch.jit.trace(net.eval(), torch.rand(2, 64)), scripted)
    reports = {}
    for name, model in (("ts", ["--model", str(scripted)]), ("py", _model(files))):
        argv = [
            "certify", *model, "--data", str(files / "digits.npz"), "--method", "crown",
            "--eps", "0.01", "--out", str(tmp_path / name),
        ]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        reports[name] = json.loads((tmp_path / name / "certify.json").read_text())
    ts, py = (reports[k]["results"][0] for k in ("ts", "py"))
    assert ts["verified_accuracy"] == py["verified_accuracy"] > 0.5
