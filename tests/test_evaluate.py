"""The evaluation battery, its sanity checks, and the JSON and HTML reports."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from adversa import Model, Report, ThreatModel, evaluate, get_attack
from adversa.attacks import ATTACKS, AttackBase
from adversa.errors import BadInput, UnknownName
from adversa.evaluation import evaluate_sweep, sanity
from adversa.evaluation.report import write_reports
from adversa.model import Access

LINF = ThreatModel(norm="linf", eps=0.1)


def _pgd(threat: ThreatModel = LINF, **overrides):
    # No random start: each point's outcome is then independent of the batch it runs in.
    return get_attack("pgd", threat, steps=10, random_start=False, **overrides)


def test_robust_is_the_per_sample_worst_case(digits_mlp):
    model, x, y = digits_mlp
    fgsm, pgd = get_attack("fgsm", LINF), _pgd()
    result = evaluate(model, x, y, LINF, [fgsm, pgd], batch_size=100, checks=False)

    correct = model.predict(x) == y
    fgsm_alone, pgd_alone = fgsm(model, x, y).success, pgd(model, x, y).success
    expected = correct & ~fgsm_alone & ~pgd_alone
    assert torch.equal(result.robust, expected)
    assert result.robust_accuracy == pytest.approx(expected.float().mean().item())
    assert result.clean_accuracy == pytest.approx(correct.float().mean().item())
    alone = [(correct & ~s).float().mean().item() for s in (fgsm_alone, pgd_alone)]
    assert result.robust_accuracy <= min(alone)
    first, second = result.attacks
    assert first.newly_broken == int((correct & fgsm_alone).sum())
    assert first.attacked == int(correct.sum())
    assert second.attacked == first.attacked - first.newly_broken
    assert second.robust_accuracy == pytest.approx(result.robust_accuracy)
    assert first.robust_accuracy >= second.robust_accuracy


def test_adversarial_examples_are_valid_and_fool_the_model(digits_mlp):
    model, x, y = digits_mlp
    result = evaluate(model, x, y, LINF, ["fgsm", _pgd()], checks=False)
    broken = result.broken_by >= 0
    assert broken.any()
    assert bool(LINF.contains(result.x_adv, x).all())
    assert torch.equal(result.adv_pred[broken], model.predict(result.x_adv[broken]))
    assert bool((result.adv_pred[broken] != y[broken]).all())
    assert torch.equal(result.x_adv[~broken], x[~broken])
    assert not bool((result.robust & broken).any())


def test_cascade_costs_less_than_every_attack_on_every_point(digits_mlp):
    model, x, y = digits_mlp
    attacks = [get_attack("fgsm", LINF), get_attack("pgd", LINF, steps=20)]
    result = evaluate(model, x, y, LINF, attacks, checks=False)
    cascade = sum(a.cost.forward + a.cost.backward for a in result.attacks)
    separate = sum(
        (lambda c: c.forward + c.backward)(attack(model, x, y).cost) for attack in attacks
    )
    assert 0 < cascade < separate
    assert all(a.cost.seconds > 0 for a in result.attacks)


def test_same_seed_same_result_and_plain_modules(digits_mlp):
    model, x, y = digits_mlp
    a = evaluate(model, x, y, LINF, seed=3)
    b = evaluate(model.module, x.numpy(), y.numpy(), LINF, seed=3)  # nn.Module, arrays
    assert torch.equal(a.robust, b.robust)
    assert torch.equal(a.x_adv, b.x_adv)
    assert [s.config["seed"] for s in a.attacks] == [3, 3]


def test_attack_names_resolve_through_the_registry(digits_mlp):
    model, x, y = digits_mlp
    with pytest.raises(UnknownName, match="did you mean 'pgd'"):
        evaluate(model, x, y, LINF, ["fgsm", "pgdd"])
    with pytest.raises(BadInput, match="targeted"):
        evaluate(model, x, y, ThreatModel(norm="linf", eps=0.1, targeted=True))
    with pytest.raises(BadInput, match="batch_size"):
        evaluate(model, x, y, LINF, batch_size=0)
    with pytest.raises(BadInput, match="at least one"):
        evaluate(model, x, y, LINF, [])


@pytest.mark.skipif("cw" not in ATTACKS, reason="needs the l2-only cw attack")
def test_attacks_without_the_norm_are_skipped_unless_all_are(digits_mlp):
    model, x, y = digits_mlp
    result = evaluate(model, x[:50], y[:50], LINF, ["fgsm", "cw"], checks=False)
    assert [a.name for a in result.attacks] == ["fgsm"]
    assert any("skipped attack 'cw'" in w for w in result.warnings)
    with pytest.raises(BadInput, match="none of the attacks supports the linf norm"):
        evaluate(model, x[:50], y[:50], LINF, ["cw"])


def test_attack_objects_take_the_evaluation_threat(digits_mlp):
    model, x, y = digits_mlp
    pgd = get_attack("pgd", ThreatModel(norm="linf", eps=0.3), steps=5)
    result = evaluate(model, x[:40], y[:40], LINF, [pgd], checks=False)
    assert result.attacks[0].config["threat"]["eps"] == pytest.approx(0.1)
    assert result.attacks[0].config["steps"] == 5


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Preset(AttackBase):
    """A preset in the manner of "autoattack": an ordered list of component attacks."""

    name = "test-preset"

    def components(self) -> list[AttackBase]:
        return [get_attack("fgsm", self.threat, seed=self.seed), _pgd(self.threat)]


def test_presets_expand_into_their_components(digits_mlp):
    model, x, y = digits_mlp
    result = evaluate(model, x[:60], y[:60], LINF, [_Preset(threat=LINF)], checks=False)
    assert [a.name for a in result.attacks] == ["fgsm", "pgd"]
    assert result.attacks[1].attacked == result.attacks[0].attacked - result.attacks[0].newly_broken


def test_sweep_gives_one_result_per_eps_and_a_curve(digits_mlp):
    model, x, y = digits_mlp
    calls = []
    sweep = evaluate_sweep(
        model, x, y, LINF, [0.1, 0.05, 0.2], ["fgsm", _pgd()], progress=lambda *a: calls.append(a)
    )
    assert [r.eps for r in sweep] == [0.1, 0.05, 0.2]
    assert [e for e, _ in sweep.curve] == [0.05, 0.1, 0.2]
    accs = [a for _, a in sweep.curve]
    assert accs == sorted(accs, reverse=True)
    assert sweep[0].clean_pred is sweep[2].clean_pred  # one clean pass for the sweep
    assert calls and all(done <= total for _, done, total in calls)
    assert {d for d, _, _ in calls} >= {"fgsm eps=0.1", "pgd eps=0.2"}


# --- sanity checks -----------------------------------------------------------------------


def test_softmax_outputs_are_flagged(digits_mlp):
    model, x, y = digits_mlp
    probs = nn.Sequential(model.module, nn.Softmax(dim=1))
    result = evaluate(probs, x[:60], y[:60], LINF, ["fgsm"])
    assert any("look like probabilities" in w for w in result.warnings)
    assert sanity.check_probability_outputs(torch.randn(4, 3)) == []


class _Rounding(nn.Module):
    """Quantises its input to 4 levels: zero gradient almost everywhere (shattered)."""

    def forward(self, x):
        return torch.round(x * 4) / 4


def test_zero_gradients_are_flagged(digits_mlp):
    model, x, y = digits_mlp
    masked = nn.Sequential(_Rounding(), model.module)
    result = evaluate(masked, x[:60], y[:60], LINF, ["fgsm"])
    assert any("exactly zero" in w for w in result.warnings)
    assert sanity.check_zero_gradients(0.4, 0.0) == []
    assert "NaN" in sanity.check_zero_gradients(0.0, 0.1)[0]
    clean = evaluate(model, x[:60], y[:60], LINF, ["fgsm"])
    assert clean.warnings == ()


class _Noisy(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + 0.05 * torch.randn_like(x))


def test_randomised_models_are_flagged(digits_mlp):
    model, x, y = digits_mlp
    result = evaluate(_Noisy(model.module), x[:40], y[:40], LINF, ["fgsm"])
    assert any("randomised" in w for w in result.warnings)


def test_black_box_beating_white_box_is_flagged():
    plan = [("pgd", Access.GRADIENT), ("square", Access.SCORES)]
    assert sanity.check_black_box_after_white_box(plan, [50, 1], 200) == []
    (warning,) = sanity.check_black_box_after_white_box(plan, [50, 12], 200)
    assert "black-box 'square' fooled 12 of 200 points that the gradient attacks (pgd)" in warning
    first = [("square", Access.SCORES), ("pgd", Access.GRADIENT)]
    assert sanity.check_black_box_after_white_box(first, [50, 12], 200) == []


def test_non_monotone_sweep_is_flagged():
    assert sanity.check_eps_monotone([(0.1, 0.5), (0.2, 0.3), (0.3, 0.1)]) == []
    (warning,) = sanity.check_eps_monotone([(0.3, 0.4), (0.1, 0.5), (0.2, 0.3)])
    assert "rises from 30.00% at eps=0.2 to 40.00% at eps=0.3" in warning


def test_accuracy_above_chance_at_huge_eps_is_flagged(digits_mlp):
    model, x, y = digits_mlp
    huge = ThreatModel(norm="linf", eps=0.6)
    assert sanity.check_chance_at_large_eps(huge, 64, 0.5, 0.1)
    assert sanity.check_chance_at_large_eps(huge, 64, 0.05, 0.1) == []
    assert sanity.check_chance_at_large_eps(LINF, 64, 0.5, 0.1) == []  # eps not huge
    assert sanity.check_chance_at_large_eps(ThreatModel(norm="l2", eps=4.0), 64, 0.5, 0.1)
    assert sanity.chance_level(torch.tensor([0, 0, 0, 1]), 10) == 0.75
    masked = nn.Sequential(_Rounding(), model.module)  # gradients are zero: fgsm does nothing
    result = evaluate(masked, x[:60], y[:60], huge, ["fgsm"])
    assert any("above chance" in w for w in result.warnings)


def test_single_step_beating_iterative_is_flagged(digits_mlp):
    model, x, y = digits_mlp
    assert sanity.check_single_step_vs_iterative("fgsm", "pgd", 1, 200) == []
    (warning,) = sanity.check_single_step_vs_iterative("fgsm", "pgd", 30, 200)
    assert "30 of 200 points were fooled by single-step 'fgsm'" in warning
    # A one-step PGD with a tiny step cannot reach what FGSM's full eps step reaches; both
    # orders of the cascade must notice it.
    weak = get_attack("pgd", LINF, steps=1, step_size=0.005, random_start=False)
    for order in (["fgsm", weak], [weak, "fgsm"]):
        result = evaluate(model, x, y, LINF, order)
        assert any("single-step 'fgsm' but not by iterative 'pgd'" in w for w in result.warnings)
    first = evaluate(model, x, y, LINF, ["fgsm", weak])
    assert first.check_cost.forward > 0  # the re-run on fgsm's points, charged to the checks
    assert first.attacks[1].attacked == first.attacks[0].attacked - first.attacks[0].newly_broken


# --- reports -----------------------------------------------------------------------------


def _image_model(module: nn.Module) -> Model:
    return Model(nn.Sequential(nn.Flatten(), module), num_classes=10)


def test_report_json_holds_the_contract(digits_mlp, tmp_path):
    model, x, y = digits_mlp
    sweep = evaluate_sweep(model, x[:120], y[:120], LINF, [0.1, 0.05], ["fgsm", _pgd()])
    report = Report.from_results(sweep, config={"model": "digits-mlp", "batch_size": 256})
    json_path, html_path = write_reports(tmp_path / "out", report, sweep)
    data = json.loads(json_path.read_text())
    for key in (
        "clean_accuracy",
        "robust_accuracy",
        "n",
        "attacks",
        "warnings",
        "config",
        "versions",
        "seed",
        "results",
        "curve",
        "timestamp",
        "seconds",
    ):
        assert key in data
    assert data["n"] == 120
    assert data["robust_accuracy"] == data["results"][0]["robust_accuracy"]  # first eps listed
    assert [r["eps"] for r in data["results"]] == [0.1, 0.05]
    assert [p["eps"] for p in data["curve"]] == [0.05, 0.1]
    attack = data["attacks"][0]
    for key in (
        "name",
        "robust_accuracy",
        "forward_calls",
        "backward_calls",
        "queries",
        "seconds",
        "newly_broken",
        "config",
    ):
        assert key in attack
    assert data["attacks"][1]["forward_calls"] > 0
    assert {"norm", "eps", "bounds", "attacks", "n", "seed", "model", "batch_size"} <= set(
        data["config"]
    )
    assert {"adversa", "torch", "numpy", "python", "platform"} <= set(data["versions"])
    assert data["timestamp"].endswith("+00:00")
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["report.html", "report.json"]
    assert "<svg" in html_path.read_text()


def test_html_is_self_contained_escaped_and_has_a_gallery(digits_mlp, tmp_path):
    model, x, y = digits_mlp
    images = x[:80].reshape(-1, 1, 8, 8)
    result = evaluate(_image_model(model.module), images, y[:80], LINF, ["fgsm", _pgd()])
    report = Report.from_results(result, config={"model": "<script>alert(1)</script>"})
    _, html_path = write_reports(
        tmp_path, report, result, kind="image", class_names=list("0123456789")
    )
    html = html_path.read_text()
    assert html.count("<img") == 3 * min(8, int((result.broken_by >= 0).sum()))
    assert "data:image/png;base64," in html
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<svg" not in html  # one eps: no curve
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    tabular = write_reports(tmp_path / "tab", report, result, kind="tabular")[1].read_text()
    assert "<img" not in tabular and "largest feature changes" in tabular
