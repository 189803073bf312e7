"""IBP and CROWN bounds: soundness under sampling and PGD (random and trained networks, Linf
and L2, MLPs and CNNs with BatchNorm, AvgPool and a residual block), exactness where the
bounds must be exact, CROWN tighter than IBP, bad inputs, and the attack consistency check.

Measured on the digits MLP of conftest (64-64-10, 150 full-batch Adam steps; the 397 test
points): mean width of the logit bounds at Linf eps 0.02 is 8.96 (IBP) vs 2.83 (CROWN), a
CROWN/IBP ratio of 0.32; at L2 eps 0.1, 9.22 vs 3.26 (0.35). Verified accuracy at Linf eps
0.02: IBP 72.8%, CROWN 91.4%; at L2 eps 0.1: 71.5% vs 90.9%. On the random networks below,
PGD on each logit reaches to within 8-27% of CROWN's bound width (IBP: 47-49%).
"""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import digits_split
from torch import nn

from adversa import ThreatModel
from adversa.certify import (
    Residual,
    bounds,
    certify_and_attack,
    margin_bounds,
    run_certification,
    verified,
)
from adversa.certify.graph import build_graph
from adversa.certify.layers import conv
from adversa.cli.main import main
from adversa.errors import BadInput
from adversa.nets import SmallCNN

METHODS = ("ibp", "crown-ibp", "crown")
THREATS = {"linf": ThreatModel(norm="linf", eps=0.05), "l2": ThreatModel(norm="l2", eps=0.3)}


def _random_bn(net: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            size = m.running_mean.shape
            m.running_mean.copy_(torch.rand(size, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(size, generator=gen) + 0.5)
            m.weight.data.copy_(2 * torch.rand(size, generator=gen) - 1)
            m.bias.data.copy_(torch.rand(size, generator=gen) - 0.5)
    return net.eval()


def _nets() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.BatchNorm1d(32),
            nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10),
        )  # fmt: skip
        cnn = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
            nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding="valid"), nn.ReLU()),
            Residual(nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU(), nn.Conv2d(8, 8, 1)),
            nn.ReLU(), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10),
        )  # fmt: skip
        small = SmallCNN(1, 10, channels=(4, 8), hidden=16, input_size=8)  # the zoo's layout
    return {
        "mlp": (_random_bn(mlp), (64,)),
        "cnn": (_random_bn(cnn), (1, 8, 8)),
        "small-cnn": (small.eval(), (1, 8, 8)),
    }


NETS = _nets()


@pytest.fixture(scope="module")
def digits():
    _, _, x, y = digits_split()
    return x, y


def _points(shape: tuple[int, ...], n: int = 6) -> torch.Tensor:
    _, _, x, _ = digits_split()
    return x[:n].reshape(n, *shape)


def _samples(x: torch.Tensor, threat: ThreatModel, k: int, seed: int = 0) -> torch.Tensor:
    """k points per input drawn in the ball and box: uniform, plus Linf corners."""
    gen = torch.Generator().manual_seed(seed)
    rep = x.repeat(k, *[1] * (x.dim() - 1))
    inside = threat.random_start(rep, gen)
    if threat.norm == "linf":
        signs = torch.randint(0, 2, rep.shape, generator=gen) * 2 - 1
        corners = threat.clip(rep + threat.eps * signs)
        inside = torch.where(
            torch.arange(len(rep)).view(-1, *[1] * (x.dim() - 1)) % 2 == 0, inside, corners
        )
    assert bool(threat.contains(inside, rep).all())
    return inside


def _pgd_extremes(
    net: nn.Module, x: torch.Tensor, threat: ThreatModel, steps: int = 40
) -> torch.Tensor:
    """Logits at points found by PGD maximising and minimising each logit: (2K, B, K)."""
    classes = net(x[:1]).shape[1]
    objectives = torch.cat([torch.eye(classes), -torch.eye(classes)])  # (2K, K)
    rep = x.repeat(2 * classes, *[1] * (x.dim() - 1))
    weights = objectives.repeat_interleave(x.shape[0], 0)
    adv = threat.random_start(rep, torch.Generator().manual_seed(1))
    step = 2.5 * threat.eps / steps
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad((net(adv) * weights).sum(), adv)
        if threat.norm == "linf":
            move = grad.sign()
        else:
            move = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(
                -1, *[1] * (x.dim() - 1)
            )
        adv = threat.project(adv.detach() + step * move, rep)
    with torch.no_grad():
        return net(adv).view(2 * classes, x.shape[0], classes)


@pytest.mark.parametrize("name", NETS)
def test_graph_reproduces_the_module(name):
    net, shape = NETS[name]
    x = _points(shape)
    graph = build_graph(net, x)
    with torch.no_grad():
        assert torch.allclose(graph.forward(x)[-1], net(x), atol=1e-5)


@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("name", NETS)
def test_bounds_hold_under_sampling_and_pgd(name, norm):
    """3,000 points per input (uniform, corners) and PGD on every logit stay inside."""
    net, shape = NETS[name]
    threat = THREATS[norm]
    x = _points(shape)
    with torch.no_grad():
        sampled = net(_samples(x, threat, 500)).view(500, len(x), -1)
    attacked = _pgd_extremes(net, x, threat)
    for method in METHODS:
        lower, upper = bounds(net, x, threat, method)
        for z in (sampled, attacked):
            assert bool((z >= lower - 1e-5).all()), (method, float((lower - z).max()))
            assert bool((z <= upper + 1e-5).all()), (method, float((z - upper).max()))
        # The attacks get close to CROWN's bounds: the bounds are not vacuous either.
        if method == "crown":
            gap = (upper - attacked.amax(0)).mean() / (upper - lower).mean()
            assert gap < 0.4  # measured 0.08-0.27


@pytest.mark.parametrize("norm", THREATS)
def test_margin_bounds_hold_on_a_trained_net(digits_mlp, norm):
    model, x, y = digits_mlp
    threat = THREATS[norm].with_eps(THREATS[norm].eps / 2)
    x, y = x[:40], y[:40]
    with torch.no_grad():
        z = model.module(_samples(x, threat, 100)).view(100, 40, 10)
    true_margin = z.gather(2, y.view(1, -1, 1).expand(100, -1, 1)) - z  # (k, B, K)
    attacked = _pgd_extremes(model.module, x, threat)
    for method in METHODS:
        lower, upper = bounds(model, x, threat, method)
        assert bool((attacked >= lower - 1e-5).all() & (attacked <= upper + 1e-5).all())
        margin = margin_bounds(model, x, y, threat, method)
        assert bool((true_margin >= margin - 1e-5).all())
        assert torch.all(margin.gather(1, y[:, None]) == 0)
        # With the specification matrix the margin bound beats subtracting logit bounds.
        naive = lower.gather(1, y[:, None]) - upper
        assert bool((margin >= naive - 1e-5).all())


def test_crown_is_tighter_than_ibp_on_a_trained_net(digits_mlp):
    model, x, y = digits_mlp
    widths = {}
    for norm, eps in (("linf", 0.02), ("l2", 0.1)):
        threat = ThreatModel(norm=norm, eps=eps)
        for method in ("ibp", "crown"):
            with torch.no_grad():
                lower, upper = bounds(model, x, threat, method)
            widths[norm, method] = float((upper - lower).mean())
        ratio = widths[norm, "crown"] / widths[norm, "ibp"]
        assert ratio < 0.5, (norm, widths)  # measured: 0.32 (linf 0.02), 0.35 (l2 0.1)
    threat = ThreatModel(norm="linf", eps=0.02)
    ibp, crown = (float(verified(model, x, y, threat, m).float().mean()) for m in ("ibp", "crown"))
    assert crown >= ibp + 0.1  # measured: 91.4% vs 72.8%


def test_crown_is_exact_without_relus_and_zero_eps_gives_the_logits():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.Linear(20, 5))
    x = torch.full((3, 64), 0.5)
    threat = ThreatModel(norm="linf", eps=0.1)
    w = net[2].weight @ net[1].weight
    centre = net(x).detach()
    exact = 0.1 * w.abs().sum(1)
    lower, upper = bounds(net, x, threat, "crown")
    assert torch.allclose(lower, centre - exact, atol=1e-5)
    assert torch.allclose(upper, centre + exact, atol=1e-5)
    net2, shape = NETS["cnn"]
    x2 = _points(shape)
    for method in METHODS:
        lo, hi = bounds(net2, x2, threat.with_eps(0.0), method)
        assert torch.allclose(lo, net2(x2), atol=1e-5) and torch.allclose(hi, net2(x2), atol=1e-5)


def _conv_chain(name: str) -> tuple[nn.Module, torch.Tensor]:
    """ "chain": conv -> tanh -> conv -> LeakyReLU -> conv -> ReLU -> linear on 2x13x13 inputs
    (strides 2, 1, 2; paddings 1, 2, 0); "stable": the same with the second convolution's
    biases of +-3, which leave IBP-unstable only some of its first channel's neurons; "pool":
    conv -> ReLU -> max pool 2 -> conv -> tanh -> max pool 3 (stride 2, padding 1) -> conv
    -> ReLU -> linear on 2x12x12 inputs; "batchnorm": conv -> ReLU -> batch norm -> conv ->
    batch norm -> ReLU -> conv -> ReLU -> linear on 2x13x13 inputs."""
    with torch.random.fork_rng():
        torch.manual_seed(5)
        if name == "batchnorm":
            net = nn.Sequential(
                nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(4),
                nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                nn.Conv2d(5, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2),
            )  # fmt: skip
            return _random_bn(net), torch.rand(3, 2, 13, 13)
        if name == "pool":
            net = nn.Sequential(
                nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(4, 5, 3, padding=1), nn.Tanh(), nn.MaxPool2d(3, stride=2, padding=1),
                nn.Conv2d(5, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2),
            )  # fmt: skip
            return net.eval(), torch.rand(3, 2, 12, 12)
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Tanh(),
            nn.Conv2d(4, 5, 3, padding=2), nn.LeakyReLU(0.1),
            nn.Conv2d(5, 3, 2, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4),
        )  # fmt: skip
        x = torch.rand(3, 2, 13, 13)
    if name == "stable":
        with torch.no_grad():
            net[2].bias[1:] = torch.tensor([3.0, -3.0, 3.0, -3.0])
    return net.eval(), x


@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("name", ["chain", "stable", "pool", "batchnorm"])
def test_crown_patches_equal_the_dense_backward_pass(norm, name, monkeypatch):
    """CROWN's rows on a convolution kept as patches of their receptive fields (every row,
    or the unstable ones' gathered patches) give the dense backward pass's bounds, through
    tanh, LeakyReLU and ReLU relaxations, max pooling and batch norm, with the patch map as a
    matrix or as a transposed convolution."""
    patches = importlib.import_module("adversa.certify.patches")
    net, x = _conv_chain(name)
    threat = THREATS[norm].with_eps(THREATS[norm].eps * (4 if name == "chain" else 1))
    rows, lower_bounds = [], patches.lower_bounds
    monkeypatch.setattr(
        patches, "lower_bounds", lambda *args: rows.append(len(args[2])) or lower_bounds(*args)
    )
    with torch.no_grad():
        fast = bounds(net, x, threat, "crown")
        assert rows  # the patch form was used
        if name in ("chain", "stable"):  # every row, or some of channel 0's
            assert 0 < rows[0] <= 9 * 9 if name == "stable" else rows[0] == 5 * 9 * 9
        monkeypatch.setattr(patches, "_MATRIX_LIMIT", 0)  # transposed convolutions
        convolved = bounds(net, x, threat, "crown")
        monkeypatch.setattr(patches, "chain", lambda graph, k: None)  # dense rows
        dense = bounds(net, x, threat, "crown")
    for ours in (fast, convolved):
        for a, b in zip(ours, dense, strict=True):
            assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


@pytest.mark.parametrize(
    "c_in, c_out, kernel, stride, padding, side",
    [(1, 16, 4, 2, 1, 28), (1, 9, 3, 2, 1, 9), (2, 18, 3, 1, 0, 7), (16, 32, 4, 2, 1, 14)],
)
def test_a_convolution_transposes_to_its_adjoint(c_in, c_out, kernel, stride, padding, side):
    """<conv(x), a> = <x, conv^T(a)>, by columns and fold (few input channels) or by a
    transposed convolution, odd sizes (output padding) included."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(c_out, c_in, kernel, kernel, generator=gen)
    op = conv(w, None, (c_in, side, side), stride=(stride,) * 2, padding=(padding,) * 2,
              dilation=(1, 1), groups=1)  # fmt: skip
    x = torch.randn(5, c_in, side, side, generator=gen)
    y = op.forward(x)
    a = torch.randn(y.shape, generator=gen)
    assert op.transpose(a.unsqueeze(1)).shape == (5, 1, c_in, side, side)
    assert torch.allclose((y * a).sum(), (x * op.fn_t(a)).sum(), rtol=1e-4)


def test_l2_ibp_uses_row_norms_and_the_box():
    torch.manual_seed(0)
    layer = nn.Linear(64, 8)
    x = torch.full((2, 64), 0.5)
    _, upper = bounds(layer, x, ThreatModel(norm="l2", eps=0.1), "ibp")
    radius = 0.1 * layer.weight.norm(dim=1)
    assert torch.allclose(upper - layer(x), radius.expand(2, -1), atol=1e-5)
    # At a corner of the box with a large radius, the box is the tighter of the two.
    corner = torch.zeros(1, 64)
    _, upper = bounds(layer, corner, ThreatModel(norm="l2", eps=8.0), "ibp")
    box_upper = layer.bias + layer.weight.clamp_min(0).sum(1)
    assert torch.allclose(upper[0], box_upper, atol=1e-5)


def test_bad_inputs_raise():
    x = torch.rand(2, 64)
    threat = THREATS["linf"]
    with pytest.raises(BadInput, match="unsupported layer Softmax at '1'"):
        bounds(nn.Sequential(nn.Linear(64, 4), nn.Softmax(1)), x, threat)

    class Custom(nn.Sequential):  # a traced forward: the bounds of twice the stack
        def forward(self, x):
            return super().forward(x) * 2

    with torch.random.fork_rng():
        torch.manual_seed(1)
        custom = Custom(nn.Linear(64, 4))
    lower, upper = bounds(custom, x, threat)
    plain = bounds(nn.Sequential(*custom), x, threat)
    assert torch.allclose(lower, 2 * plain[0], atol=1e-6)
    assert torch.allclose(upper, 2 * plain[1], atol=1e-6)
    with pytest.raises(BadInput, match="bounds support the linf and l2 norms, not 'l1'"):
        bounds(nn.Linear(64, 4), x, ThreatModel(norm="l1", eps=1.0))
    with pytest.raises(BadInput, match="method must be one of ibp, crown, crown-ibp"):
        bounds(nn.Linear(64, 4), x, threat, method="deeppoly")
    with pytest.raises(BadInput, match="outside the declared bounds"):
        bounds(nn.Linear(64, 4), x + 2, threat)
    with pytest.raises(BadInput, match="max pooling at '0' must have ceil_mode=False"):
        bounds(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), torch.rand(2, 1, 8, 8), threat)


def test_verified_points_survive_the_attacks(digits_mlp):
    model, x, y = digits_mlp
    x, y = x[:100], y[:100]
    threat = ThreatModel(norm="linf", eps=0.05)
    result = certify_and_attack(model, x, y, threat, [0.02, 0.05], method="crown", seed=0)
    assert not [w for w in result.warnings if w.startswith("BUG")]
    for i in range(2):
        assert result.certified_accuracy(i) <= float(result.robust[i].float().mean())
        assert result.violations(i).numel() == 0
    assert result.certified_accuracy(1) < result.certified_accuracy(0)


def test_a_wrong_certificate_is_flagged_as_a_bug(digits_mlp, monkeypatch):
    import adversa.certify.run as run

    model, x, y = digits_mlp
    monkeypatch.setattr(
        run, "verified", lambda m, x, y, t, method: torch.ones_like(y, dtype=torch.bool)
    )
    result = run_certification(
        model, x[:50], y[:50], ThreatModel(norm="linf", eps=0.2), method="ibp", attacks=("pgd",)
    )
    bugs = [w for w in result.warnings if w.startswith("BUG")]
    assert any("were broken by an attack" in w for w in bugs)
    assert any("exceeds empirical robust accuracy" in w for w in bugs)


@pytest.fixture(scope="module")
def factory_files(digits_mlp, tmp_path_factory):
    model, x, y = digits_mlp
    root = tmp_path_factory.mktemp("certify-cli")
    (root / "net.py").write_text(
        "from torch import nn\n\n\ndef make():\n"
        "    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))\n"
    )
    torch.save(model.module.state_dict(), root / "weights.pt")
    import numpy as np

    np.savez(root / "digits.npz", x=x[:60].numpy(), y=y[:60].numpy())
    return root


def test_cli_certify_crown_with_attack_check(factory_files, tmp_path, capsys):
    root = factory_files
    argv = [
        "certify", "--model", f"{root / 'net.py'}:make", "--weights", str(root / "weights.pt"),
        "--data", str(root / "digits.npz"), "--method", "crown", "--eps", "0.01,0.03",
        "--attack-check", "--out", str(tmp_path),
    ]  # fmt: skip
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads((tmp_path / "certify.json").read_text())
    assert data["method"] == "crown" and data["n"] == 60 and data["consistent"] is True
    assert [r["eps"] for r in data["results"]] == [0.01, 0.03]
    for entry in data["results"]:
        assert entry["verified_accuracy"] <= entry["empirical_robust_accuracy"]
        assert entry["violations"] == []
    assert {"config", "seed", "versions", "warnings", "curve"} <= set(data)
    html = (tmp_path / "certify.html").read_text()
    assert "<svg" in html and "Verified accuracy versus eps" in html
    assert "verified  accuracy" in captured.out


def test_cli_certify_bad_inputs_exit_2(factory_files, tmp_path, capsys):
    root = factory_files
    base = ["certify", "--data", str(root / "digits.npz"), "--out", str(tmp_path)]
    factory = ["--model", f"{root / 'net.py'}:make", "--weights", str(root / "weights.pt")]
    cases = {
        "needs --eps": [*factory, "--method", "crown"],
        "needs --sigma": [*factory, "--method", "smoothing"],
        "certifies L2 radii": [
            *factory,
            "--method",
            "smoothing",
            "--sigma",
            "0.25",
            "--norm",
            "linf",
        ],
    }
    for message, extra in cases.items():
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
