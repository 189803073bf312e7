"""Transformer text models: `--model hf:DIR` (a tiny BERT saved in the test), the built-in
MiniLM filter (`builtin:minilm`, head trained on a subset here) and gradient-guided word
ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adversa.cli.main import main
from adversa.errors import BadInput, ModelLoadError
from adversa.jobs.text import text_victim
from adversa.text import get_text_attack, load_text_data, run_text_attack
from adversa.text.data import tokenize, words
from adversa.text.hf import HFTextClassifier, load_hf_text_model
from adversa.text.minilm import (
    MiniLMClassifier,
    MiniLMTrainConfig,
    load_minilm_victim,
    train_minilm_classifier,
)

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
N_CLI = 6  # test texts attacked through the CLI
STEPS = 30  # training steps of the tiny BERT


def _tiny_bert(folder: Path, *, safe: bool = True, head: bool = True, fit: bool = False) -> Path:
    """A 2-layer, 32-wide BERT classifier with a WordPiece vocabulary of the 300 most frequent
    review words (`fit`: trained a little; seeded), saved as `save_pretrained` does (or as pickle
    weights, or without its classification head)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    split = load_text_data("movie-reviews")
    texts = split.train_texts[:1000]
    counts: dict[str, int] = {}
    for token in (t for text in texts for t in tokenize(text) if t.isalpha()):
        counts[token] = counts.get(token, 0) + 1
    vocab = SPECIAL + sorted(counts, key=lambda w: (-counts[w], w))[:300]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = (BertForSequenceClassification if head else BertModel)(config)
    if fit:  # full-batch steps on 128 reviews of each class: weak, but not constant
        labels = split.train_labels[:1000]
        rows = torch.cat([torch.nonzero(labels == c).flatten()[:128] for c in (0, 1)])
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
        batch = tokenizer(
            [texts[i] for i in rows.tolist()],
            padding=True,
            truncation=True,
            max_length=32,
            return_tensors="pt",
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(STEPS):
            opt.zero_grad()
            model(**batch, labels=labels[rows]).loss.backward()
            opt.step()
    model.eval()
    if safe:
        model.save_pretrained(folder, safe_serialization=True)
    else:
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_bert(tmp_path_factory.mktemp("hf") / "tiny", fit=True)


@pytest.fixture(scope="module")
def pickle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_bert(tmp_path_factory.mktemp("hf") / "pickled", safe=False)


@pytest.fixture(scope="module")
def minilm_small() -> MiniLMClassifier:
    split = load_text_data("movie-reviews")
    config = MiniLMTrainConfig(max_train=400)
    return train_minilm_classifier(split.train_texts, split.train_labels, config)


def test_hf_directory_loads_and_scores(tiny_dir: Path) -> None:
    model = load_hf_text_model(tiny_dir)
    assert isinstance(model, HFTextClassifier) and model.num_classes == 2
    texts = load_text_data("movie-reviews").test_texts[:40]
    proba = model.predict_proba(texts)
    assert proba.shape == (40, 2) and torch.allclose(proba.sum(1), torch.ones(40))
    # Length-sorted batching gives each text the probabilities it gets alone.
    alone = torch.cat([model.predict_proba([t]) for t in texts[:5]])
    assert torch.allclose(proba[:5], alone, atol=1e-5)
    assert 0 < int(proba.argmax(1).sum()) < 40  # not a constant classifier


def test_word_gradients_match_autograd_per_word(tiny_dir: Path) -> None:
    model = load_hf_text_model(tiny_dir)
    texts = ["the film is good and the story is bad", "a great movie"]
    labels = torch.tensor([1, 0])
    spans = [words(t) for t in texts]
    got = model.word_gradients(texts, labels, spans)
    for text, label, norms in zip(texts, labels, got, strict=True):
        enc = model.tokenizer([text], return_tensors="pt")
        embeds = model.embedding(enc["input_ids"]).detach().requires_grad_(True)
        logits = model.model(inputs_embeds=embeds, attention_mask=enc["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits, label[None])
        (grad,) = torch.autograd.grad(loss, embeds)
        token_sq = grad[0].pow(2).sum(-1)
        ids = enc.word_ids(0)  # the tokenizer's own word index per token
        expected = torch.zeros(len(norms))
        for t, w in enumerate(ids):
            if w is not None:
                expected[w] += token_sq[t]
        assert len(norms) == len(words(text))
        assert torch.allclose(norms, expected.sqrt(), rtol=1e-4, atol=1e-9)
        assert bool((norms > 0).all())


def test_cli_attacks_an_hf_directory_with_gradient_ranking(tiny_dir, tmp_path, capsys) -> None:
    base = ["text-attack", "--model", f"hf:{tiny_dir}", "--n", str(N_CLI)]
    runs = {}
    for ranking in ("queries", "gradient"):
        out = tmp_path / ranking
        args = [*base, "--attacks", "deepwordbug", "--ranking", ranking, "--out", str(out)]
        assert main(args) == 0
        runs[ranking] = json.loads((out / "report.json").read_text())["attacks"][0]
    assert "gradient ranking" in capsys.readouterr().out
    queries, gradient = runs["queries"], runs["gradient"]
    assert queries["n_attacked"] == gradient["n_attacked"] >= 1
    assert queries["mean_gradients"] == 0 and gradient["mean_gradients"] == 1
    assert gradient["config"]["ranking"] == "gradient"
    # replace-one scoring costs one query per word; the gradient run saves exactly those.
    split = load_text_data("movie-reviews")
    texts, labels = split.test_texts[:N_CLI], split.test_labels[:N_CLI]
    model = load_hf_text_model(tiny_dir)
    attacked = model.predict(texts) == labels
    n_words = torch.tensor([len(words(t)) for t in texts], dtype=torch.float32)
    assert gradient["mean_queries_saved"] == pytest.approx(float(n_words[attacked].mean()))


def test_pickle_weights_need_trust(pickle_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["text-attack", "--model", f"hf:{pickle_dir}", "--n", "3", "--attacks", "pwws"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pytorch_model.bin" in err and "--trust-model-file" in err
    assert not (tmp_path / "a" / "report.json").exists()
    trusted = load_hf_text_model(pickle_dir, trust_model_file=True)
    safe = load_hf_text_model(_tiny_bert(tmp_path / "same-as-safetensors"), trust_model_file=False)
    texts = ["a good film", "the story is bad"]
    assert torch.allclose(trusted.predict_proba(texts), safe.predict_proba(texts))


def test_bad_hf_directories_are_one_line_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(BadInput, match="expected a directory written by save_pretrained"):
        load_hf_text_model(tmp_path / "missing")
    headless = _tiny_bert(tmp_path / "headless", head=False)
    with pytest.raises(ModelLoadError, match="no trained classification head"):
        load_hf_text_model(headless)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((headless / "config.json").read_text())
    with pytest.raises(BadInput, match=r"no weights \(expected model\.safetensors"):
        load_hf_text_model(empty)
    out = str(tmp_path / "o")
    assert main(["text-attack", "--model", f"hf:{headless}", "--n", "2", "--out", out]) == 2
    assert main(["text-attack", "--model", "builtin:minilnm", "--n", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "no trained classification head" in err and "did you mean 'minilm'" in err
    with pytest.raises(BadInput, match="ranking must be one of"):
        get_text_attack("pwws", ranking="grad")
    # the bag of words exposes no gradients: gradient ranking is refused by name
    args = ["text-attack", "--ranking", "gradient", "--n", "2", "--attacks", "pwws"]
    assert main([*args, "--out", out]) == 2
    assert "--ranking gradient needs a model that exposes gradients" in capsys.readouterr().err
    bow = text_victim("movie-reviews", load_text_data("movie-reviews"))
    with pytest.raises(BadInput, match="ranking='gradient' needs a model that exposes"):
        texts = ["a fine and moving film"]  # labelled as predicted, so it is attacked
        run_text_attack(get_text_attack("pwws", ranking="gradient"), bow, texts, bow.predict(texts))


def test_minilm_filter_learns_and_caches(minilm_small, tmp_path, monkeypatch) -> None:
    split = load_text_data("movie-reviews")
    texts, labels = split.test_texts[:150], split.test_labels[:150]
    acc = float((minilm_small.predict(texts) == labels).float().mean())
    assert acc >= 0.68  # a linear head on 400 frozen MiniLM embeddings; chance is 0.5
    config = MiniLMTrainConfig(max_train=40, epochs=50)
    first = load_minilm_victim(config, cache_dir=tmp_path)
    (cached,) = (tmp_path / "text").glob("movie-reviews-minilm-*.pt")

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr("adversa.text.minilm.train_minilm_classifier", no_training)
    again = load_minilm_victim(config, cache_dir=tmp_path)
    assert torch.equal(again.predict_proba(texts[:8]), first.predict_proba(texts[:8]))
    assert cached.stat().st_size < 10_000  # the head only; the encoder is the package's


def test_gradient_ranking_saves_queries_on_minilm(minilm_small) -> None:
    split = load_text_data("movie-reviews")
    texts, labels = split.test_texts[:10], split.test_labels[:10]
    results = {
        r: run_text_attack(get_text_attack("deepwordbug", ranking=r), minilm_small, texts, labels)
        for r in ("queries", "gradient")
    }
    queries, gradient = results["queries"], results["gradient"]
    assert torch.equal(queries.attacked, gradient.attacked) and int(queries.attacked.sum()) >= 5
    a = queries.attacked
    assert bool((gradient.gradients[a] == 1).all()) and int(queries.gradients.sum()) == 0
    # the ranking queries are gone: fewer queries, by at least half the words saved
    saved = gradient.queries_saved[a].float()
    assert float(gradient.queries[a].float().mean()) < float(queries.queries[a].float().mean())
    assert float(saved.mean()) >= 5
    # and the gradient order is not worse than chance: it still flips most attacked texts
    assert gradient.summary()["success_rate"] >= 0.5


def test_cli_builtin_minilm(minilm_small, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("adversa.jobs.text.load_minilm_victim", lambda data: minilm_small)
    out = tmp_path / "run"
    args = ["text-attack", "--model", "builtin:minilm", "--attacks", "deepwordbug", "--n", "4"]
    assert main([*args, "--ranking", "gradient", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["model"] == "builtin:minilm"
    assert report["attacks"][0]["mean_gradients"] == 1
