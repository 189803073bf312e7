"""EOT and BPDA: adaptive attacks must beat defenses that only mask gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import digits_split
from torch import nn

from adversa import Model, ThreatModel, evaluate, get_attack
from adversa.attacks.adaptive import EOT, bpda
from adversa.errors import BadInput


class Quantize(nn.Module):
    """Rounds inputs to `levels` grey levels: zero gradient almost everywhere."""

    non_differentiable = True

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class GaussianNoise(nn.Module):
    """Adds fresh N(0, sigma^2) noise at every call, from its own seeded generator."""

    def __init__(self, sigma: float, seed: int = 0) -> None:
        super().__init__()
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.gen, dtype=x.dtype)
        return x + self.sigma * noise


def _robust_accuracy(model: Model, result, y: torch.Tensor) -> float:
    return float((~result.success).float().mean())


def test_bpda_breaks_quantization(digits_mlp):
    base, x, y = digits_mlp
    defended = Model(nn.Sequential(Quantize(4), base.module), num_classes=10)
    threat = ThreatModel(norm="linf", eps=0.15)
    clean = float((defended.predict(x) == y).float().mean())
    pgd = get_attack("pgd", threat, steps=20, restarts=1)
    plain = _robust_accuracy(defended, pgd(defended, x, y), y)
    with bpda(defended) as wrapped:
        adaptive = _robust_accuracy(defended, pgd(defended, x, y), y)
    assert wrapped == ["0"]
    assert clean > 0.85
    # Measured: plain 0.93 (the gradient is zero), with BPDA 0.37.
    assert plain > 0.5
    assert adaptive < plain - 0.3


def test_bpda_hooks_are_removed(digits_mlp):
    base, x, _ = digits_mlp
    quant = Quantize(4)
    net = nn.Sequential(quant, base.module)
    with bpda(net):
        pass
    xr = x[:4].clone().requires_grad_(True)
    net(xr).sum().backward()
    assert torch.count_nonzero(xr.grad) == 0


def test_bpda_rejects_bad_use(digits_mlp):
    base, _, _ = digits_mlp
    with pytest.raises(BadInput, match="no submodule marked non_differentiable"), bpda(base):
        pass
    with pytest.raises(BadInput, match="no submodule named 'nope'"), bpda(base, modules=["nope"]):
        pass
    quantizer = nn.Sequential(Quantize(4))
    with (
        pytest.raises(BadInput, match="approximation must be 'identity' or a callable"),
        bpda(quantizer, approximation="smooth"),
    ):
        pass


@pytest.fixture(scope="module")
def noisy_mlp():
    """An MLP trained with Gaussian-noise augmentation and kept noisy at test time."""
    x, y, _, _ = digits_split()
    gen = torch.Generator().manual_seed(1)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        noisy = x + 0.5 * torch.randn(x.shape, generator=gen)
        nn.functional.cross_entropy(mlp(noisy), y).backward()
        opt.step()
    return Model(nn.Sequential(GaussianNoise(0.5, seed=2), mlp.eval()), num_classes=10)


def test_eot_beats_plain_pgd_on_a_randomized_model(noisy_mlp, digits_mlp):
    _, x, y = digits_mlp
    threat = ThreatModel(norm="l2", eps=1.5)
    pgd = get_attack("pgd", threat, steps=20)
    eot = EOT(noisy_mlp, samples=20)
    clean = float((eot.predict(x) == y).float().mean())
    plain = _robust_accuracy(noisy_mlp, pgd(noisy_mlp, x, y), y)
    adaptive_result = pgd(eot, x, y)
    adaptive = _robust_accuracy(eot, adaptive_result, y)
    assert clean > 0.8
    # Measured: plain 0.60 (single draws), EOT-20 0.33.
    assert adaptive < plain - 0.1, (plain, adaptive)
    # The cost shows the k draws: 20 forward passes per sample per step at least.
    assert adaptive_result.cost.backward >= 20 * (y.shape[0] // 2)


def test_eot_rejects_bad_samples(noisy_mlp):
    with pytest.raises(BadInput, match="EOT samples must be an integer >= 1, got 0"):
        EOT(noisy_mlp, samples=0)


def test_evaluate_flags_the_randomized_model(noisy_mlp, digits_mlp):
    _, x, y = digits_mlp
    result = evaluate(noisy_mlp, x[:100], y[:100], ThreatModel(norm="l2", eps=1.0), ["pgd"])
    assert any("randomised" in w and "EOT" in w for w in result.warnings), result.warnings


def test_evaluate_flags_zero_gradients_and_masking(digits_mlp):
    base, x, y = digits_mlp
    defended = Model(nn.Sequential(Quantize(4), base.module), num_classes=10)
    threat = ThreatModel(norm="linf", eps=0.15)
    result = evaluate(defended, x, y, threat, ["pgd"], check_masking=True)
    assert any("exactly zero" in w and "BPDA" in w for w in result.warnings), result.warnings
    assert any("full input range" in w for w in result.warnings), result.warnings
    with bpda(defended):
        adaptive = evaluate(defended, x, y, threat, ["pgd"])
    assert adaptive.robust_accuracy < result.robust_accuracy - 0.3


def test_convergence_check_flags_too_few_steps(digits_mlp):
    model, x, y = digits_mlp
    weak = get_attack("pgd", ThreatModel(norm="linf", eps=0.08), steps=2, restarts=1)
    result = evaluate(model, x, y, weak.threat, [weak], check_masking=True)
    assert any(w.startswith("not converged") for w in result.warnings), result.warnings
    strong = get_attack("pgd", ThreatModel(norm="linf", eps=0.08), steps=100, restarts=2)
    result = evaluate(model, x, y, strong.threat, [strong], check_masking=True)
    assert not any(w.startswith("not converged") for w in result.warnings), result.warnings
