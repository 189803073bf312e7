"""(De)randomized smoothing against patches (Levine & Feizi 2020): the certificate's
arithmetic (exact against brute force on small vote counts), the smoothed prediction's
invariance to any patch on certified points (and the locality it rests on), the patch attack
catching a wrong certificate, the training recipe, and `adversa certify --method
patch-smoothing` end to end and on bad input (exit 2, one line).

The model: a narrow SmallCNN on 2 channels behind column ablation with band 4, trained with
"patch-ablation" (one band per digit and step) for 8 epochs on 1,200 MNIST digits (about 3 s
on one thread); the zoo's `mnist-cnn-ablated` (band 2) takes minutes. Votes are checked both
ways: the base's argmax, and the paper's thresholded vote (softmax >= 0.2).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import refused

from adversa.certify import patch_smoothing
from adversa.certify.ablation import ablate, affected, num_positions, vote_tallies
from adversa.certify.patch_smoothing import (
    PatchAttack,
    PatchSmoothing,
    certified,
    certify_patches,
)
from adversa.cli.main import main
from adversa.data import load_data
from adversa.defenses import DEFENSES, StepContext
from adversa.errors import BadInput
from adversa.jobs.certify import CertifyPlan
from adversa.model import Model
from adversa.nets import build_arch
from adversa.rng import make_generator

BAND = 4
NET = f"""
from adversa.certify.ablation import AblatedClassifier
from adversa.nets.small import SmallCNN


def make():
    base = SmallCNN(2, 10, channels=(8, 16), hidden=64)
    return AblatedClassifier(base, in_channels=1, size=(28, 28), ablation="column", band={BAND})
"""


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """The factory's network, trained by the "patch-ablation" recipe (a random band per
    digit and step)."""
    data = load_data("mnist", split="train").take(1200)
    namespace: dict = {}
    exec(compile(NET, "net.py", "exec"), namespace)  # the class the CLI will load
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = namespace["make"]()
    defense = DEFENSES.get("patch-ablation", views=1)  # the paper's one band per step: fast
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    step = 0
    for epoch in range(8):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
        for first in range(0, len(data), 64):
            idx = order[first : first + 64]
            ctx = StepContext(step=step, total=152, epoch=epoch, seed=0, gen=make_generator(step))
            defense.train_batch(net, optimizer, data.x[idx], data.y[idx], ctx)
            step += 1
    return net.eval()


@pytest.fixture(scope="module")
def test_points() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_data("mnist", split="test").take(100)
    return data.x, data.y


# --------------------------------------------------------------------------- the arithmetic


def test_certificate_on_hand_made_votes() -> None:
    counts = torch.tensor([[10, 4, 0], [4, 10, 0], [9, 4, 1], [3, 3, 3], [0, 12, 5]])
    pred, ok = certified(counts, 3)
    assert pred.tolist() == [0, 1, 0, 0, 1]  # ties go to the smaller index
    # gap 6 = 2 * 3: certified when the runner-up has the larger index only
    assert ok.tolist() == [True, False, False, False, True]
    assert certified(counts, 0)[1].all()  # no change: the prediction stands, ties included
    assert certified(counts, 2)[1].tolist() == [True, True, True, False, True]
    assert affected("column", 2, (28, 28), 5) == 6
    assert affected("column", 2, (28, 28), 28) == 28  # wrapping: never more than W bands
    assert affected("block", 10, (28, 28), 5) == 14 * 14
    assert num_positions("column", (28, 28)) == 28 and num_positions("block", (4, 6)) == 24


def test_certificate_is_exact_against_brute_force() -> None:
    """A row is certified exactly when no reassignment of `delta` positions' votes changes
    the prediction (argmax, ties to the smaller index): sound and tight."""
    gen = torch.Generator().manual_seed(0)
    positions, classes = 7, 3
    for delta in (1, 2):
        votes = torch.randint(classes, (60, positions), generator=gen)
        votes[:20] = 0  # some unanimous rows, which are certified
        votes[20:30, : positions - delta] = 1
        counts = torch.nn.functional.one_hot(votes, classes).sum(1)
        _, ok = certified(counts, delta)
        for row, flag in zip(votes.tolist(), ok.tolist(), strict=True):
            base = torch.tensor(row).bincount(minlength=classes).argmax()
            changed = False
            for where in itertools.combinations(range(positions), delta):
                for labels in itertools.product(range(classes), repeat=delta):
                    new = list(row)
                    for w, label in zip(where, labels, strict=True):
                        new[w] = label
                    changed |= bool(torch.tensor(new).bincount(minlength=classes).argmax() != base)
            assert flag == (not changed), (row, delta)


def test_certificate_is_sound_for_thresholded_votes_by_brute_force() -> None:
    """Thresholded voting: each position votes for any subset of the classes. A row is
    certified only if no replacement of `delta` positions' vote vectors (every subset of
    the classes) changes the prediction; and some rows are certified."""
    gen = torch.Generator().manual_seed(0)
    positions, classes = 6, 3
    subsets = list(itertools.product((0, 1), repeat=classes))
    for delta in (1, 2):
        votes = torch.rand(80, positions, classes, generator=gen) < 0.3
        votes[:30, :, 0] = True  # class 0 favoured in some rows, so some are certified
        votes[:15, :, 1:] = False
        counts = votes.long().sum(1)
        _, ok = certified(counts, delta)
        assert int(ok.sum()) >= 10, delta
        for row, flag in zip(votes.long().tolist(), ok.tolist(), strict=True):
            base = int(torch.tensor(row).sum(0).argmax())
            changed = False
            for where in itertools.combinations(range(positions), delta):
                for vectors in itertools.product(subsets, repeat=delta):
                    new = [list(v) for v in row]
                    for w, vector in zip(where, vectors, strict=True):
                        new[w] = list(vector)
                    changed |= int(torch.tensor(new).sum(0).argmax()) != base
                    if changed:
                        break
                if changed:
                    break
            assert not (flag and changed), (row, delta)


def test_ablation_keeps_a_wrapping_band_and_encodes_the_rest_as_null() -> None:
    x = torch.rand(2, 1, 5, 6, generator=torch.Generator().manual_seed(0))
    out = ablate(x, torch.tensor([5, 0]), "column", 2)
    assert out.shape == (2, 2, 5, 6)
    kept = [[0, 5], [0, 1]]  # column 5 wraps around to column 0
    for i, cols in enumerate(kept):
        mask = torch.zeros(5, 6, dtype=torch.bool)
        mask[:, cols] = True
        assert torch.equal(out[i, 0][mask], x[i, 0][mask])
        assert torch.equal(out[i, 1][mask], 1 - x[i, 0][mask])
        assert bool((out[i][:, ~mask] == 0).all())
    corner = ablate(x[:1], torch.tensor([4 * 6 + 5]), "block", 2)  # block from (4, 5)
    where = sorted(map(tuple, torch.nonzero((corner[0, 0] + corner[0, 1]) > 0).tolist()))
    assert where == [(0, 0), (0, 5), (4, 0), (4, 5)]


def test_strip_base_reads_the_kept_band_at_its_position() -> None:
    """The strip architecture's base: its MLP sees exactly the b kept columns (wrapping
    around the right edge) and a one-hot of the band's first column."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_arch("ablated-strip-column2", (1, 28, 28), 10).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    starts = torch.tensor([0, 9, 26, 27])  # 27: columns 27 and 0
    cols = (starts[:, None] + torch.arange(2)) % 28
    strip = torch.stack([x[i, :, :, cols[i]] for i in range(4)])  # (4, 1, 28, 2)
    features = torch.cat([strip, 1 - strip], 1).flatten(1)
    expected = net.base.mlp(torch.cat([features, torch.nn.functional.one_hot(starts, 28)], 1))
    with torch.no_grad():
        got = net(ablate(x, starts, "column", 2))
    assert torch.allclose(got, expected.detach(), atol=1e-6)
    assert not torch.allclose(got[0], got[1])


def test_block_votes_move_only_where_a_patch_meets_the_block() -> None:
    """A random linear base on 12 x 12 images with 3 x 3 blocks (144 positions): random 2 x 2
    patches change at most (2 + 3 - 1)^2 = 16 positions' votes of each image, and do change
    some."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 2 * 144, generator=gen)
    base = lambda a: a.flatten(1) @ weight.T  # noqa: E731
    x = torch.rand(6, 1, 12, 12, generator=gen)
    p = num_positions("block", (12, 12))

    def votes(images: torch.Tensor) -> torch.Tensor:
        reps = images.repeat_interleave(p, 0)
        with torch.no_grad():
            out = base(ablate(reps, torch.arange(p).repeat(images.shape[0]), "block", 3))
        return out.argmax(1).view(images.shape[0], p)

    patched = x.clone()
    patched[:, :, 4:6, 7:9] = torch.rand(6, 1, 2, 2, generator=gen)
    moved = (votes(patched) != votes(x)).sum(1)
    assert int(moved.max()) <= affected("block", 3, (12, 12), 2) == 16
    assert int(moved.sum()) > 0


# ------------------------------------------------------------------- the smoothed classifier


def _per_position_votes(
    net: torch.nn.Module, x: torch.Tensor, threshold: float | None = None
) -> torch.Tensor:
    """(B, P, K) the base classifier's vote vector at each column band (one-hot argmax, or
    softmax >= threshold), the slow obvious way."""
    p = num_positions("column", (28, 28))
    reps = x.repeat_interleave(p, 0)
    with torch.no_grad():
        logits = net(ablate(reps, torch.arange(p).repeat(x.shape[0]), "column", BAND))
    if threshold is None:
        votes = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1])
    else:
        votes = (logits.softmax(1) >= threshold).long()
    return votes.view(x.shape[0], p, -1)


def test_votes_agree_with_the_plain_computation(trained, test_points) -> None:
    x, _ = test_points
    top1 = _per_position_votes(trained, x[:20]).sum(1)
    counts, _ = vote_tallies(trained, x[:20], "column", BAND, budget=100)  # several chunks
    assert torch.equal(counts, top1)
    votes, best = vote_tallies(trained, x[:20], "column", BAND, budget=100, threshold=0.2)
    assert torch.equal(best, top1)
    assert torch.equal(votes, _per_position_votes(trained, x[:20], 0.2).sum(1))
    assert int(votes.sum(1).max()) <= 5 * 28  # softmax >= 0.2: at most 5 classes per band
    assert bool((votes.sum(1) != 28).any())  # some bands vote for several classes or none


@pytest.mark.parametrize("threshold", [None, 0.2])
def test_random_patches_never_change_certified_predictions(trained, test_points, threshold) -> None:
    """Random m x m patches (noise, or pixels of another digit) at random places: at most
    m + b - 1 bands change their vote (argmax, or the set of classes over the threshold) for
    every point, and no certified point's smoothed prediction changes."""
    x, _ = test_points
    gen = torch.Generator().manual_seed(1)
    before = _per_position_votes(trained, x, threshold)
    counts = before.sum(1)
    changed_votes = 0
    for m in (1, 2, 4):
        delta = affected("column", BAND, (28, 28), m)
        pred, ok = certified(counts, delta)
        assert int(ok.sum()) >= 10, m  # the property is not vacuous
        for trial in range(2):
            rows = torch.randint(0, 28 - m + 1, (len(x),), generator=gen)
            cols = torch.randint(0, 28 - m + 1, (len(x),), generator=gen)
            r = torch.arange(28)
            inside = ((r[None, :] >= rows[:, None]) & (r[None, :] < rows[:, None] + m))[:, :, None]
            inside = (
                inside
                & ((r[None, :] >= cols[:, None]) & (r[None, :] < cols[:, None] + m))[:, None, :]
            )
            fill = torch.rand(x.shape, generator=gen) if trial == 0 else x.roll(1, 0)
            patched = torch.where(inside[:, None], fill, x)
            after = _per_position_votes(trained, patched, threshold)
            moved = (after != before).any(2).sum(1)
            changed_votes += int(moved.sum())
            assert int(moved.max()) <= delta, (m, int(moved.max()))
            new_pred = after.sum(1).argmax(1)
            assert torch.equal(new_pred[ok], pred[ok]), m
    assert changed_votes > 20  # the patches did move votes


def test_certified_accuracy_is_below_clean_and_falls_with_size(trained, test_points) -> None:
    x, y = test_points
    smoothing = PatchSmoothing(band=BAND, sizes=(1, 3, 5))
    result = certify_patches(Model(trained), x, y, smoothing)
    accuracies = [float(c.float().mean()) for c in result.certified]
    assert result.smoothed_accuracy >= accuracies[0] >= accuracies[1] >= accuracies[2]
    # measured (threshold 0.2): smoothed 0.79, certified 0.47 / 0.28 / 0.11, base 0.42
    assert result.smoothed_accuracy > 0.6 and accuracies[0] > 0.25
    assert 0.2 < result.base_accuracy < result.smoothed_accuracy
    assert torch.equal(result.certified_at(3), result.certified[1])


def test_patch_attack_catches_a_wrong_certificate(trained, test_points, monkeypatch) -> None:
    """With the number of touched bands under-counted as 0, every correct point counts as
    certified; the patch attack breaks some and each becomes a BUG warning. With the right
    count, the same attack breaks no certified point."""
    x, y = test_points[0][:24], test_points[1][:24]
    smoothing = PatchSmoothing(band=BAND, sizes=(6,))
    attack = PatchAttack(steps=10, grid=2, seed=0)
    honest = certify_patches(Model(trained), x, y, smoothing, attack=attack)
    assert honest.warnings == () and honest.violations(0).numel() == 0
    robust = honest.robust[0]
    assert int((honest.prediction == honest.y).sum()) > int(robust.sum())  # it breaks points
    monkeypatch.setattr(patch_smoothing, "affected", lambda *args: 0)
    wrong = certify_patches(Model(trained), x, y, smoothing, attack=attack)
    assert wrong.violations(0).numel() > 0
    assert len(wrong.warnings) == 1 and wrong.warnings[0].startswith("BUG: size=6")


def test_training_recipe_ablates_each_digit_at_several_positions() -> None:
    """views=3: the base classifier sees every digit of the batch at 3 positions drawn
    from the step's generator (not all the same), each a proper ablation of that digit."""
    net = build_arch("ablated-strip-column2", (1, 28, 28), 10)
    seen = []
    net.base.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(5)
    ctx = StepContext(step=0, total=1, epoch=0, seed=0, gen=make_generator(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    metrics = DEFENSES.get("patch-ablation", views=3).train_batch(net, opt, x, y, ctx)
    (images,) = seen
    assert images.shape == (15, 2, 28, 28) and 0 <= metrics.clean_correct <= 5
    kept = (images != 0).any(2).any(1)  # (15, 28) the kept columns
    starts = (kept & ~kept.roll(1, 1)).float().argmax(1)
    assert torch.equal(images, ablate(x.repeat_interleave(3, 0), starts, "column", 2))
    assert len(set(starts.tolist())) > 3
    with pytest.raises(BadInput, match="views must be >= 1, got 0"):
        DEFENSES.get("patch-ablation", views=0)


def test_training_recipe_needs_an_ablated_architecture() -> None:
    defense = DEFENSES.get("patch-ablation")
    net = build_arch("small-cnn", (1, 28, 28), 10)
    ctx = StepContext(step=0, total=1, epoch=0, seed=0, gen=make_generator(0))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(BadInput, match=r"patch-ablation.*ablated architecture"):
        defense.train_batch(net, opt, torch.zeros(2, 1, 28, 28), torch.zeros(2).long(), ctx)


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def files(trained, test_points, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("patch-smoothing")
    (root / "net.py").write_text(NET)
    torch.save(trained.state_dict(), root / "weights.pt")
    x, y = test_points
    np.savez(root / "mnist.npz", x=x[:30].numpy(), y=y[:30].numpy())
    return root


def _argv(root: Path, *extra: str) -> list[str]:
    return [
        "certify", "--model", f"{root / 'net.py'}:make", "--weights", str(root / "weights.pt"),
        "--data", str(root / "mnist.npz"), "--method", "patch-smoothing", *extra,
    ]  # fmt: skip


def test_cli_certifies_patches_and_checks_them(trained, test_points, files, tmp_path, capsys):
    argv = _argv(files, "--size", "3,0.02", "--n", "10", "--attack-check", "--out", str(tmp_path))
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "certify.json").read_text())
    assert (tmp_path / "certify.html").read_text().count("Patch smoothing") >= 1
    config = report["config"]
    assert config["sizes_pixels"] == [3, 4]  # 2% of 784 pixels: ceil(sqrt(15.68)) = 4
    assert (config["ablation"], config["band"]) == ("column", BAND)  # the model's
    x, y = test_points[0][:10], test_points[1][:10]
    direct = certify_patches(Model(trained), x, y, PatchSmoothing(band=BAND, sizes=(3, 4)))
    assert report["clean_accuracy"] == pytest.approx(direct.smoothed_accuracy)
    assert report["base_accuracy"] == pytest.approx(direct.base_accuracy)
    assert report["consistent"] is True
    for entry, cert in zip(report["results"], direct.certified, strict=True):
        assert entry["certified_accuracy"] == pytest.approx(float(cert.float().mean()))
        assert entry["violations"] == []
        assert entry["certified_accuracy"] <= entry["empirical_robust_accuracy"]
    assert report["curve"][2]["certified_accuracy"] == report["results"][0]["certified_accuracy"]
    assert "against 3x3 patches" in out and "BUG" not in out


def test_cli_threshold_sets_the_vote(trained, test_points, files, tmp_path, capsys) -> None:
    """--threshold argmax: one vote per band; --threshold 0.3: the classes over 0.3; each
    report matches the library's certificate with that vote, and the vote is reported."""
    x, y = test_points[0][:8], test_points[1][:8]
    for text, threshold in (("argmax", None), ("0.3", 0.3)):
        out = tmp_path / text
        argv = _argv(files, "--size", "2", "--n", "8", "--threshold", text, "--out", str(out))
        assert main(argv) == 0, capsys.readouterr().err
        report = json.loads((out / "certify.json").read_text())
        assert report["config"]["threshold"] == threshold
        assert report["patch_smoothing"]["threshold"] == threshold
        smoothing = PatchSmoothing(band=BAND, sizes=(2,), threshold=threshold)
        direct = certify_patches(Model(trained), x, y, smoothing)
        certified_share = float(direct.certified[0].float().mean())
        assert report["certified_accuracy"] == pytest.approx(certified_share)
        assert report["clean_accuracy"] == pytest.approx(direct.smoothed_accuracy)
        assert report["base_accuracy"] == pytest.approx(direct.base_accuracy)  # argmax either way
    assert "softmax >= 0.3" in capsys.readouterr().out


def test_cli_warns_when_the_band_differs_from_training(files, tmp_path, capsys) -> None:
    argv = _argv(files, "--size", "2", "--band", "3", "--n", "5", "--out", str(tmp_path))
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "certify.json").read_text())
    assert report["config"]["band"] == 3
    assert any(f"trained on column ablation with band {BAND}" in w for w in report["warnings"])


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--size", "29"], r"--size 29: a 29x29 patch does not fit 28x28 images"),
        (["--size", "1.5"], r"--size '1\.5': expected a patch side in pixels"),
        (["--size", "3", "--band", "0"], r"--band must be >= 1, got 0"),
        (["--size", "3", "--band", "29"], r"--band 29: expected an integer from 1 to 28"),
        ([], r"--method patch-smoothing needs --size"),
        (["--size", "3", "--eps", "0.1"], r"--eps 0\.1: does not apply to --method patch"),
        (["--size", "3", "--threshold", "0"], r"--threshold '0': expected a softmax level in"),
        (["--size", "3", "--threshold", "top"], r"--threshold 'top': expected a softmax level"),
    ],
)
def test_cli_bad_patch_input_is_one_line(files, tmp_path, capsys, extra, pattern) -> None:
    refused([*_argv(files, *extra), "--out", str(tmp_path)], capsys, pattern)


def test_cli_patch_flags_belong_to_patch_smoothing(files, tmp_path, capsys) -> None:
    argv = ["certify", "--model", f"{files / 'net.py'}:make", "--data", str(files / "mnist.npz")]
    argv += ["--method", "ibp", "--eps", "0.1", "--band", "2", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--band 2: applies to --method patch-smoothing only" in capsys.readouterr().err
    argv[argv.index("--band") : argv.index("--band") + 2] = ["--threshold", "0.3"]
    assert main(argv) == 2
    assert "--threshold 0.3: applies to --method patch-smoothing only" in capsys.readouterr().err


def test_plan_checks_patch_options_by_name() -> None:
    data = load_data("digits", split="test")  # 8 x 8 images
    plan = CertifyPlan(method="patch-smoothing", size=(2, 0.1), band=2)
    assert plan.sides(data) == (2, 3)  # 10% of 64 pixels: ceil(sqrt(6.4))
    assert plan.threat(data).eps == 1.0  # anything inside the patch
    for options, pattern in [
        ({}, "needs size"),
        ({"size": (1.5,)}, r"size 1\.5: expected a patch side in pixels"),
        ({"size": (2,), "band": 0}, "band must be an integer >= 1, got 0"),
        ({"size": (2,), "ablation": "rows"}, "ablation must be column or block, got 'rows'"),
        ({"size": (2,), "eps": (0.1,)}, "eps, sigma and norm do not apply"),
        ({"size": (2,), "threshold": 0.0}, r"threshold must be in \(0, 1\] or None"),
    ]:
        with pytest.raises(BadInput, match=pattern):
            CertifyPlan(method="patch-smoothing", **options)
    with pytest.raises(BadInput, match=r"size 9: a 9x9 patch does not fit 8x8 images"):
        CertifyPlan(method="patch-smoothing", size=(9,)).threat(data)
    with pytest.raises(BadInput, match="size, ablation and band apply to patch-smoothing only"):
        CertifyPlan(method="ibp", eps=(0.1,), band=2)
