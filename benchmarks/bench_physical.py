"""Physical attacks in the two offline settings: stickers and a patch on the synthetic road
signs, with and without expectation over transformation (EOT), judged under fresh random
transformations; eyeglass frames that make the face detector miss faces, by frame area.

Setup.
- Signs: the zoo's "signs-cnn" (PoolCNN, 32x32 colour, 8 classes) on the synthetic "signs"
  set (`adversa.data.signs`). The scene (`SCENE`, a camera's variation: rotation, scale,
  translation, perspective, blur, brightness, contrast, noise) is one `Transforms`
  (`adversa.physical.transforms`). All attacks are targeted at `TARGET` and judged on test
  signs of the other classes, `--draws` fresh scene draws each, seeds apart from training.
  * Patch (Brown et al. 2017, `adversa.physical.patch`) trained on the train split, a square
    placed (`PLACEMENTS`) "on the sign" (centred, where the sign mostly is: a patch stuck on
    it; `--patch-sizes`, 5 % and 10 % of the image) or "anywhere" in the frame, rotated
    +-20 degrees and scaled 0.9-1.1 (Brown et al.'s setting; `--anywhere-sizes`, 10 % and
    20 %). "No EOT" trains with the placement only; "EOT" adds the scene. Both are judged
    with the same placement, without the scene ("fixed") and through it ("transformed").
    The control: a patch of uniform noise.
  * Stickers (RP2, Eykholt et al. 2018, `adversa.physical.rp2`): per sign, the four
    rectangles of `adversa.physical.masks.stickers` where they fall on the sign (the
    renderer's sign coverage > 0.5), any colour inside (`MaskedThreat`, linf eps 1), with
    total variation and non-printability terms; "no EOT" optimises the sign as it is, "EOT"
    averages `--eot-samples` scene draws per step. Judged on the attacked image as it is
    ("fixed") and under scene draws ("transformed"); the control is uniform noise in the same
    stickers.
- Faces: the zoo's "face-cnn" (face vs non-face on scikit-image's lfw_subset) on all 100
  faces (80 of them in its training split: the detector finds every one). Eyeglass frames
  (`adversa.physical.masks.eyeglasses`) of `--thickness` pixels, any grey level inside,
  optimised by RP2 (no transformation) to make the detector say "non-face" (dodging). The
  control fills the same frame with uniform noise, `--draws` draws per face.

Usage: python benchmarks/bench_physical.py [--n 200] [--draws 10] [--patch-steps 300]
       [--patch-sizes 0.05,0.1] [--anywhere-sizes 0.1,0.2] [--rp2-steps 100]
       [--eot-samples 8] [--thickness 1,2,3,4] [--parts stickers,patch,faces]
       [--out results.json]

About 7.5 minutes on a shared 2-core machine (one thread; 16 under heavy load), most of it
RP2 with EOT; the zoo models train on first use (about 35 s of CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from torch import Tensor

import adversa.physical.rp2  # noqa: F401  (registers "rp2")
from adversa import Model, get_attack
from adversa.data import load_data
from adversa.data.signs import SIGN_CLASSES, sign_alpha
from adversa.physical.masked import MaskedThreat
from adversa.physical.masks import eyeglasses, stickers
from adversa.physical.patch import PatchConfig, evaluate_patch, random_patch, train_patch
from adversa.physical.rp2 import transformed
from adversa.physical.transforms import Transforms
from adversa.rng import make_generator
from adversa.zoo import load_zoo_model

SCENE = (
    "rotate=15,scale=0.85-1.15,translate=0.08,perspective=0.08,blur=0.6,"
    "brightness=0.15,contrast=0.2,noise=0.02"
)
TARGET = "speed-limit-50"
JUDGE_SEED = 1000  # evaluation draws: apart from every training seed


@torch.no_grad()
def hit_rate(model: Model, x: Tensor, target: int | None, y: Tensor, scene: Transforms, draws: int):
    """Share of (image, draw) pairs where the attack holds under `draws` fresh scene draws:
    the target predicted (targeted), or anything but `y` (target None)."""
    view = transformed(model, scene, JUDGE_SEED)
    hits = []
    for _ in range(draws):
        pred = view(x).argmax(1)
        hits.append(pred == target if target is not None else pred != y)
    return float(torch.stack(hits).float().mean())


PLACEMENTS = {  # where the patch goes: its own position / rotation / scale ranges
    "sign": {"position": 0.0, "rotate": 0.0, "scale": (1.0, 1.0)},  # centred, on the sign
    "anywhere": {"position": 1.0, "rotate": 20.0, "scale": (0.9, 1.1)},  # Brown et al.
}


def signs_patch(
    model: Model, train, test, scene: Transforms, target: int, size: float, where: str, args
):
    base = PatchConfig(
        size=size, target_class=target, steps=args.patch_steps, seed=0, **PLACEMENTS[where]
    )
    out: dict = {"placement": where, "size": size, "steps": base.steps, "lr": base.lr}
    patches = {}
    for name, config in (("no-eot", base), ("eot", dataclasses.replace(base, transforms=scene))):
        start = time.perf_counter()
        patches[name] = train_patch(model, train.x, train.y, config)
        out[name] = {"train_seconds": round(time.perf_counter() - start, 1)}
    patches["control"] = random_patch(patches["eot"], seed=7)
    for name, patch in patches.items():
        rates = [
            evaluate_patch(model, patch, test.x, test.y, scene, JUDGE_SEED + d).rate
            for d in range(args.draws)
        ]
        row = out.setdefault(name, {})
        row["fixed"] = evaluate_patch(model, patch, test.x, test.y, Transforms(), JUDGE_SEED).rate
        row["transformed"] = sum(rates) / len(rates)
    return out


def signs_stickers(model: Model, test, alpha: Tensor, scene: Transforms, target: int, args):
    keep = (test.y != target).nonzero().squeeze(1)[: args.n]
    x, y = test.x[keep], test.y[keep]
    goal = torch.full_like(y, target)
    mask = stickers(32, 32)[None, None] & (alpha[keep] > 0.5)
    threat = MaskedThreat(norm="linf", eps=1.0, mask=mask, targeted=True)
    common = {"steps": args.rp2_steps, "step_size": 0.05, "tv_weight": 0.05, "nps_weight": 0.05}
    runs = {
        "no-eot": get_attack("rp2", threat, samples=1, **common),
        "eot": get_attack("rp2", threat, samples=args.eot_samples, transforms=scene, **common),
    }
    out: dict = {"n": len(y), "mask_share": float(mask.float().mean()), **common}
    for name, attack in runs.items():
        start = time.perf_counter()
        result = attack(model, x, goal)
        out[name] = {
            "train_seconds": round(time.perf_counter() - start, 1),
            "fixed": float(result.success.float().mean()),
            "transformed": hit_rate(model, result.x_adv, target, y, scene, args.draws),
        }
    noise = torch.rand(x.shape, generator=make_generator(7))
    control = torch.where(mask, noise, x)
    out["control"] = {
        "fixed": hit_rate(model, control, target, y, Transforms(), 1),
        "transformed": hit_rate(model, control, target, y, scene, args.draws),
    }
    out["clean"] = {"transformed": hit_rate(model, x, target, y, scene, args.draws)}
    return out


def faces_dodging(model: Model, args) -> list[dict]:
    faces = load_data("faces", split="all")
    x = faces.x[faces.y == 0]
    y = torch.zeros(x.shape[0], dtype=torch.long)
    with torch.no_grad():
        detected = float((model(x).argmax(1) == 0).float().mean())
    rows = []
    for thickness in (int(t) for t in args.thickness.split(",")):
        mask = eyeglasses(25, 25, thickness=thickness)
        threat = MaskedThreat(norm="linf", eps=1.0, mask=mask)
        attack = get_attack("rp2", threat, steps=args.rp2_steps, step_size=0.05, nps_weight=0.05)
        start = time.perf_counter()
        result = attack(model, x, y)
        gen = make_generator(7)
        control = []
        with torch.no_grad():
            for _ in range(args.draws):
                noisy = torch.where(mask, torch.rand(x.shape, generator=gen), x)
                control.append(float((model(noisy).argmax(1) != 0).float().mean()))
        rows.append(
            {
                "thickness": thickness,
                "pixels": int(mask.sum()),
                "area_share": round(float(mask.float().mean()), 4),
                "faces": x.shape[0],
                "detected_clean": detected,
                "dodged": float(result.success.float().mean()),
                "dodged_control": sum(control) / len(control),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="test signs attacked with stickers")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--patch-steps", type=int, default=300)
    parser.add_argument("--parts", default="stickers,patch,faces")
    parser.add_argument("--patch-sizes", default="0.05,0.1", help="on the sign: area fractions")
    parser.add_argument("--anywhere-sizes", default="0.1,0.2", help="anywhere: area fractions")
    parser.add_argument("--rp2-steps", type=int, default=100)
    parser.add_argument("--eot-samples", type=int, default=8)
    parser.add_argument("--thickness", default="1,2,3,4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    scene, target = Transforms.parse(SCENE), SIGN_CLASSES.index(TARGET)
    signs = Model(load_zoo_model("signs-cnn"), num_classes=8, name="signs-cnn")
    train, test = load_data("signs", split="train"), load_data("signs", split="test")
    with torch.no_grad():
        clean = float((signs(test.x).argmax(1) == test.y).float().mean())
        view = transformed(signs, scene, JUDGE_SEED)
        under = float((view(test.x).argmax(1) == test.y).float().mean())
    results: dict = {
        "scene": SCENE,
        "target": TARGET,
        "signs_cnn": {"clean_accuracy": clean, "accuracy_under_scene": under},
    }
    print(f"signs-cnn: clean {clean:.1%}, under the scene {under:.1%}", flush=True)
    parts = set(args.parts.split(","))
    if "stickers" in parts:
        results["stickers"] = signs_stickers(signs, test, sign_alpha("test"), scene, target, args)
        _print_pair("stickers (RP2)", results["stickers"])
    if "patch" in parts:
        results["patch"] = []
        for where, sizes in (("sign", args.patch_sizes), ("anywhere", args.anywhere_sizes)):
            for size in (float(v) for v in sizes.split(",")):
                row = signs_patch(signs, train, test, scene, target, size, where, args)
                results["patch"].append(row)
                _print_pair(f"patch {size:.0%} {where}", row)
    face = Model(load_zoo_model("face-cnn"), num_classes=2, name="face-cnn")
    results["faces"] = faces_dodging(face, args) if "faces" in parts else []
    for row in results["faces"]:
        print(
            f"eyeglasses {row['thickness']} px ({row['area_share']:.1%} of the image): dodged "
            f"{row['dodged']:.0%} of {row['faces']} faces, random frame {row['dodged_control']:.0%}"
        )
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(f"total {results['seconds']} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


def _print_pair(title: str, part: dict) -> None:
    for name in ("no-eot", "eot", "control"):
        row = part[name]
        print(
            f"{title} {name:8s}: targeted success fixed {row['fixed']:.1%}, under fresh "
            f"transformations {row['transformed']:.1%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
