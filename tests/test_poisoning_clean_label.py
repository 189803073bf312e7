"""Clean-label poisons: the label-consistent backdoor (Turner et al. 2019) on a 2000-image
MNIST subset, and feature collision (Shafahi et al. 2018) and gradient matching (Geiping et
al. 2021) in a transfer-learning setting: a small CNN trained on clean data is frozen and the
victim retrains only its last layer on the poisoned set, from scratch or (fine-tuning) from
the surrogate's head. Ten seeded trials each pick a correctly classified test instance and a
random other class to push it into."""

from __future__ import annotations

import pytest
import torch

from adversa.data import load_data
from adversa.errors import BadInput
from adversa.poisoning import POISONS, attack_success_rate
from adversa.poisoning.base import predict_labels
from adversa.poisoning.detect import last_linear, penultimate_features
from adversa.poisoning.surrogate import fit_classifier, fit_linear_head

TRIALS = 10


@pytest.fixture(scope="module")
def mnist():
    return load_data("mnist", split="train").take(2000), load_data("mnist", split="test")


@pytest.fixture(scope="module")
def extractor(mnist):
    train, _ = mnist
    return fit_classifier(train.x, train.y, 10, seed=0)


def accuracy(net, x, y) -> float:
    return float((predict_labels(net, x) == y).float().mean())


def test_clean_label_backdoor_needs_its_perturbation(mnist, extractor):
    train, test = mnist
    attack = POISONS.get("clean-label", rate=0.05, target_class=0, model=extractor)
    poisoned = attack(train, seed=0)
    assert torch.equal(poisoned.y, train.y)  # labels untouched
    assert bool((train.y[poisoned.poisoned_idx] == 0).all())
    delta = (poisoned.x - train.x)[poisoned.poisoned_idx] * (1 - poisoned.trigger.mask)
    assert float(delta.flatten(1).norm(dim=1).max()) <= 4.0 + 1e-4  # inside the L2 ball
    net = fit_classifier(poisoned.x, poisoned.y, 10, seed=1)
    asr = attack_success_rate(net, test.x, test.y, poisoned.trigger, 0)
    plain = POISONS.get("clean-label", rate=0.05, target_class=0, model=extractor, eps=0.0)
    p0 = plain(train, seed=0)
    asr_plain = attack_success_rate(
        fit_classifier(p0.x, p0.y, 10, seed=1), test.x, test.y, p0.trigger, 0
    )
    # measured: ASR 0.71 with the perturbation, 0.14 with the trigger alone (eps 0); clean
    # accuracy 0.914 against 0.926 for the clean model (same recipe, another seed)
    assert asr >= 0.45, asr
    assert asr >= asr_plain + 0.25, (asr, asr_plain)
    assert accuracy(net, test.x, test.y) >= accuracy(extractor, test.x, test.y) - 0.03


def test_clean_label_is_seeded_and_trains_its_own_surrogate(mnist):
    train, _ = mnist
    small = train.take(600)
    attack = POISONS.get("clean-label", rate=0.05, steps=5, surrogate_epochs=1)
    a, b = attack(small, seed=3), attack(small, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.poisoned_idx, b.poisoned_idx)
    assert a.poisoned_idx.numel() == 30 and float(a.x.min()) >= 0 and float(a.x.max()) <= 1


def trials(test, extractor):
    """(index, true class, adversarial class) of TRIALS seeded targets."""
    pred = predict_labels(extractor, test.x)
    candidates = torch.nonzero(pred == test.y).flatten()
    out = []
    for trial in range(TRIALS):
        gen = torch.Generator().manual_seed(100 + trial)
        i = int(candidates[torch.randint(len(candidates), (1,), generator=gen)])
        source = int(test.y[i])
        out.append((i, source, (source + 1 + int(torch.randint(9, (1,), generator=gen))) % 10))
    return out


HEAD = {"steps": 150, "lr": 2e-2}  # the victim's retraining of its last layer


def fit_head(extractor, feats, y, seed, finetune):
    init = last_linear(extractor) if finetune else None
    return fit_linear_head(feats, y, 10, seed=seed, init=init, **HEAD)


@torch.no_grad()
def head_accuracy(head, feats, y) -> float:
    return float((head(feats).argmax(1) == y).float().mean())


@pytest.mark.parametrize(
    ("name", "options", "min_hits"),
    [
        # measured 9/10 (head from scratch); the paper's single-poison transfer setting reaches
        # 100% on InceptionV3, here 20 poisons among 2000 images
        ("feature-collision", {"n_poisons": 20, "steps": 300}, {"scratch": 7}),
        # 40 poisons (2% of the data) within Linf 0.3, default draws (the surrogate's head and
        # 4 x 6 early snapshots of retrained heads) and gradient-norm bases: measured 9/10
        # from scratch and 9/10 fine-tuned (19/20 and 18/20 over 20 targets); matching at the
        # surrogate's head alone with random bases moved 2/10 and 7/10
        (
            "gradient-matching",
            {"n_poisons": 40, "eps": 0.3, "steps": 100, "restarts": 1},
            {"scratch": 7, "finetune": 7},
        ),
    ],
)
def test_targeted_poisons_in_transfer_learning(mnist, extractor, name, options, min_hits):
    train, test = mnist
    clean_feats = penultimate_features(extractor, train.x)
    test_feats = penultimate_features(extractor, test.x)
    victims = {v: v == "finetune" for v in min_hits}
    clean_heads = {v: fit_head(extractor, clean_feats, train.y, 0, ft) for v, ft in victims.items()}
    base_acc = {v: head_accuracy(h, test_feats, test.y) for v, h in clean_heads.items()}
    hits, accs = dict.fromkeys(victims, 0), {v: [] for v in victims}
    for trial, (index, source, adversarial) in enumerate(trials(test, extractor)):
        for head in clean_heads.values():  # no poison: the target keeps its class
            assert int(head(test_feats[index : index + 1]).argmax()) == source
        attack = POISONS.get(
            name, model=extractor, target_x=test.x[index], target_class=adversarial, **options
        )
        poisoned = attack(train, seed=trial)
        idx = poisoned.poisoned_idx
        assert torch.equal(poisoned.y, train.y) and idx.numel() == options["n_poisons"]
        assert bool((train.y[idx] == adversarial).all())
        if name == "gradient-matching":
            assert float((poisoned.x - train.x).abs().amax()) <= options["eps"] + 1e-5
        feats = clean_feats.clone()
        feats[idx] = penultimate_features(extractor, poisoned.x[idx])
        for victim, finetune in victims.items():
            head = fit_head(extractor, feats, poisoned.y, trial, finetune)
            hits[victim] += int(head(test_feats[index : index + 1]).argmax()) == adversarial
            accs[victim].append(head_accuracy(head, test_feats, test.y))
    for victim, bound in min_hits.items():
        assert hits[victim] >= bound, (name, victim, hits)
        # measured: worst trial 2.1 points (gradient matching from scratch), mean 1.0
        assert min(accs[victim]) >= base_acc[victim] - 0.035, (victim, accs, base_acc)


def test_targeted_poison_bad_input(mnist, extractor):
    train, test = mnist
    with pytest.raises(BadInput, match="target_x"):
        POISONS.get("feature-collision", model=extractor)(train)
    with pytest.raises(BadInput, match="feature extractor"):
        POISONS.get("feature-collision", target_x=test.x[0])(train)
    with pytest.raises(BadInput, match="n_poisons 5000 exceeds"):
        POISONS.get("gradient-matching", model=extractor, target_x=test.x[0], n_poisons=5000)(train)
    with pytest.raises(BadInput, match="eps must be > 0"):
        POISONS.get("gradient-matching", eps=0.0)
    with pytest.raises(BadInput, match="bases must be one of"):
        POISONS.get("gradient-matching", bases="loss")
    with pytest.raises(BadInput, match="snapshots >= 1"):
        POISONS.get("gradient-matching", snapshots=0)
    with pytest.raises(BadInput, match="surrogate_head=False needs ensemble"):
        POISONS.get("gradient-matching", ensemble=0, surrogate_head=False)
    with pytest.raises(BadInput, match="norm must be"):
        POISONS.get("clean-label", norm="l1")
    with pytest.raises(BadInput, match="class 0 has only"):
        POISONS.get("clean-label", rate=0.5, model=extractor)(train)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("feature-collision", {}),
        ("gradient-matching", {"bases": "random"}),
        ("gradient-matching", {}),  # bases by gradient norm: only the random starts vary
        ("gradient-matching", {"params": "all", "ensemble": 1, "snapshots": 2, "restarts": 2}),
    ],
)
def test_targeted_poisons_are_seeded(mnist, extractor, name, options):
    train, test = mnist
    small = train.take(300)
    attack = POISONS.get(
        name, model=extractor, target_x=test.x[0], target_class=1, steps=3, **options
    )
    a, b, c = attack(small, seed=5), attack(small, seed=5), attack(small, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.poisoned_idx, b.poisoned_idx)
    assert not torch.equal(a.x, c.x)
    if options.get("bases", "random" if name == "feature-collision" else "gradient-norm") == (
        "random"
    ):
        assert not torch.equal(a.poisoned_idx, c.poisoned_idx)
    assert a.x.dtype == small.x.dtype and float(a.x.min()) >= 0 and float(a.x.max()) <= 1
    untouched = ~a.mask
    assert torch.equal(a.x[untouched], small.x[untouched])
