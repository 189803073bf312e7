"""The EOT scene transformations: identity, what each transformation does, seeds, gradients,
and the parser's messages."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adversa.errors import BadInput, UnknownName
from adversa.physical.transforms import NAMES, Transforms, gaussian_blur, warp
from adversa.rng import make_generator


def _images(n: int = 6, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=make_generator(1))


def test_identity_returns_the_input_itself():
    x = _images()
    assert Transforms()(x, make_generator(0)) is x
    assert Transforms.parse("none").is_identity and Transforms.parse("").is_identity


def test_rotation_by_90_degrees_is_rot90_and_shift_moves_pixels():
    x = _images(2, 8)
    ones, zeros = torch.ones(2), torch.zeros(2)
    turned = warp(x, torch.full((2,), 90.0), ones, torch.zeros(2, 2))
    torch.testing.assert_close(turned, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)
    moved = warp(x, zeros, ones, torch.tensor([[0.25, 0.0], [0.0, 0.25]]))
    torch.testing.assert_close(moved[0, :, :, 2:], x[0, :, :, :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(moved[1, :, 2:, :], x[1, :, :-2, :], atol=1e-5, rtol=0)
    assert moved[0, :, :, :2].abs().max() == 0  # moved in from outside: the lower bound
    still = warp(x, zeros, ones, torch.zeros(2, 2), corners=torch.zeros(2, 4, 2))
    torch.testing.assert_close(still, x, atol=1e-5, rtol=0)


def test_scale_shrinks_a_bright_square_about_the_centre():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 1.0
    half = Transforms(scale=(0.5, 0.5))(x, make_generator(0))
    assert half.sum().item() == pytest.approx(x.sum().item() / 4, rel=0.05)
    assert half[..., 12:20, 12:20].min() > 0.99 and half[..., :10, :].max() == 0


def test_photometric_transformations_do_what_they_say():
    x = torch.full((2000, 1, 4, 4), 0.5)
    gen = make_generator(0)
    bright = Transforms(brightness=0.2)(x, gen)
    per_image = bright.mean(dim=(1, 2, 3))
    assert per_image.min() >= 0.3 - 1e-6 and per_image.max() <= 0.7 + 1e-6
    assert per_image.std() == pytest.approx(0.4 / 12**0.5, rel=0.1)  # uniform in [-0.2, 0.2]
    assert (bright == bright[:, :, :1, :1]).all()  # one shift per image
    noisy = Transforms(noise=0.05)(x, gen)
    assert (noisy - x).std() == pytest.approx(0.05, rel=0.05)
    ramp = torch.linspace(0.2, 0.8, 16).view(1, 1, 4, 4).expand(500, 1, 4, 4)
    contrasted = Transforms(contrast=0.5)(ramp, gen)
    torch.testing.assert_close(contrasted.mean(dim=(1, 2, 3)), ramp.mean(dim=(1, 2, 3)))
    spread = contrasted.std(dim=(1, 2, 3)) / ramp.std(dim=(1, 2, 3))
    assert spread.min() >= 0.5 - 1e-4 and spread.max() <= 1.5 + 1e-4 and spread.std() > 0.2


def test_blur_keeps_the_mass_and_spreads_a_point():
    x = torch.zeros(2, 1, 15, 15)
    x[:, :, 7, 7] = 1.0
    out = gaussian_blur(x, torch.tensor([1e-6, 2.0]))
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)
    assert out[1].sum().item() == pytest.approx(1.0, abs=1e-4)
    assert out[1, 0, 7, 7] < 0.05 and out[1, 0, 7, 9] > 0.01


def test_draws_are_per_image_seeded_clipped_and_differentiable():
    t = Transforms.parse(
        "rotate=20,scale=0.8-1.2,translate=0.1,brightness=0.3,contrast=0.3,noise=0.05,perspective=0.1,blur=1"
    )
    x = _images().requires_grad_(True)
    a, b = t(x, make_generator(3)), t(x, make_generator(3))
    assert torch.equal(a, b) and not torch.equal(a, t(x, make_generator(4)))
    assert a.min() >= 0 and a.max() <= 1
    same = t(x[:1].expand(4, -1, -1, -1), make_generator(3))
    assert not torch.equal(same[0], same[1])  # a fresh draw per image
    assert a.dtype == x.dtype and a.shape == x.shape
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    shifted = t(x.detach() * 2 - 1, make_generator(3), bounds=(-1.0, 1.0))
    assert shifted.min() >= -1 and shifted.max() <= 1 and shifted.min() < 0


def test_one_and_scaled_and_spec_round_trip():
    t = Transforms.parse("rotate=20,scale=0.8-1.2,brightness=0.2,noise=0.02")
    assert t.active == ("rotate", "scale", "brightness", "noise")
    assert t.one("scale") == Transforms(scale=(0.8, 1.2))
    assert t.one("blur").is_identity
    assert t.scaled(0.5) == Transforms(rotate=10, scale=(0.9, 1.1), brightness=0.1, noise=0.01)
    assert Transforms.parse(t.spec()) == t
    assert set(NAMES) == {f.name for f in dataclasses.fields(Transforms)}
    with pytest.raises(UnknownName, match="rotation"):
        t.one("rotation")


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("rotate", r"--transforms: bad item 'rotate': expected NAME=VALUE"),
        ("spin=3", r"--transforms: bad item 'spin=3': expected NAME=VALUE with NAME one of rotate"),
        ("rotate=abc", r"--transforms: bad item 'rotate=abc': rotate must be degrees"),
        ("scale=1.2-0.8", r"--transforms: bad item 'scale=1.2-0.8': scale must be .*LO <= HI"),
        ("noise=-1", r"--transforms: bad item 'noise=-1': noise must be .*got -1.0"),
        ("rotate=20,rotate=5", r"--transforms: 'rotate' is given twice"),
        ("contrast=1.5", r"--transforms: bad item 'contrast=1.5'"),
    ],
)
def test_parse_errors_name_the_flag_and_the_item(spec, pattern):
    with pytest.raises(BadInput, match=pattern) as info:
        Transforms.parse(spec)
    assert "\n" not in str(info.value)
    with pytest.raises(BadInput, match=r"^--eot: "):
        Transforms.parse(spec, flag="--eot")
