"""scikit-learn models as adversa query views: black-box and transfer attacks, loading.

Measured on the first 60 breast-cancer test points, linf eps=0.1 (one CPU thread):
clean accuracy -> robust accuracy after square (300 queries, p_init 0.3) / hsj (1000 queries)
RandomForest 0.97 -> 0.43 / 0.57, HistGradientBoosting 0.95 -> 0.33 / 0.52,
LogisticRegression 0.95 -> 0.30 / 0.32. Transfer from a distilled MLP + PGD at eps=0.2:
0.97 -> 0.68 (RF). The margins asserted below leave headroom under those numbers.
"""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from adversa import ThreatModel, get_attack
from adversa.cli.main import main
from adversa.data import load_data
from adversa.errors import AccessError, BadInput
from adversa.load import load_model
from adversa.model import Access
from adversa.tabular import SklearnModel, fit_surrogate, load_sklearn

N = 60
ESTIMATORS = {
    "random-forest": lambda: RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0),
    "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(max_iter=50, random_state=0),
    "logistic-regression": lambda: LogisticRegression(C=10, max_iter=2000),
}


@pytest.fixture(scope="module")
def data():
    train, test = load_data("breast-cancer", split="train"), load_data("breast-cancer")
    return train, test.x[:N], test.y[:N]


@pytest.fixture(scope="module")
def fitted(data):
    train = data[0]
    return {name: make().fit(train.x.numpy(), train.y.numpy()) for name, make in ESTIMATORS.items()}


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean())


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_square_and_hsj_lower_accuracy(data, fitted, name):
    _, x, y = data
    model = SklearnModel(fitted[name])
    clean = accuracy(model.predict(x), y)
    assert clean >= 0.9
    threat = ThreatModel(norm="linf", eps=0.1)
    square = get_attack("square", threat, queries=300, p_init=0.3)(model, x, y)
    hsj = get_attack("hsj", threat, max_queries=1000)(model, x, y)
    assert clean - accuracy(square.pred, y) >= 0.3
    assert clean - accuracy(hsj.pred, y) >= 0.2
    for result, budget in ((square, 300), (hsj, 1000)):
        assert result.cost.backward == 0
        assert 0 < result.cost.queries <= N * budget
        assert bool(threat.contains(result.x_adv, x).all())
        assert result.x_adv.dtype == x.dtype


def test_sklearn_model_refuses_gradients(data, fitted):
    _, x, y = data
    model = SklearnModel(fitted["random-forest"])
    with pytest.raises(AccessError, match="needs gradient access"):
        get_attack("pgd", ThreatModel(norm="linf", eps=0.1))(model, x, y)
    with pytest.raises(AccessError, match="not differentiable"):
        model(x.clone().requires_grad_(True))
    assert model.access == Access.SCORES
    assert model.view(Access.LABELS).access == Access.LABELS  # views keep their own access


def test_labels_only_estimator(data, fitted):
    _, x, y = data
    model = SklearnModel(fitted["random-forest"], access="labels")
    threat = ThreatModel(norm="linf", eps=0.1)
    with pytest.raises(AccessError, match="needs scores access"):
        get_attack("square", threat, queries=10)(model, x, y)
    result = get_attack("hsj", threat, max_queries=1000)(model, x, y)
    assert accuracy(model.predict(x), y) - accuracy(result.pred, y) >= 0.2
    assert result.cost.backward == 0


def test_predict_only_estimator_is_labels_only(data, fitted):
    class PredictOnly:
        def __init__(self, inner):
            self.inner, self.classes_ = inner, inner.classes_

        def predict(self, x):
            return self.inner.predict(x)

    model = SklearnModel(PredictOnly(fitted["logistic-regression"]))
    assert model.access.name == "LABELS"
    with pytest.raises(BadInput, match="needs predict_proba"):
        SklearnModel(PredictOnly(fitted["logistic-regression"]), access="scores")


def test_bad_estimators():
    with pytest.raises(BadInput, match="predict_proba or predict"):
        SklearnModel(object())
    with pytest.raises(BadInput, match="fit it"):
        SklearnModel(LogisticRegression())
    est = LogisticRegression().fit(np.eye(2), np.array([3, 7]))
    with pytest.raises(BadInput, match=r"0\.\.C-1"):
        SklearnModel(est)


def test_transfer_from_distilled_surrogate(data, fitted):
    train, x, y = data
    target = SklearnModel(fitted["random-forest"])
    surrogate = fit_surrogate(target, train.x, seed=0)
    assert accuracy(surrogate.predict(x), target.predict(x)) >= 0.85
    threat = ThreatModel(norm="linf", eps=0.2)
    result = get_attack("transfer", threat, surrogate=surrogate, attack="pgd")(target, x, y)
    assert accuracy(target.predict(x), y) - accuracy(result.pred, y) >= 0.15
    assert result.cost.backward > 0  # the surrogate's, counted in the attack's cost
    assert bool(threat.contains(result.x_adv, x).all())


def test_load_requires_trust(tmp_path, fitted):
    path = tmp_path / "rf.joblib"
    joblib.dump(fitted["random-forest"], path)
    with pytest.raises(BadInput, match="trust"):
        load_sklearn(path)
    with pytest.raises(BadInput, match="--trust-model-file"):
        load_model(f"sklearn:{path}")
    model = load_model(f"sklearn:{path}", trust_model_file=True)
    assert isinstance(model, SklearnModel) and model.num_classes == 2


def test_cli_refuses_joblib_without_flag(tmp_path, fitted, capsys):
    path = tmp_path / "lr.joblib"
    joblib.dump(fitted["logistic-regression"], path)  # fast queries
    args = ["evaluate", "--model", f"sklearn:{path}", "--data", "breast-cancer"]
    args += ["--norm", "linf", "--eps", "0.1", "--attacks", "square", "--n", "4"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "--trust-model-file" in err
    assert not (tmp_path / "a" / "report.json").exists()
    assert main([*args, "--trust-model-file", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "report.json").exists()


def test_cli_defaults_to_black_box_attacks_for_sklearn(tmp_path, fitted):
    path = tmp_path / "lr.joblib"
    joblib.dump(fitted["logistic-regression"], path)
    args = ["evaluate", "--model", f"sklearn:{path}", "--trust-model-file", "--data"]
    args += ["breast-cancer", "--norm", "linf", "--eps", "0.1", "--n", "8", "--out", str(tmp_path)]
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [a["name"] for a in report["attacks"]] == ["square", "hsj"]
    assert all(a["backward_calls"] == 0 for a in report["attacks"])
