"""Randomized smoothing: the statistics against scipy, CERTIFY on a boundary whose distance is
known, abstention (including n = 10 with alpha = 0.001), seeds, bad inputs, a certificate
attacked inside its radius, and the CLI.

Measured, for the record (digits MLP 64-128-10 trained 150 steps with the "gaussian" defense at
sigma 0.25; CERTIFY with n0 100, n 1,000, alpha 0.001 on 60 test points): certified accuracy
95.0% at radius 0, 91.7% at 0.1, 76.7% at 0.25, 43.3% at 0.5; abstention 3.3%. L2 PGD with EOT
(40 steps, 16 noise draws; judged by PREDICT) leaves 95.0%, 90.0%, 63.3%, 10.0% and 0% of the
points unbroken at eps 0.1, 0.25, 0.5, 1 and 2, and breaks no certified point.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import digits_split
from scipy import stats
from torch import nn

from adversa import ThreatModel
from adversa.certify import (
    CertificationWarning,
    Smooth,
    min_n_to_certify,
    min_n_to_predict,
    run_certification,
)
from adversa.certify.smoothing import (
    binomial_p_value,
    certified_radius,
    lower_confidence_bound,
    max_radius,
)
from adversa.cli.main import main
from adversa.defenses import DEFENSES, StepContext
from adversa.errors import BadInput


class Threshold(nn.Module):
    """Two classes split by the hyperplane x_0 = 0.5: class 1 iff x_0 > 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x[:, 0] - 0.5) * 100
        return torch.stack([torch.zeros_like(score), score], 1)


class Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.scale.expand(len(x)), torch.zeros(len(x))], 1)


def test_lower_bound_radius_and_p_value_match_scipy():
    n, sigma = 1000, 0.5
    counts = torch.tensor([0, 1, 10, 500, 501, 600, 900, 999, 1000])
    for alpha in (0.1, 0.001):
        lower = lower_confidence_bound(counts, n, alpha)
        for k, got in zip(counts.tolist(), lower.tolist(), strict=True):
            # Clopper-Pearson two-sided at 1 - 2 alpha is the one-sided bound at 1 - alpha.
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha)
            assert got == pytest.approx(ci.low, abs=1e-9)
        radius = certified_radius(lower, sigma)
        expected = np.where(lower > 0.5, sigma * stats.norm.ppf(lower.numpy()), 0.0)
        assert np.allclose(radius.numpy(), expected)
    assert certified_radius(torch.tensor([0.5, 0.4]), sigma).tolist() == [0.0, 0.0]
    tops = torch.tensor([5, 6, 10, 11, 50, 90, 0])
    totals = torch.tensor([10, 10, 10, 11, 100, 100, 3])
    p = binomial_p_value(tops, totals)
    for k, m, got in zip(tops.tolist(), totals.tolist(), p.tolist(), strict=True):
        assert got == pytest.approx(stats.binomtest(k, m, 0.5).pvalue, rel=1e-9)


@pytest.mark.parametrize("alpha", [0.2, 0.01, 0.001, 1e-5, 0.5**10])
def test_minimum_n_for_an_answer(alpha):
    n = min_n_to_certify(alpha)
    assert stats.beta.ppf(alpha, n, 1) > 0.5 >= stats.beta.ppf(alpha, n - 1, 1)
    n = min_n_to_predict(alpha)
    assert stats.binomtest(n, n).pvalue <= alpha < stats.binomtest(n - 1, n - 1).pvalue


def test_certify_never_exceeds_the_true_radius_and_gets_close():
    """For a half-space, g's decision boundary is the same hyperplane, so the exact L2 radius
    of x is |x_0 - 0.5|; the certificate must not exceed it."""
    distance = torch.tensor([-0.3, -0.1, 0.02, 0.1, 0.2, 0.3, 0.45])
    x = torch.full((len(distance), 4), 0.5)
    x[:, 0] += distance
    smooth = Smooth(sigma=0.25, n0=100, n=10_000, alpha=0.001, batch_size=4096)
    result = smooth.certify(Threshold(), x)
    # At 0.02 from the boundary pA = Phi(0.08) = 0.53: the n0 = 100 selection samples may
    # pick class 0 (this seed: 62 to 38), and then CERTIFY must abstain.
    assert result.prediction.tolist() == [0, 0, -1, 1, 1, 1, 1]
    assert bool((result.radius <= distance.abs() + 1e-9).all())
    far = distance.abs() >= 0.1
    assert bool((result.radius[far] >= 0.75 * distance.abs()[far]).all())
    choice = result.counts0.argmax(1)
    assert result.prediction[2] == -1 and choice[2] == 0 and result.counts[2, 1] > 5000
    n_a = result.counts.gather(1, choice[:, None])[:, 0].numpy()
    p_lower = stats.beta.ppf(0.001, n_a, 10_000 - n_a + 1)
    assert np.allclose(result.pA_lower.numpy(), p_lower)
    expected = np.where(p_lower > 0.5, 0.25 * stats.norm.ppf(p_lower), 0.0)
    assert np.allclose(result.radius.numpy(), expected)
    assert result.counts.sum(1).tolist() == [10_000] * 7
    assert result.counts0.sum(1).tolist() == [100] * 7
    assert result.forward == 7 * 10_100


def test_abstains_on_the_boundary_and_with_too_few_samples():
    on_boundary = torch.full((20, 4), 0.5)
    on_boundary[:, 0] = 0.5 + 1e-7  # f is a fair coin under the noise
    smooth = Smooth(sigma=0.25, n0=100, n=1_000, alpha=0.001)
    assert smooth.certify(Threshold(), on_boundary).abstention_rate == 1.0
    assert bool((smooth.predict(Threshold(), on_boundary) == -1).all())

    sure = torch.rand(30, 4)  # the constant classifier: every sample votes class 0
    with pytest.warns(CertificationWarning, match="n=10 and alpha=0.001 always abstains"):
        assert bool((Smooth(sigma=0.25, n=10).predict(Constant(), sure) == -1).all())
    assert bool((Smooth(sigma=0.25, n=11).predict(Constant(), sure) == 0).all())
    with pytest.warns(CertificationWarning, match="n=9 and alpha=0.001 can never certify"):
        result = Smooth(sigma=0.25, n0=10, n=9).certify(Constant(), sure)
    assert result.abstention_rate == 1.0 and "n >= 10" in result.warnings[0]
    # n = 10 can certify, but only up to sigma * Phi^-1(0.001^(1/10)) = 0.003 sigma.
    with pytest.warns(CertificationWarning, match="no certified radius can exceed 0.000744"):
        result = Smooth(sigma=0.25, n0=10, n=10).certify(Constant(), sure)
    assert result.abstention_rate == 0.0
    assert torch.allclose(
        result.radius, torch.tensor(max_radius(0.25, 10, 0.001), dtype=torch.float64)
    )


def test_same_seed_same_answer():
    x = torch.rand(5, 4)
    results = [Smooth(sigma=0.5, n=200, seed=s).certify(Threshold(), x) for s in (0, 0, 1)]
    assert torch.equal(results[0].counts, results[1].counts)
    assert not torch.equal(results[0].counts, results[2].counts)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sigma": 0.0}, "sigma must be > 0, got 0.0"),
        ({"sigma": -1.0}, "sigma must be > 0"),
        ({"sigma": float("nan")}, "sigma must be a finite number"),
        ({"sigma": 0.5, "alpha": 0.0}, r"alpha must be in \(0, 1\), got 0.0"),
        ({"sigma": 0.5, "alpha": 1.5}, r"alpha must be in \(0, 1\)"),
        ({"sigma": 0.5, "n0": 0}, "n0 must be an integer >= 1, got 0"),
        ({"sigma": 0.5, "n": -3}, "n must be an integer >= 1, got -3"),
        ({"sigma": 0.5, "batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_configs_raise(options, message):
    with pytest.raises(BadInput, match=message):
        Smooth(**options)


@pytest.fixture(scope="module")
def noisy_mlp() -> nn.Module:
    """A digits MLP trained with the "gaussian" defense at sigma 0.25 (150 steps, ~1 s)."""
    x_train, y_train, _, _ = digits_split()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    defense = DEFENSES.get("gaussian", sigma=0.25)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for step in range(150):
        ctx = StepContext(step=step, total=150, epoch=0, seed=0, gen=gen)
        defense.train_batch(net, opt, x_train, y_train, ctx)
    return net.eval()


def test_certified_points_are_not_flipped_inside_their_radius(noisy_mlp):
    _, _, x, y = digits_split()
    x, y = x[:60], y[:60]
    smooth = Smooth(sigma=0.25, n0=100, n=1_000, alpha=0.001)
    threat = ThreatModel(norm="l2", eps=0.25)
    result = run_certification(
        noisy_mlp, x, y, threat, [0.1, 0.25], method="smoothing", smooth=smooth,
        attacks=("pgd",), eot=16,
    )  # fmt: skip
    assert not [w for w in result.warnings if w.startswith("BUG")]
    cert = result.smoothing
    assert cert.certified_accuracy(y, 0.0) > 0.9 and cert.certified_accuracy(y, 0.25) > 0.6
    for i in range(2):
        assert result.certified[i].sum() > 20
        assert result.violations(i).numel() == 0
        assert result.certified_accuracy(i) <= float(result.robust[i].float().mean())
    # The same attack does break the smoothed classifier beyond every certified radius.
    far = run_certification(
        noisy_mlp, x, y, threat.with_eps(1.0), method="smoothing", smooth=smooth,
        attacks=("pgd",), eot=16,
    )  # fmt: skip
    assert float(far.robust[0].float().mean()) < 0.3  # measured 0.10


def test_cli_certify_smoothing(noisy_mlp, tmp_path, capsys):
    _, _, x, y = digits_split()
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n\ndef make():\n"
        "    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))\n"
    )
    torch.save(noisy_mlp.state_dict(), tmp_path / "weights.pt")
    np.savez(tmp_path / "digits.npz", x=x[:40].numpy(), y=y[:40].numpy())
    argv = [
        "certify", "--model", f"{tmp_path / 'net.py'}:make", "--weights",
        str(tmp_path / "weights.pt"), "--data", str(tmp_path / "digits.npz"), "--method",
        "smoothing", "--sigma", "0.25", "--samples", "500", "--out", str(tmp_path / "ok"),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "ok" / "certify.json").read_text())
    assert data["method"] == "smoothing" and data["norm"] == "l2" and data["n"] == 40
    assert data["smoothing"]["n"] == 500 and data["smoothing"]["alpha"] == 0.001
    curve = [p["certified_accuracy"] for p in data["curve"]]
    assert curve == sorted(curve, reverse=True) and curve[0] > 0.8 and curve[-1] == 0.0
    assert 0 <= data["abstention_rate"] < 0.2 and data["warnings"] == []
    assert "Certified accuracy versus L2 radius" in (tmp_path / "ok" / "certify.html").read_text()

    capsys.readouterr()
    few = [*argv[:-4], "--samples", "9", "--n", "30", "--out", str(tmp_path / "few")]
    assert main(few) == 0
    captured = capsys.readouterr()
    data = json.loads((tmp_path / "few" / "certify.json").read_text())
    assert data["abstention_rate"] == 1.0
    assert any("can never certify" in w for w in data["warnings"])
    assert "warning: CERTIFY with n=9" in captured.out
    # --n counts points, as in every other command; the header's "n=" is the warning's n
    assert data["n"] == 30 and data["smoothing"]["n"] == 9
    header = captured.out.splitlines()[0]
    assert "30 points, n=9 noise samples per point" in header and "n=30" not in header
    assert main([*argv[:-4], "--n-points", "5", "--out", str(tmp_path / "old")]) == 0
    assert json.loads((tmp_path / "old" / "certify.json").read_text())["n"] == 5
