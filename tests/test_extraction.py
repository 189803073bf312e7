"""Model extraction (adversa.extraction) on a digits MLP target: every method beats a
random-guess copy by a stated margin, queries are counted exactly and no backward pass goes
through the target, each API-side defense lowers the fidelity of a Knockoff copy, and the
defenses' honest-user cost is what they promise."""

from __future__ import annotations

import pytest
import torch
from conftest import digits_split

from adversa import Model
from adversa.errors import AccessError, BadInput, ShapeError
from adversa.extraction import (
    EXTRACTIONS,
    fidelity,
    honest_cost,
    parse_defense,
    run_extraction,
    serve,
)
from adversa.extraction.equivalent import weight_error

QUERIES = 600
BUDGET = {"equivalent": 20000}  # lines of 1,024 queries, 130 per critical point
FAST = {"min_steps": 300}
RANDOM_GUESS = 0.1  # fidelity of a copy guessing uniformly among 10 classes
MARGIN = 0.6  # every method's copy agrees with the target on >= 70% of the test digits


@pytest.fixture(scope="module")
def pools() -> dict[str, torch.Tensor]:
    x_train, _, _, _ = digits_split()
    gen = torch.Generator().manual_seed(0)
    # out-of-domain pool: sparse binary noise, where returned probabilities carry information
    noise = (torch.rand(4000, 64, generator=gen) < 0.3).float()
    return {"digits": x_train, "noise": noise}


@pytest.mark.parametrize("name", EXTRACTIONS.list())
def test_method_beats_random_guess_with_exact_queries(name, digits_mlp, pools) -> None:
    target, x_test, _ = digits_mlp
    budget = BUDGET.get(name, QUERIES)
    method = EXTRACTIONS.get(name, queries=budget, seed=0, **FAST)
    with target.counting() as spent:
        result = method(target, pools["digits"])
    assert result.queries == spent.queries
    if name in BUDGET:  # whole lines and critical points only: less than one line + point short
        assert budget - 1154 < result.queries <= budget
    else:
        assert result.queries == budget
    assert result.cost.backward == 0 and spent.backward == 0
    assert fidelity(result.copy, target, x_test) >= RANDOM_GUESS + MARGIN
    again = method(target, pools["digits"])
    x = x_test[:50]
    assert torch.equal(again.copy(x).argmax(1), result.copy(x).argmax(1))  # same seed


def test_equivalent_extraction_recovers_the_hidden_units(digits_mlp, pools) -> None:
    """Jagielski et al.: a one-hidden-layer ReLU MLP (64 units) from exact scores; every unit
    that switches between pool inputs is found, its hyperplane within 0.3 (unit-normalised
    [w, b], mean within 0.05), and the copy agrees with the target on every test digit."""
    target, x_test, _ = digits_mlp
    result = EXTRACTIONS.get("equivalent", queries=60000, seed=0)(target, pools["digits"])
    error = weight_error(result.copy, result.details["units"], *target.module[0].parameters())
    assert fidelity(result.copy, target, x_test) >= 0.99
    assert error["units_found"] >= 40 and error["weight_error_mean"] <= 0.05
    assert error["weight_error_max"] <= 0.3


def test_copy_is_trained_through_a_query_view_only(digits_mlp, pools) -> None:
    target, _, _ = digits_mlp
    api = serve(target, parse_defense("none"))
    with pytest.raises(AccessError):
        api(pools["digits"][:2].clone().requires_grad_(True))


@pytest.mark.parametrize("spec", ["top1", "round:1", "reverse-sigmoid"])
def test_each_defense_lowers_knockoff_fidelity(spec, digits_mlp, pools) -> None:
    target, x_test, _ = digits_mlp
    method = EXTRACTIONS.get("knockoff", queries=1000, seed=0, **FAST)
    plain = fidelity(
        method(serve(target, parse_defense("none")), pools["noise"]).copy, target, x_test
    )
    defended = method(serve(target, parse_defense(spec)), pools["noise"])
    assert defended.queries == 1000
    assert fidelity(defended.copy, target, x_test) <= plain - 0.02


def test_honest_cost_of_each_defense(digits_mlp) -> None:
    target, x_test, y_test = digits_mlp
    none = honest_cost(target, parse_defense("none"), x_test, y_test)
    assert none["probability_change_max"] == 0 and none["label_accuracy_cost"] == 0
    top1 = honest_cost(target, parse_defense("top1"), x_test, y_test)
    assert top1["labels_changed"] == 0 and top1["probability_change_mean"] > 0
    rounded = honest_cost(target, parse_defense("round:2"), x_test, y_test)
    assert 0 < rounded["probability_change_max"] <= 0.5 * 10 * 0.005 + 1e-6
    rs = honest_cost(target, parse_defense("reverse-sigmoid:beta=0.7,gamma=0.4"), x_test, y_test)
    assert rs["labels_changed"] <= 0.01 and rs["probability_change_mean"] > 0.1


def test_bad_input_is_refused(digits_mlp, pools) -> None:
    target, _, _ = digits_mlp
    with pytest.raises(BadInput, match="--queries must be >= 1, got 0"):
        EXTRACTIONS.get("copycat", queries=0)
    with pytest.raises(KeyError, match="copycta"):
        EXTRACTIONS.get("copycta")
    with pytest.raises(ShapeError, match=r"pool inputs of shape \(1, 28, 28\) do not fit"):
        run_extraction(EXTRACTIONS.get("copycat", queries=10), target, torch.rand(20, 1, 28, 28))
    with pytest.raises(BadInput, match="outside the model's bounds"):
        run_extraction(EXTRACTIONS.get("copycat", queries=10), target, pools["digits"] * 3)
    for spec in ("round:x", "reverse-sigmoid:alpha=1", "poison", "top1:2"):
        with pytest.raises(BadInput, match="--defense"):
            parse_defense(spec)


def test_defended_api_returns_probabilities(digits_mlp, pools) -> None:
    target, _, _ = digits_mlp
    x = pools["digits"][:64]
    for spec in ("none", "top1", "reverse-sigmoid"):
        out = serve(target, parse_defense(spec))(x)
        assert torch.allclose(out.sum(1), torch.ones(64), atol=1e-5) and bool((out >= 0).all())
    assert isinstance(target, Model)
