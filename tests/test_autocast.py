"""Attacks searching in reduced precision (`Model(autocast=...)`, `--autocast`): the search
runs under torch.autocast, the harness's verification in the model's own precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adversa import Model, ThreatModel, get_attack
from adversa.errors import BadInput
from tests.conftest import digits_split, train_digits_mlp


class DtypeProbe(nn.Module):
    """Records the dtype of the first layer's output on every pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.net[0](x)
        self.seen.append(hidden.dtype)
        return self.net[2](self.net[1](hidden))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_search_in_reduced_precision_verification_in_full(precision):
    _, _, x, y = digits_split()
    probe = DtypeProbe(train_digits_mlp(0))
    model = Model(probe, num_classes=10, autocast=precision)
    assert model.predict(x).dtype == torch.long and probe.seen[-1] == torch.float32
    probe.seen.clear()
    threat = ThreatModel(norm="linf", eps=0.1)
    result = get_attack("pgd", threat, steps=10)(model, x, y)
    # every pass of the search in reduced precision, the last one (verification) in float32
    assert set(probe.seen[:-1]) == {getattr(torch, precision)}
    assert probe.seen[-1] == torch.float32
    with torch.no_grad():
        full = probe.net(result.x_adv).argmax(1)
    assert torch.equal(result.pred, full)
    assert torch.equal(result.success, full != y)
    # the search finds about as many points as in full precision
    plain = get_attack("pgd", threat, steps=10)(Model(probe.net, num_classes=10), x, y)
    assert abs(result.success_rate - plain.success_rate) <= 0.05
    assert result.success_rate >= 0.5


def test_autocast_names_are_checked():
    net = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(BadInput, match="--autocast 'int8': expected one of bfloat16, float16"):
        Model(net, autocast="int8")


def test_evaluate_autocast_on_the_command_line(tmp_path, capsys):
    """`evaluate --autocast` records the precision; a float16 search finds about what a
    float32 one does, a bfloat16 search somewhat less (the verification is in float32)."""
    import json

    import numpy as np

    from adversa.cli.main import main

    _, _, x, y = digits_split()
    np.savez(tmp_path / "d.npz", x=x[:200].reshape(-1, 1, 8, 8).numpy(), y=y[:200].numpy())
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n\ndef make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))\n"
    )
    net = nn.Sequential(nn.Flatten(), *train_digits_mlp(0))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    robust = {}
    for precision in (None, "bfloat16", "float16"):
        out = tmp_path / f"run-{precision}"
        argv = ["evaluate", "--model", f"{tmp_path / 'net.py'}:make", "--weights"]
        argv += [str(tmp_path / "w.pt"), "--data", str(tmp_path / "d.npz"), "--norm", "linf"]
        argv += ["--eps", "0.1", "--attacks", "pgd", "--out", str(out)]
        argv += ["--autocast", precision] if precision else []
        assert main(argv) == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert report["config"]["autocast"] == precision
        robust[precision] = report["robust_accuracy"]
    # measured: 23% in float32, 24% with a float16 search, 32% with bfloat16 (7 mantissa bits:
    # noisier gradients, a weaker search; the verification keeps the numbers honest)
    assert abs(robust["float16"] - robust[None]) <= 0.05
    assert robust["bfloat16"] < 0.5 and abs(robust["bfloat16"] - robust[None]) <= 0.15
    bad = ["evaluate", "--model", "m", "--data", "d", "--norm", "linf", "--eps", "0.1"]
    assert main([*bad, "--autocast", "int8", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or "--autocast" in err[-1]
    assert "--autocast" in err[-1] and "int8" in err[-1]
