"""`adversa text-attack` on a user's .csv and on a scikit-learn text pipeline (joblib)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import joblib
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from adversa.cli.main import main
from adversa.errors import BadInput
from adversa.text.data import load_text_data, read_movie_reviews


@pytest.fixture(scope="module")
def review_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, labels = read_movie_reviews()
    path = tmp_path_factory.mktemp("csv") / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "verdict"])
        for text, label in zip(texts[:1500], labels[:1500].tolist(), strict=True):
            writer.writerow([text, "pos" if label else "neg"])
    return path


@pytest.fixture(scope="module")
def pipeline_file(review_csv: Path) -> Path:
    split = load_text_data(str(review_csv), text_column="review", label_column="verdict")
    pipe = make_pipeline(CountVectorizer(), LogisticRegression(max_iter=1000))
    pipe.fit(split.train_texts, split.train_labels.numpy())
    path = review_csv.parent / "pipe.joblib"
    joblib.dump(pipe, path)
    return path


def test_csv_labels_become_sorted_classes(review_csv: Path) -> None:
    split = load_text_data(str(review_csv), text_column="review", label_column="verdict")
    assert split.class_names == ("neg", "pos")
    assert len(split.train_texts) + len(split.test_texts) == 1500
    assert 0.3 < float(split.test_labels.float().mean()) < 0.7  # stratified, both classes
    with pytest.raises(BadInput, match=r"no column 'text' \(--text-column\)"):
        load_text_data(str(review_csv))


def test_sklearn_pipeline_attacked_through_the_cli(review_csv, pipeline_file, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["text-attack", "--data", str(review_csv), "--text-column", "review"]
    args += ["--label-column", "verdict", "--attacks", "pwws", "--n", "40"]
    args += ["--model", f"sklearn:{pipeline_file}", "--out", str(out)]
    assert main([*args, "--trust-model-file"]) == 0
    report = json.loads((out / "report.json").read_text())
    (pwws,) = report["attacks"]
    # measured 0.57 (16 of 28 correctly classified texts); >= 0.4 leaves margin
    assert pwws["n_attacked"] >= 15 and pwws["success_rate"] >= 0.4, pwws
    assert pwws["mean_similarity"] >= 0.8


def test_untrusted_or_unfit_models_exit_2(review_csv, pipeline_file, tmp_path, capsys) -> None:
    base = ["text-attack", "--data", str(review_csv), "--text-column", "review"]
    base += ["--label-column", "verdict", "--n", "5", "--out", str(tmp_path / "o")]
    assert main([*base, "--model", f"sklearn:{pipeline_file}"]) == 2
    assert "--trust-model-file" in capsys.readouterr().err
    vectorizer = tmp_path / "vec.joblib"
    joblib.dump(CountVectorizer(), vectorizer)
    assert main([*base, "--model", f"sklearn:{vectorizer}", "--trust-model-file"]) == 2
    assert "predict_proba" in capsys.readouterr().err
    model = ["--model", f"sklearn:{pipeline_file}", "--trust-model-file"]
    assert main([*base, *model, "--augment", "10"]) == 2
    assert "cannot retrain or save" in capsys.readouterr().err
