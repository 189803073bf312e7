"""Per-class recall and precision, the evasion count, the imbalance warnings, and the
class-balanced epoch order of `adversa train --class-balance`."""

from __future__ import annotations

import pytest
import torch

from adversa.class_metrics import balanced_accuracy, class_warnings, evasion, per_class
from adversa.errors import BadInput
from adversa.evaluation.html_sections import CLASS_ROWS, class_section
from adversa.train import TrainConfig
from adversa.train.sampling import epoch_order, sample_weights


def _labels(n: int, shares: list[float], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor(shares), n, replacement=True, generator=gen)


def test_per_class_matches_the_definitions_class_by_class():
    gen = torch.Generator().manual_seed(0)
    y = _labels(500, [0.6, 0.3, 0.1], 1)
    pred = torch.where(torch.rand(500, generator=gen) < 0.7, y, torch.randint(0, 3, (500,)))
    after = torch.where(torch.rand(500, generator=gen) < 0.5, pred, (pred + 1) % 3)
    metrics = per_class(y, pred, 4, names=("a", "b", "c", "d"), robust_pred=after)
    assert [m["name"] for m in metrics] == ["a", "b", "c", "d"]
    for m in metrics:
        k = m["class"]
        rows, said = y == k, pred == k
        assert m["support"] == int(rows.sum()) and m["predicted"] == int(said.sum())
        assert m["correct"] == int((rows & said).sum())
        if k == 3:  # a class nobody has and nobody predicts: no ratio to give
            assert m["recall"] is None and m["precision"] is None
            continue
        assert m["recall"] == pytest.approx(float((rows & said).sum() / rows.sum()))
        assert m["precision"] == pytest.approx(float((rows & said).sum() / said.sum()))
        adv = after == k
        assert m["robust_recall"] == pytest.approx(float((rows & adv).sum() / rows.sum()))
        assert m["robust_precision"] == pytest.approx(float((rows & adv).sum() / adv.sum()))
    assert sum(m["support"] for m in metrics) == 500
    mean = sum(m["recall"] for m in metrics[:3]) / 3
    assert balanced_accuracy(metrics) == pytest.approx(mean)


def test_evasion_counts_only_caught_positives_that_leave_their_class():
    y = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0])
    clean = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0])  # 3 of 5 positives caught
    final = torch.tensor([0, 1, 0, 0, 1, 1, 1, 0])  # two caught ones flipped; a missed one
    entry = evasion(y, clean, final, 1, name="fraud", eps=0.05)  # moved back: not "caught"
    assert (entry["rows"], entry["caught"], entry["missed"]) == (5, 3, 2)
    assert (entry["evaded"], entry["still_caught"]) == (2, 1)
    assert entry["evade_rate"] == pytest.approx(2 / 3)
    assert entry["robust_recall"] == pytest.approx(1 / 5)
    with pytest.raises(BadInput, match="one prediction per label"):
        evasion(y, clean[:3], final, 1)


def test_warnings_flag_a_base_rate_model_and_not_a_balanced_one():
    y = torch.cat([torch.zeros(950, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    names = ("legit", "fraud")
    flat = class_warnings(y, torch.zeros_like(y), 2, names=names, collapse="training collapsed")
    assert any(w.startswith("training collapsed: the model is no better than always") for w in flat)
    assert any("predicts 'legit' for 100.0% of inputs" in w for w in flat)
    assert any("never recognises class 'fraud'" in w for w in flat)
    # catches 5 of 50 frauds: accuracy near the base rate, balanced accuracy near chance
    weak = y.clone()
    weak[950:995] = 0
    found = class_warnings(y, weak, 2, names=names)
    assert len(found) == 2 and not any("never recognises" in w for w in found)
    # 80 % recall on both classes: accuracy below the base rate, but a useful model
    good = y.clone()
    good[:190] = 1
    good[950:960] = 0
    assert class_warnings(y, good, 2, names=names) == []
    assert class_warnings(y, y, 2, names=names) == []


def test_warnings_on_many_classes_need_enough_rows():
    y = torch.arange(10).repeat(10)  # 10 rows per class
    pred = torch.where(y == 3, torch.full_like(y, 4), y)
    assert class_warnings(y, pred, 10) == [
        "the model never recognises class '3': recall 0 of 10 rows"
    ]
    few = torch.arange(10).repeat(2)  # 2 rows of class 3: too few to call
    assert class_warnings(few, torch.where(few == 3, 4, few), 10) == []
    collapsed = class_warnings(y, torch.zeros_like(y), 10)
    assert any("no better than always predicting" in w for w in collapsed)


def test_class_section_shows_the_worst_classes_when_there_are_many():
    y = torch.arange(30).repeat(4)
    pred = torch.where(y < 12, (y + 1) % 30, y)  # classes 0..11 never recognised
    metrics = per_class(y, pred, 30, robust_pred=pred)
    html = class_section({"class_metrics": metrics, "config": {"eps": [0.1]}})
    assert html.count("<tr>") == CLASS_ROWS + 1  # header + the shown classes
    assert f"The {CLASS_ROWS} classes with the lowest clean recall of 30." in html
    assert class_section({"class_metrics": [], "config": {}}) == ""


def test_balanced_epoch_order_draws_classes_equally_and_is_seeded():
    y = torch.cat([torch.zeros(3800, dtype=torch.long), torch.ones(200, dtype=torch.long)])
    plain = epoch_order("none", y, torch.Generator().manual_seed(5))
    assert torch.equal(plain, torch.randperm(4000, generator=torch.Generator().manual_seed(5)))
    drawn = epoch_order("sample", y, torch.Generator().manual_seed(5))
    again = epoch_order("sample", y, torch.Generator().manual_seed(5))
    assert torch.equal(drawn, again) and drawn.shape == (4000,)
    share = float(y[drawn].float().mean())
    assert abs(share - 0.5) < 0.03  # 5 % of the rows, half of the draws
    soft = float(y[epoch_order("sqrt", y, torch.Generator().manual_seed(5))].float().mean())
    expected = 200**0.5 / (200**0.5 + 3800**0.5)  # sqrt(n_c) of the draws per class
    assert abs(soft - expected) < 0.03 and 0.05 + 0.1 < soft < share - 0.1
    assert float(sample_weights("sample", y).sum()) == pytest.approx(1.0)
    with pytest.raises(BadInput, match="class_balance must be one of none, sample, sqrt"):
        epoch_order("oversample", y, torch.Generator())


def test_train_config_records_the_class_balance_and_rejects_others():
    config = TrainConfig(data="fraud", arch="mlp", class_balance="sample")
    assert config.to_dict()["class_balance"] == "sample"
    assert TrainConfig.from_dict(config.to_dict()) == config
    plain = TrainConfig(data="fraud", arch="mlp")
    assert "class_balance" not in plain.to_dict()  # runs from before the option still resume
    with pytest.raises(BadInput, match="class_balance must be one of none, sample, sqrt, got 'x'"):
        TrainConfig(data="fraud", arch="mlp", class_balance="x")
