"""Masked perturbations (adversa.physical): `MaskedThreat` keeps every pixel outside the mask,
the registry's gradient attacks run inside it unchanged, the named masks cover what they
claim, and RP2's smoothness and printability terms do what their weights say."""

from __future__ import annotations

import pytest
import torch

from adversa import Model, ThreatModel, get_attack
from adversa.errors import BadInput, ShapeError
from adversa.physical.masked import MaskedThreat
from adversa.physical.masks import MASKS, mask_summary, masked_threat, resolve_mask
from adversa.physical.rp2 import (
    non_printability,
    palette_for,
    pixel_mask,
    total_variation,
    transformed,
)
from adversa.physical.transforms import Transforms


def _square(area: float = 0.15) -> torch.Tensor:
    return MASKS.factory("square")(28, 28, area=area)


@pytest.fixture(scope="module")
def correct(mnist_cnn) -> tuple[Model, torch.Tensor, torch.Tensor]:
    """mnist-cnn and 48 test points it classifies correctly."""
    model, data = mnist_cnn
    x, y = data.x[:60], data.y[:60]
    keep = model.predict(x) == y
    return model, x[keep][:48], y[keep][:48]


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("linf", 1.0), ("l2", 2.0), ("l1", 5.0)])
def test_project_keeps_every_pixel_outside_the_mask(norm, eps):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 12, 12, generator=gen)
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[3:7, 2:9] = True
    threat = MaskedThreat(norm=norm, eps=eps, mask=mask)
    wild = x + 3 * torch.randn(x.shape, generator=gen)
    out = threat.project(wild, x)
    assert torch.equal(out[..., ~mask], x[..., ~mask])
    assert bool((out[..., mask] != x[..., mask]).any())
    assert threat.contains(out, x).all()
    assert threat.contains(threat.random_start(x, gen), x).all()
    plain = ThreatModel(norm=norm, eps=eps)  # inside the mask: the parent's ball and box
    assert plain.contains(out, x).all()
    moved = out.clone()
    moved[:3, 0, 0, 0] = 1 - x[:3, 0, 0, 0]  # a pixel outside the mask changes
    assert threat.contains(moved, x).tolist() == [False] * 3 + [True] * 3


def test_mask_shapes_and_bad_masks():
    x = torch.rand(4, 3, 8, 8)
    per_channel = torch.zeros(3, 8, 8)
    per_channel[0, 2:4, 2:4] = 1
    out = MaskedThreat(norm="linf", eps=1.0, mask=per_channel).project(torch.ones_like(x), x)
    assert torch.equal(out != x, (per_channel.bool() & (x != 1)).expand_as(x))
    per_sample = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    per_sample[torch.arange(4), 0, torch.arange(4), torch.arange(4)] = True
    out = MaskedThreat(norm="linf", eps=1.0, mask=per_sample).project(torch.ones_like(x), x)
    assert ((out != x).flatten(1).sum(1) <= 3).all()  # one pixel (3 channels) per sample
    threat = MaskedThreat(norm="linf", eps=1.0, mask=per_sample)
    with pytest.raises(ShapeError, match=r"mask of shape \(4, 1, 8, 8\) does not fit .*\(2, 3"):
        threat.project(x[:2], x[:2])
    with pytest.raises(ShapeError, match=r"mask of shape \(7, 8\) does not fit"):
        MaskedThreat(norm="linf", eps=1.0, mask=torch.ones(7, 8)).project(x, x)
    with pytest.raises(BadInput, match=r"mask must hold only 0 and 1.*\[0, 0.5\]"):
        MaskedThreat(norm="linf", eps=1.0, mask=torch.full((8, 8), 0.5).tril())
    with pytest.raises(BadInput, match="mask must be a tensor"):
        MaskedThreat(norm="linf", eps=1.0, mask=[[1, 0]])
    a = MaskedThreat(norm="linf", eps=1.0, mask=torch.ones(8, 8))
    assert a == MaskedThreat(norm="linf", eps=1.0, mask=torch.ones(8, 8, dtype=torch.bool))
    assert a != MaskedThreat(norm="linf", eps=1.0, mask=torch.eye(8))
    assert torch.equal(a.with_eps(0.5).mask, a.mask) and a.share == 1.0


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "fgsm"])
def test_registry_attacks_stay_inside_the_mask(attack, correct):
    """Unbounded (linf eps 1) inside a 12.8% square: the harness's result never changes a
    pixel outside it, and PGD/APGD fool at least 80% of the correctly classified points
    (measured 98% and 100%), FGSM at least 50% (measured 88%)."""
    model, x, y = correct
    mask = _square()
    threat = MaskedThreat(norm="linf", eps=1.0, mask=mask)
    assert 0.10 <= threat.share <= 0.20
    result = get_attack(attack, threat, **({} if attack == "fgsm" else {"steps": 20}))(model, x, y)
    assert torch.equal(result.x_adv[..., ~mask], x[..., ~mask])
    assert threat.contains(result.x_adv, x).all()
    assert torch.equal(result.success, model.predict(result.x_adv) != y)
    assert result.success_rate >= (0.5 if attack == "fgsm" else 0.8), result.success_rate


def test_an_empty_mask_fools_no_point(correct):
    model, x, y = correct
    threat = MaskedThreat(norm="linf", eps=1.0, mask=torch.zeros(28, 28))
    result = get_attack("pgd", threat, steps=10)(model, x, y)
    assert torch.equal(result.x_adv, x)
    assert not result.success.any()


def test_a_bounded_eps_holds_inside_the_mask(correct):
    model, x, y = correct
    threat = MaskedThreat(norm="linf", eps=0.2, mask=_square())
    result = get_attack("pgd", threat, steps=10)(model, x, y)
    assert float((result.x_adv - x).abs().max()) <= 0.2 + 1e-6
    assert torch.equal(result.x_adv[..., ~_square()], x[..., ~_square()])


def test_eyeglasses_cover_the_eye_band_of_a_25x25_face():
    """The frame on lfw_subset's 25x25 crops: rims around both eyes (rows 5-11, the eyes of
    the mean face are on row 8, columns 5-7 and 13-16), a bridge and temples on the top rim;
    17.0% of the area at the default thickness (2 px), 9.8% at 1 px."""
    mask = MASKS.factory("eyeglasses")(25, 25)
    rows = mask.any(1).nonzero().squeeze(1)
    assert int(rows.min()) >= 4 and int(rows.max()) <= 12  # the eye band only
    assert bool(mask[5:12, 3].all()) and bool(mask[5:12, 19].all())  # outer rims
    assert bool(mask[5, :].all())  # temples, rims and bridge along the top rim
    assert not bool(mask[7:10, 5:9].any()) and not bool(mask[7:10, 14:18].any())  # the eyes
    share = float(mask.float().mean())
    assert 0.15 <= share <= 0.19, share
    thin = MASKS.factory("glasses")(25, 25, thickness=1)
    assert bool((thin <= mask).all()) and 0.08 <= float(thin.float().mean()) < share


def test_stickers_are_a_few_rectangles_inside_the_sign():
    mask = MASKS.factory("stickers")(32, 32)
    assert not bool(mask[:6].any() or mask[-6:].any() or mask[:, :6].any() or mask[:, -6:].any())
    assert 0.07 <= float(mask.float().mean()) <= 0.11
    cols = mask.any(0).int().diff().abs().sum()  # two column runs, two row runs: 4 rectangles
    rows = mask.any(1).int().diff().abs().sum()
    assert int(cols) == 4 and int(rows) == 4
    assert 0.13 <= float(MASKS.factory("frame")(28, 28).float().mean()) <= 0.15


def test_resolve_mask_names_the_flag(tmp_path):
    from PIL import Image

    shape = (3, 32, 32)
    assert torch.equal(resolve_mask("Stickers", shape), MASKS.factory("stickers")(32, 32))
    with pytest.raises(BadInput, match=r"^--mask: unknown mask 'stikers'; did you mean 'stickers'"):
        resolve_mask("stikers", shape)
    with pytest.raises(ShapeError, match=r"^--mask needs image data .* got points shaped \(30,\)"):
        resolve_mask("stickers", (30,))
    with pytest.raises(BadInput, match=r"^--mask: the mask tensor of shape \(32, 32\) is empty"):
        resolve_mask(torch.zeros(32, 32), shape)
    with pytest.raises(ShapeError, match=r"^--mask: a mask of shape \(28, 28\) does not fit"):
        resolve_mask(torch.ones(28, 28), shape)
    png = tmp_path / "half.png"
    Image.fromarray(
        (torch.arange(64)[None, :].expand(64, 64) >= 32).numpy().astype("uint8") * 255
    ).save(png)
    mask = resolve_mask(str(png), shape)
    assert mask.shape == (32, 32) and bool(mask[:, 16:].all()) and not bool(mask[:, :16].any())
    threat = masked_threat("linf", 1.0, (0.0, 1.0), str(png), shape)
    summary = mask_summary(threat, str(png))
    assert summary["pixels"] == 512 and summary["area_share"] == 0.5
    assert summary["png"].startswith("data:image/png;base64,")


def _terms(model, x, y, threat, **weights):
    result = get_attack("rp2", threat, steps=30, seed=1, **weights)(model, x, y)
    m = pixel_mask(threat, x)
    tv = float(total_variation(result.x_adv - x, m).mean())
    nps = float(non_printability(result.x_adv, m, palette_for(None, 1, x)).mean())
    assert torch.equal(result.x_adv[..., ~threat.mask], x[..., ~threat.mask])
    return result, tv, nps


def test_rp2_weights_lower_total_variation_and_non_printability(correct):
    """Raising each weight lowers its term: measured TV 0.26 -> 0.02 (tv_weight 1), NPS
    1.5e-3 -> 3.8e-4 (nps_weight 1); without them RP2 fools most points (measured 79%)."""
    model, x, y = correct
    x, y = x[:24], y[:24]
    threat = MaskedThreat(norm="linf", eps=1.0, mask=_square())
    plain, tv0, nps0 = _terms(model, x, y, threat)
    _, tv1, _ = _terms(model, x, y, threat, tv_weight=1.0)
    _, _, nps1 = _terms(model, x, y, threat, nps_weight=1.0)
    assert plain.success_rate >= 0.6, plain.success_rate
    assert tv1 < 0.5 * tv0, (tv0, tv1)
    assert nps1 < 0.5 * nps0, (nps0, nps1)
    again, _, _ = _terms(model, x, y, threat)
    assert torch.equal(plain.x_adv, again.x_adv)


def test_rp2_with_transforms_and_the_transformed_view(correct):
    model, x, y = correct
    x, y = x[:16], y[:16]
    threat = MaskedThreat(norm="linf", eps=1.0, mask=MASKS.factory("stickers")(28, 28))
    scene = Transforms.parse("rotate=10,scale=0.9-1.1,noise=0.02")
    result = get_attack("rp2", threat, steps=10, samples=2, transforms=scene)(model, x, y)
    assert torch.equal(result.x_adv[..., ~threat.mask], x[..., ~threat.mask])
    assert result.cost.backward == 10 * 2 * 16
    with torch.no_grad():
        assert torch.equal(transformed(model, Transforms(), 0)(x), model(x))
        a, b = transformed(model, scene, 0)(x), transformed(model, scene, 0)(x)
        assert torch.equal(a, b) and not torch.equal(a, model(x))
    with pytest.raises(BadInput, match="palette colours have 3 values, the images 1 channels"):
        get_attack("rp2", threat, nps_weight=1.0, palette=((0.0, 0.0, 0.0),))(model, x, y)
    with pytest.raises(BadInput, match="transforms must be a Transforms"):
        get_attack("rp2", threat, transforms="rotate=10")
    with pytest.raises(ShapeError, match="rp2's transforms, tv_weight and nps_weight need images"):
        get_attack("rp2", ThreatModel(norm="linf", eps=0.1), tv_weight=1.0)(model, x.flatten(1), y)


def test_no_chance_warning_when_the_mask_leaves_pixels_fixed():
    """At eps = the box width a plain threat lets every input reach the same point, so
    accuracy above chance is a masking warning; under a partial mask it is not."""
    from adversa.evaluation.sanity import check_chance_at_large_eps

    partial = MaskedThreat(norm="linf", eps=1.0, mask=_square())
    full = MaskedThreat(norm="linf", eps=1.0, mask=torch.ones(28, 28))
    assert check_chance_at_large_eps(partial, 784, 0.5, 0.1) == []
    assert check_chance_at_large_eps(full, 784, 0.5, 0.1)
