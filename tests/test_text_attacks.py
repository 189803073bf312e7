"""DeepWordBug and PWWS against the bag-of-words filter, with MiniLM similarity (loaded once
per session, offline), the report, the CLI and the augmentation defense."""

from __future__ import annotations

import json

import pytest
import torch

from adversa.text import (
    get_text_attack,
    load_text_data,
    run_text_attack,
    train_text_classifier,
)
from adversa.text.data import STOP_WORDS
from adversa.text.defense import evaluate_augmentation
from adversa.text.report import text_report, write_text_report

N = 60  # test texts attacked per attack (about 42 classified correctly)
# Measured on these 60 texts (45 correct): PWWS flips 82 %, DeepWordBug 56 % of them.
MIN_SUCCESS = {"pwws": 0.6, "deepwordbug": 0.35}


@pytest.fixture(scope="session")
def minilm():
    from adversa.text.similarity import sentence_encoder

    return sentence_encoder()  # cached for the process: every later call is warm


@pytest.fixture(scope="session")
def movie_split():
    return load_text_data("movie-reviews", seed=0)


@pytest.fixture(scope="session")
def movie_victim(movie_split):
    return train_text_classifier(movie_split.train_texts, movie_split.train_labels)


@pytest.fixture(scope="session")
def attack_results(minilm, movie_split, movie_victim):
    texts, labels = movie_split.test_texts[:N], movie_split.test_labels[:N]
    return {
        name: run_text_attack(get_text_attack(name), movie_victim, texts, labels)
        for name in ("pwws", "deepwordbug")
    }


@pytest.mark.parametrize("name", ["pwws", "deepwordbug"])
def test_attack_flips_correct_predictions_within_constraints(attack_results, name) -> None:
    result = attack_results[name]
    attack = get_text_attack(name)
    summary = result.summary()
    assert summary["n_attacked"] >= 30
    assert summary["success_rate"] >= MIN_SUCCESS[name]
    ok = result.success
    assert bool((result.similarity[ok] >= attack.min_similarity).all())
    assert bool((result.words_changed[ok] <= attack.max_change).all())
    assert bool((result.adv_pred[ok] != result.labels[ok]).all())
    assert not bool((result.success & ~result.attacked).any())  # only correct ones attacked
    assert bool((result.queries[result.attacked] > 1).all())
    for i in torch.nonzero(ok).flatten().tolist():
        assert result.adv_texts[i] != result.texts[i]
        for start, end, new in result.changes[i]:
            old = result.texts[i][start:end]
            assert old.lower() not in STOP_WORDS and new != old
    # A failed example is either unflipped or outside a constraint, never miscounted.
    failed = result.attacked & ~ok
    flipped = result.adv_pred != result.labels
    within = (result.similarity >= attack.min_similarity) & (
        result.words_changed <= attack.max_change
    )
    assert not bool((failed & flipped & within).any())


def test_pwws_substitutes_wordnet_synonyms(attack_results) -> None:
    from adversa.text.wordnet import get_wordnet

    result = attack_results["pwws"]
    wordnet = get_wordnet()
    for i in torch.nonzero(result.success).flatten().tolist()[:10]:
        for start, end, new in result.changes[i]:
            old = result.texts[i][start:end]
            assert new.lower() in wordnet.synonyms(old.lower())


def test_stricter_similarity_and_seed(minilm, movie_split, movie_victim) -> None:
    texts, labels = movie_split.test_texts[:16], movie_split.test_labels[:16]
    strict = get_text_attack("deepwordbug", min_similarity=0.9, seed=3, check_all=False)
    first = run_text_attack(strict, movie_victim, texts, labels)
    again = run_text_attack(strict, movie_victim, texts, labels)
    assert first.adv_texts == again.adv_texts  # same seed, same edits
    assert torch.equal(first.queries, again.queries)
    assert bool((first.similarity[first.success] >= 0.9).all())


def test_any_predict_proba_model_is_attacked(minilm, movie_split) -> None:
    """A scikit-learn pipeline on raw strings (not PyTorch, numpy output) is a text model."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(CountVectorizer(min_df=2), LogisticRegression(max_iter=500))
    pipeline.fit(movie_split.train_texts, movie_split.train_labels.numpy())
    texts, labels = movie_split.test_texts[:25], movie_split.test_labels[:25]
    result = run_text_attack(get_text_attack("pwws"), pipeline, texts, labels)
    assert result.summary()["success_rate"] >= 0.4  # measured 0.68 (13 of 19)
    assert bool((result.similarity[result.success] >= 0.8).all())


def test_report_marks_changes(attack_results, tmp_path) -> None:
    results = list(attack_results.values())
    report = text_report(
        results,
        config={"model": "bow", "data": "movie-reviews", "n": N},
        class_names=("rotten", "fresh"),
    )
    json_path, html_path = write_text_report(tmp_path, report)
    data = json.loads(json_path.read_text())
    assert [a["name"] for a in data["attacks"]] == ["pwws", "deepwordbug"]
    for entry, result in zip(data["attacks"], results, strict=True):
        assert entry["success_rate"] == pytest.approx(result.summary()["success_rate"])
        assert entry["examples"] and entry["examples"][0]["changes"]
    html = html_path.read_text()
    assert html.count("<del>") >= 2 and "<ins>" in html and "<script" not in html


def test_cli_text_attack(minilm, tmp_path, capsys) -> None:
    from adversa.cli.main import main

    out = tmp_path / "run"
    code = main(["text-attack", "--attacks", "pwws", "--n", "12", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    assert data["attacks"][0]["name"] == "pwws" and data["config"]["n"] == 12
    assert (out / "report.html").exists()
    assert "pwws" in capsys.readouterr().out
    assert (
        main(["text-attack", "--attacks", "pwws", "--min-similarity", "2", "--out", str(out)]) == 2
    )
    assert main(["text-attack", "--attacks", "pwwz", "--out", str(out)]) == 2


def test_augmentation_defense(minilm, movie_split, movie_victim) -> None:
    attacks = [get_text_attack("pwws")]
    result = evaluate_augmentation(
        movie_victim, movie_split, attacks, n_eval=12, n_augment=32, seed=0
    )
    assert len(result.added_texts) >= 16  # most of the 32 training texts are flipped
    # Every added text fooled the original model, keeps its true label, and is learnt.
    fooled = movie_victim.predict_proba(result.added_texts).argmax(1)
    assert bool((fooled != result.added_labels).all())
    learnt = result.model.predict_proba(result.added_texts).argmax(1)
    assert float((learnt == result.added_labels).float().mean()) >= 0.9
    assert result.clean_accuracy_after >= result.clean_accuracy_before - 0.03
    summary = result.summary()
    assert summary["attacks"][0]["name"] == "pwws" and summary["n_added"] == len(result.added_texts)
