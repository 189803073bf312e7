"""Bounds on traced modules (`adversa.certify.trace`) and the new ops (max pooling, LeakyReLU,
sigmoid, tanh, GELU, transposed convolutions, concatenation, mean, broadcasting, constants):
equal to the bounds of the equivalent `nn.Sequential` where one exists, never crossed by
sampled or PGD points, exact where they must be, GELU's relaxation lines checked on dense
grids, and unsupported operations refused by name and place.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adversa import ThreatModel
from adversa.certify import Residual, bounds, certify_and_attack, margin_bounds, verified
from adversa.certify.graph import build_graph
from adversa.certify.ops import GELU_MIN, Gelu
from adversa.certify.relax import relax
from adversa.errors import BadInput

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")
THREATS = {"linf": ThreatModel(norm="linf", eps=0.05), "l2": ThreatModel(norm="l2", eps=0.3)}


class FunctionalCNN(nn.Module):
    """A CNN written the usual way: functional calls, max pooling, x.flatten(1), F.linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.w = nn.Parameter(torch.randn(16, 32) / 6)
        self.b = nn.Parameter(torch.randn(16) / 10)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x), inplace=True)
        x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = x.flatten(1)
        return self.fc(F.linear(x, self.w, self.b).relu())

    def as_sequential(self) -> nn.Sequential:
        dense = nn.Linear(32, 16)
        dense.weight, dense.bias = self.w, self.b
        return nn.Sequential(
            self.conv1, nn.ReLU(), nn.MaxPool2d(2), self.conv2, nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), dense, nn.ReLU(), self.fc,
        )  # fmt: skip


class SkipNet(nn.Module):
    """A skip connection written in forward, as `Residual` does it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(h + self.body(h))
        return self.head(h.view(h.size(0), -1))

    def as_sequential(self) -> nn.Sequential:
        return nn.Sequential(
            self.stem, nn.ReLU(), Residual(*self.body), nn.ReLU(), nn.Flatten(), self.head
        )


class Everything(nn.Module):
    """Every traced operator at once: normalisation by buffers, LeakyReLU, sigmoid, tanh,
    average and adaptive pooling, permute, concatenation, subtraction, mean, broadcasting,
    conv1d, a dropout and a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4]).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor([0.3]).view(1, 1, 1, 1))
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.conv1d = nn.Conv1d(4, 3, 3, padding=1)
        self.fc = nn.Linear(12 * 3, 10)

    def forward(self, x):
        x = (x - self.mean) / self.std
        h = F.leaky_relu(self.bn(self.conv(x)), 0.1) + x  # a skip, broadcast over channels
        s = torch.sigmoid(h) - 0.5 * torch.tanh(h)
        p = F.avg_pool2d(s, 2)  # (6, 4, 4)
        q = self.pool(F.max_pool2d(s, 3, stride=1, padding=1))  # (6, 2, 2)
        r = p.flatten(2).mean(2, keepdim=True) + q.flatten(2)  # broadcast: (6, 4)
        r = torch.cat([r, -r], 1).transpose(1, 2)  # (4, 12)
        z = F.relu(self.conv1d(r)).permute(0, 2, 1)  # (12, 3)
        return self.fc(F.dropout(z.flatten(1), 0.3, self.training))


class UpNet(nn.Module):
    """GELU in both forms and a transposed convolution, written functionally."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)  # 8x8 -> 4x4
        self.up_w = nn.Parameter(torch.randn(4, 3, 3, 3) / 3)  # (in, out, 3, 3)
        self.up_b = nn.Parameter(torch.randn(3) / 10)
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x):
        h = F.gelu(self.conv(x))
        h = F.conv_transpose2d(h, self.up_w, self.up_b, 2, padding=1, output_padding=1)  # 8x8
        return self.fc(F.gelu(h, approximate="tanh").flatten(1))

    def as_sequential(self) -> nn.Sequential:
        up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        up.weight, up.bias = self.up_w, self.up_b
        return nn.Sequential(self.conv, nn.GELU(), up, nn.GELU("tanh"), nn.Flatten(), self.fc)


def _build(cls: type[nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = cls()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(-1, 1)
    return net.eval()


def _points(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _inside(x: torch.Tensor, threat: ThreatModel, n: int, seed: int) -> torch.Tensor:
    """n random points of the ball around each x (in the box): (n * B, ...)."""
    gen = torch.Generator().manual_seed(seed)
    rep = x.repeat(n, *([1] * (x.dim() - 1)))
    return threat.project(rep + threat.random_start(rep, gen) - rep, rep)


def _extremes(net: nn.Module, x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """PGD (30 steps, from random starts) maximising and minimising every logit: logits at
    the points found, (2 * classes * B, classes)."""
    classes = net(x[:1]).shape[1]
    rep = x.repeat(2 * classes, *([1] * (x.dim() - 1)))
    sign = torch.cat([torch.ones(classes), -torch.ones(classes)]).repeat_interleave(len(x))
    which = torch.arange(classes).repeat(2).repeat_interleave(len(x))
    adv = _inside(x, threat, 2 * classes, 5)
    step = threat.eps / 8 if threat.norm == "linf" else threat.eps / 4
    for _ in range(30):
        adv.requires_grad_(True)
        out = net(adv).gather(1, which[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad((sign * out).sum(), adv)
        if threat.norm == "linf":
            move = grad.sign()
        else:
            move = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        adv = threat.project(adv.detach() + step * move, rep)
    with torch.no_grad():
        return net(adv)


def _check_sound(net: nn.Module, x: torch.Tensor, threat: ThreatModel) -> dict[str, float]:
    with torch.no_grad():
        sampled = net(_inside(x, threat, 300, 1)).view(300, len(x), -1)
    attacked = _extremes(net, x, threat).view(-1, len(x), sampled.shape[2])
    widths = {}
    for method in METHODS:
        with torch.no_grad():
            lower, upper = bounds(net, x, threat, method)
        for z in (sampled, attacked):
            assert bool((z >= lower - 1e-5).all()), (method, float((lower - z).max()))
            assert bool((z <= upper + 1e-5).all()), (method, float((z - upper).max()))
        widths[method] = float((upper - lower).mean())
    assert widths["alpha-crown"] <= widths["crown"] + 1e-6
    return widths


PAIRS = {"functional-cnn": FunctionalCNN, "skip": SkipNet, "gelu-upsampling": UpNet}


@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("name", PAIRS)
def test_traced_bounds_equal_those_of_the_sequential(name, norm):
    net = _build(PAIRS[name], 0)
    x, threat = _points(), THREATS[norm]
    seq = net.as_sequential().eval()
    with torch.no_grad():
        assert torch.allclose(net(x), seq(x), atol=1e-6)
        for method in METHODS:
            traced, plain = bounds(net, x, threat, method), bounds(seq, x, threat, method)
            assert torch.allclose(traced[0], plain[0], atol=1e-6), method
            assert torch.allclose(traced[1], plain[1], atol=1e-6), method


@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("cls", [FunctionalCNN, SkipNet, Everything, UpNet])
def test_traced_bounds_hold_under_sampling_and_pgd(cls, norm):
    widths = _check_sound(_build(cls, 1), _points(3, 1), THREATS[norm])
    assert widths["crown"] <= widths["ibp"] + 1e-6


def test_the_graph_of_every_operator_reproduces_the_module():
    net, x = _build(Everything, 2), _points(5, 2)
    graph = build_graph(net, x)
    kinds = {type(node.op).__name__ for node in graph.nodes[1:]}
    assert kinds == {"Affine", "Relu", "SShape", "MaxPool", "Add", "Cat"}
    with torch.no_grad():
        assert torch.allclose(graph.forward(x)[-1], net(x), atol=1e-5)
    assert net.training is False and _build(Everything, 2).train().training  # mode restored
    trained = _build(Everything, 2).train()
    build_graph(trained, x)
    assert all(m.training for m in trained.modules())


def _random_net(seed: int) -> nn.Sequential:
    """A random stack of the module ops: conv, then a random activation and pooling."""
    gen = torch.Generator().manual_seed(seed)
    acts = [nn.ReLU(), nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh()]
    pools = [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(2)]
    pick = torch.randint(0, 12, (3,), generator=gen).tolist()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers = [
            nn.Conv2d(1, 4, 3, padding=1), acts[pick[0] % 4], pools[pick[1] % 3],
            nn.Conv2d(4, 4, 3, padding=1), acts[pick[2] % 4], nn.Flatten(),
            nn.LazyLinear(12), acts[(pick[0] + 1) % 4], nn.Linear(12, 5),
        ]  # fmt: skip
        net = nn.Sequential(*layers)
        net(torch.zeros(1, 1, 8, 8))
    return net.eval()


def _random_gelu_net(seed: int) -> nn.Sequential:
    """A random stack with GELU (either form) and a transposed convolution of random
    geometry (stride, padding, output padding, groups, dilation), weights scaled up so that
    pre-activations cross GELU's minimum and both its curved parts."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, 4, (4,), generator=gen).tolist()
    acts = [nn.GELU(), nn.GELU("tanh")]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ups = [  # 4x4 -> 8x8, 8x8, 4x4, 8x8
            nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
            nn.ConvTranspose2d(4, 3, 2, stride=2),
            nn.ConvTranspose2d(4, 4, 3, padding=1, groups=2),
            nn.ConvTranspose2d(4, 3, 3, dilation=2),
        ]
        layers = [
            nn.Conv2d(1, 4, 3, padding=1), acts[pick[0] % 2], nn.MaxPool2d(2), ups[pick[1]],
            acts[pick[2] % 2], nn.Flatten(), nn.LazyLinear(12), acts[pick[3] % 2],
            nn.Linear(12, 5),
        ]  # fmt: skip
        net = nn.Sequential(*layers)
        net(torch.zeros(1, 1, 8, 8))
        for p in net.parameters():
            p.data.mul_(2)
    return net.eval()


def test_a_layer_used_twice_in_a_sequential_is_bounded_twice():
    """nn.Sequential(..., act, ..., act) with one module object: named_children() lists it
    once, and a graph built from it silently dropped the second use."""
    act = nn.LeakyReLU(0.2)
    with torch.random.fork_rng():
        torch.manual_seed(8)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), act, nn.Linear(16, 16), act)
    x = _points(3, 8)
    graph = build_graph(net.eval(), x)
    assert sum(isinstance(n.op, type(graph.nodes[3].op)) for n in graph.nodes[1:]) == 2
    with torch.no_grad():
        assert torch.allclose(graph.forward(x)[-1], net(x), atol=1e-6)
    _check_sound(net, x, THREATS["linf"])


@pytest.mark.parametrize("seed", range(6))
def test_random_networks_of_every_operator_are_sound(seed):
    _check_sound(_random_net(seed), _points(2, seed), THREATS["linf"].with_eps(0.1))


@pytest.mark.parametrize("seed", range(4))
def test_random_networks_with_gelu_and_transposed_convolutions_are_sound(seed):
    net = _random_gelu_net(seed)
    kinds = [type(node.op).__name__ for node in build_graph(net, _points(1)).nodes[1:]]
    assert kinds.count("Gelu") == 3
    widths = _check_sound(net, _points(2, seed), THREATS["linf"].with_eps(0.1))
    assert widths["crown"] <= widths["ibp"] + 1e-6


def _intervals(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4,000 intervals: random centres and widths from 1e-6 to 20, intervals around GELU's
    minimum, on either side of it, in the convex part and the concave tails, very narrow
    (1e-6, 1e-9) and single points."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(4000, generator=gen) * 3
    width = 10 ** (torch.rand(4000, generator=gen) * 7.3 - 6)
    centre[:500] = -0.752 + 0.3 * torch.randn(500, generator=gen)  # around the minimum
    centre[500:1000] = -0.752 - width[500:1000] / 2 - torch.rand(500, generator=gen) * 4
    centre[1000:1500] = -0.752 + width[1000:1500] / 2 + torch.rand(500, generator=gen) * 4
    centre[1500:1700], width[1500:1700] = torch.rand(200, generator=gen) * 2 - 1, 0.4
    centre[1700:1900] = torch.rand(200, generator=gen) * 6 + 2  # concave right tail
    centre[1900:2100] = -torch.rand(200, generator=gen) * 6 - 2  # concave left tail
    width[2100:2400], width[2400:2600], width[2600:2800] = 1e-6, 1e-9, 0.0
    return centre - width / 2, centre + width / 2


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_relaxation_lines_hold_on_a_dense_grid_of_every_interval(approximate):
    """lower line <= GELU <= upper line at 2,001 points of each interval (GELU in float64),
    IBP's interval holds the true minimum (not GELU(l)), and the lines are tight: exact up to
    rounding on narrow intervals, at most 0.1 (u - l)^2 apart in the convex part, and never
    further apart at the midpoint than IBP's interval is wide."""
    op = Gelu(approximate)
    lower, upper = _intervals(1 if approximate == "none" else 2)
    lo_slope, lo_bias, up_slope, up_bias = relax(op, lower, upper)
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
    xs = lower.double()[:, None] + (upper - lower).double()[:, None] * grid
    f = F.gelu(xs, approximate=approximate)
    low = lo_slope.double()[:, None] * xs + lo_bias.double()[:, None]
    high = up_slope.double()[:, None] * xs + up_bias.double()[:, None]
    assert bool((low <= f).all()), float((low - f).max())
    assert bool((f <= high).all()), float((f - high).max())
    ibp_low, ibp_high = op.interval(lower, upper)  # float32 GELU: rounding errors of 1e-7 |f|
    rounding = 1e-6 * (1 + f.abs().amax(1))
    assert bool((ibp_low.double() <= f.min(1).values + rounding).all())
    assert bool((ibp_high.double() >= f.max(1).values - rounding).all())
    around = (lower < -0.8) & (upper > -0.7)  # the minimum inside: below GELU at both ends
    ends = torch.minimum(op.forward(lower), op.forward(upper))
    assert bool((ibp_low[around] < ends[around]).all())
    assert float((ibp_low.double() - f.min(1).values).abs().max()) < 1e-5  # tight
    gap = (high - low)[:, 1000]  # at the midpoint
    narrow = upper - lower <= 1e-6  # only the float32 rounding allowance: 4e-6 (1 + |x|)
    assert bool((gap[narrow] < 5e-6 * (1 + upper.abs()[narrow].double())).all())
    allowance = 4e-6 * (1 + torch.maximum(lower.abs(), upper.abs())).double()
    assert bool((gap <= (ibp_high - ibp_low).double() + allowance).all())
    convex = (lower > -1.4) & (upper < 1.4)  # tangent and chord: M (u - l)^2 / 8 apart at most
    curved = 0.8 * (upper - lower).double() ** 2 / 8 * (1 + 2 / 32**2)
    assert int(convex.sum()) > 300 and bool((gap[convex] <= (curved + allowance)[convex]).all())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_bounds_through_gelu_hold_its_exact_range(approximate):
    """GELU(4 x - 3) on x in [0, 1] (pre-activations from -3 to 1, falling, around the
    minimum and rising) at Linf 0.05: IBP's bounds are GELU's exact range on each interval
    (the minimum inside it, not GELU(l)), and every method's bounds hold it."""
    layer = nn.Linear(41, 41)
    with torch.no_grad():
        layer.weight.copy_(4 * torch.eye(41))
        layer.bias.fill_(-3.0)
    net = nn.Sequential(layer, nn.GELU(approximate)).eval()
    x, eps = torch.linspace(0, 1, 41).unsqueeze(0), 0.05
    z = 4 * (x.double() + torch.linspace(-eps, eps, 10_001, dtype=torch.float64)[:, None]) - 3
    f = F.gelu(z.clamp(-3, 1), approximate=approximate)  # the box [0, 1] clips the ball
    exact = f.min(0).values.float(), f.max(0).values.float()
    for method in METHODS:
        with torch.no_grad():
            lower, upper = bounds(net, x, THREATS["linf"].with_eps(eps), method)
        assert bool((lower[0] <= exact[0] + 1e-6).all() and (upper[0] >= exact[1] - 1e-6).all())
        if method == "ibp":
            assert torch.allclose(lower[0], exact[0], atol=1e-5)
            assert torch.allclose(upper[0], exact[1], atol=1e-5)


def test_gelu_constants_hold_for_both_forms():
    """The soundness of the lines rests on |GELU''| <= CURVATURE, IBP's on GELU_MIN."""
    x = torch.linspace(-12, 12, 480_001, dtype=torch.float64, requires_grad=True)
    for approximate in ("none", "tanh"):
        op = Gelu(approximate)
        f = op.forward(x)
        (d1,) = torch.autograd.grad(f.sum(), x, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), x)
        assert float(d2.abs().max()) <= Gelu.CURVATURE
        assert torch.allclose(op.derivative(x.detach()), d1.detach(), atol=1e-12)
        place, value = GELU_MIN[approximate]
        i = int(f.argmin())
        low, at = float(f[i].detach()), float(x[i].detach())
        assert value <= low < value + 1e-5 and abs(at - place) < 1e-4


def test_gelu_in_a_convolution_chain_gets_the_dense_passs_bounds(monkeypatch):
    """CROWN's patch form of rows on convolutions (`adversa.certify.patches`) through GELU
    relaxations gives the dense backward pass's bounds."""
    patches = importlib.import_module("adversa.certify.patches")
    with torch.random.fork_rng():
        torch.manual_seed(11)
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(4, 5, 3, padding=1),
            nn.GELU("tanh"), nn.Conv2d(5, 3, 2, stride=2), nn.GELU(), nn.Flatten(),
            nn.Linear(27, 4),
        ).eval()  # fmt: skip
        x = torch.rand(3, 2, 13, 13)
    rows, lower_bounds = [], patches.lower_bounds
    monkeypatch.setattr(
        patches, "lower_bounds", lambda *args: rows.append(len(args[2])) or lower_bounds(*args)
    )
    threat = THREATS["linf"].with_eps(0.1)
    with torch.no_grad():
        fast = bounds(net, x, threat, "crown")
        assert rows  # the patch form was used
        monkeypatch.setattr(patches, "chain", lambda graph, k: None)  # dense rows
        dense = bounds(net, x, threat, "crown")
        ibp = bounds(net, x, threat, "ibp")
    for a, b in zip(fast, dense, strict=True):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert float((fast[1] - fast[0]).mean()) < float((ibp[1] - ibp[0]).mean())


@pytest.mark.parametrize(
    "geometry",
    [
        {"stride": 2, "padding": 1, "output_padding": 1},
        {"stride": 3, "padding": 2, "output_padding": 2, "dilation": 2},
        {"stride": 1, "padding": 0, "groups": 2},
        {"stride": (2, 1), "padding": (0, 1), "groups": 3, "dilation": (1, 3)},
    ],
)
def test_a_transposed_convolution_is_affine_with_a_convolution_as_adjoint(geometry):
    """ConvTranspose2d's op reproduces the layer, its |w| form bounds it, and
    <convT(x), a> = <x, conv(a)> for strides, paddings, output paddings, groups, dilations."""
    groups = geometry.get("groups", 1)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        layer = nn.ConvTranspose2d(6, 3 * groups, 3, **geometry).eval()
    x = torch.randn(4, 6, 5, 7, generator=torch.Generator().manual_seed(1))
    op = build_graph(nn.Sequential(layer), x).nodes[1].op
    with torch.no_grad():
        y = layer(x)
        assert torch.allclose(op.forward(x), y, atol=1e-6)
        a = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
        lhs, rhs = ((y - op.forward(torch.zeros_like(x))) * a).sum(), (x * op.fn_t(a)).sum()
        assert torch.allclose(lhs, rhs, rtol=1e-4), (float(lhs), float(rhs))
        radius = op.fn(x.abs(), "abs")
        assert bool((radius >= (y - layer.bias.view(-1, 1, 1)).abs() - 1e-5).all())


def test_max_pooling_bounds_are_exact_at_eps_zero_and_crown_tightens_them():
    net, x = _build(FunctionalCNN, 3), _points(4, 3)
    with torch.no_grad():
        logits = net(x)
        for method in METHODS:
            lower, upper = bounds(net, x, THREATS["linf"].with_eps(0.0), method)
            assert torch.allclose(lower, logits, atol=1e-5) and torch.allclose(
                upper, logits, atol=1e-5
            )
    widths = _check_sound(net, x, THREATS["linf"].with_eps(0.02))
    assert widths["crown"] < 0.9 * widths["ibp"]


def test_unsupported_operations_are_refused_by_name_and_place():
    x = _points(2)

    class Softmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.softmax(self.conv(x).flatten(1), 1)

    class Square(nn.Module):
        def forward(self, x):
            return (x * x).flatten(1)

    class Branchy(nn.Module):
        def forward(self, x):
            return x.flatten(1) if x.sum() > 0 else -x.flatten(1)

    class Aliased(nn.Module):  # the in-place ReLU rewrites h: h + r is 2 relu(h)
        def forward(self, x):
            h = x.flatten(1) - 0.5
            r = F.relu(h, inplace=True)
            return h + r

    class Pair(nn.Module):
        def forward(self, x):
            return x.flatten(1), x.flatten(1)

    threat = THREATS["linf"]
    with pytest.raises(BadInput, match=r"unsupported operation torch.*softmax at node 'softmax'"):
        bounds(Softmax(), x, threat)
    with pytest.raises(BadInput, match="mul of two input-dependent tensors at node 'mul'"):
        bounds(Square(), x, threat)
    with pytest.raises(BadInput, match=r"Branchy cannot be traced by torch\.fx"):
        bounds(Branchy(), x, threat)
    with pytest.raises(BadInput, match="add could not be reproduced"):
        bounds(Aliased(), x, threat)
    with pytest.raises(BadInput, match="the output must be one tensor"):
        bounds(Pair(), x, threat)
    with pytest.raises(BadInput, match=r"unsupported layer Softmax at '1\.body\.1'"):
        bounds(nn.Sequential(nn.Flatten(), Residual(nn.Linear(64, 64), nn.Softmax(1))), x, threat)


def test_a_trained_functional_cnn_is_certified_and_never_broken():
    """Trained for 60 Adam steps on 8x8 digits; certified points survive PGD and APGD."""
    from conftest import digits_split

    x_train, y_train, x_test, y_test = digits_split()
    net = _build(FunctionalCNN, 4).train()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        loss = F.cross_entropy(net(x_train.view(-1, 1, 8, 8)), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = x_test[:80].view(-1, 1, 8, 8), y_test[:80]
    threat = ThreatModel(norm="linf", eps=0.01)
    result = certify_and_attack(net, x, y, threat, [0.005, 0.01], method="crown", seed=0)
    assert not result.warnings, result.warnings
    for i in range(2):
        assert result.violations(i).numel() == 0
        assert result.certified_accuracy(i) <= float(result.robust[i].float().mean())
    assert result.certified_accuracy(0) > 0.5
    ok = verified(net, x, y, threat, "crown")
    assert torch.equal(ok, result.certified[1])
    crown = margin_bounds(net, x, y, threat, "crown")
    alpha = margin_bounds(net, x, y, threat, "alpha-crown")
    assert bool((alpha >= crown - 1e-6).all()) and float((alpha - crown).mean()) > 0
    tighter = certify_and_attack(net, x, y, threat, method="alpha-crown", seed=0)
    assert not tighter.warnings and tighter.violations(0).numel() == 0
    assert tighter.certified_accuracy(0) >= result.certified_accuracy(1)


def test_torch_export_and_torchscript_graphs_get_the_same_bounds():
    """A torch.export graph (ATen ops) is read as it is, a TorchScript module converted."""
    x, threat = _points(3, 6), THREATS["linf"]
    for cls in (Everything, UpNet):  # every operator
        net = _build(cls, 6)
        batch = {"x": {0: torch.export.Dim("batch")}}
        exported = torch.export.export(net, (x,), dynamic_shapes=batch).module()
        for method in METHODS:
            ours, theirs = bounds(net, x, threat, method), bounds(exported, x, threat, method)
            assert torch.allclose(ours[0], theirs[0], atol=1e-6)
            assert torch.allclose(ours[1], theirs[1], atol=1e-6)
    net = _build(FunctionalCNN, 7)
    scripted = torch.jit.script(net.as_sequential())
    for method in METHODS:
        ours, theirs = bounds(net, x, threat, method), bounds(scripted, x, threat, method)
        assert torch.allclose(ours[0], theirs[0], atol=1e-6)
        assert torch.allclose(ours[1], theirs[1], atol=1e-6)


def test_crown_rows_for_unstable_neurons_only_never_loosen_the_bounds(monkeypatch):
    """Skipping CROWN rows for IBP-stable neurons read only by ReLUs gives the same bounds as
    computing every row, also when a ReLU's output feeds max pooling (whose relaxation reads
    the values, not only the signs)."""
    bounds_module = importlib.import_module("adversa.certify.bounds")  # the name is shadowed
    net, x = _build(FunctionalCNN, 9), _points(3, 9)
    threat = THREATS["linf"].with_eps(0.02)
    with torch.no_grad():
        fast = bounds(net, x, threat, "crown")
        monkeypatch.setattr(bounds_module, "Relu", type("NoReLU", (), {}))  # every row
        full = bounds(net, x, threat, "crown")
    assert torch.allclose(fast[0], full[0], atol=1e-6) and torch.allclose(
        fast[1], full[1], atol=1e-6
    )
