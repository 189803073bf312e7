"""`adversa privacy` (membership inference) and `adversa invert` (model inversion).

adversa privacy --model M [--data D] --attack lira|threshold|shadow|boundary|all
                [--shadows 16] [--reference-arch same|mlp] [--n 500]
                [--members F --nonmembers F] [--shadow-data F] --out DIR
    writes DIR/privacy.json and DIR/privacy.html: AUC, balanced accuracy, TPR at 1% and 0.1%
    FPR and the log-log ROC of each attack, beside the global loss-threshold baseline.
    Shadow and reference models take the target's architecture and recipe when it is known
    (a zoo name or an `adversa train` directory: `--reference-arch same`, the default there),
    else they are MLPs (`mlp`).
adversa invert --model M [--data D] [--classes 0,1] [--init zeros,mean,random] [--tv W]
               --out DIR
    writes DIR/inversion.json and DIR/inversion.html: MIFace reconstructions per class beside
    the real class mean, and how an independently trained model classifies them.

Who is a member. Membership inference needs candidates whose membership is known. By default
the members are the first n samples of the model's training split and the non-members the
first n of the held-out test split (n = min(--n, both sizes), so the two are balanced). For a
zoo model or an `adversa train` output directory the training split (data and train_size) is
read from its recipe or card, so it is exact; for any other model it is the "train" split of
--data, which is only right if the model was trained on it; pass --members and --nonmembers
(files or built-in names, loaded whole) when it was not. The shadow attack's pool is what is
left of both splits (or --shadow-data), disjoint from the candidates.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Any

import torch

from adversa.cli.common import check_labels
from adversa.errors import BadInput
from adversa.model import check_model_accepts


def add_privacy_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    pr = commands.add_parser(
        "privacy",
        parents=[common],
        help="membership inference (threshold, shadow models, LiRA, boundary distance); "
        "writes privacy.json and privacy.html",
        description="Membership inference against a model: the global loss threshold (Yeom "
        "et al. 2018, always run as the baseline), shadow models (Shokri et al. 2017), "
        "LiRA online/offline (Carlini et al. 2022) and label-only boundary distance "
        "(Choquette-Choo et al. 2021). Members default to the model's training split, "
        "non-members to the test split.",
    )
    pr.add_argument("--model", required=True, help="zoo name, training directory, file, ...")
    pr.add_argument("--weights", help="state_dict for a file.py:factory model")
    pr.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
        "which runs code from the file",
    )
    pr.add_argument("--data", help="dataset (default: the zoo model's or training card's)")
    pr.add_argument("--label-column", help="the label column of a .csv dataset")
    pr.add_argument(
        "--attack", default="lira", help="lira, threshold, shadow, boundary, all (comma list)"
    )
    pr.add_argument("--shadows", type=int, default=16, help="shadow / reference models")
    pr.add_argument("--n", type=int, default=500, help="members and non-members, each")
    pr.add_argument("--members", help="known members (file or built-in name, loaded whole)")
    pr.add_argument("--nonmembers", help="known non-members (with --members)")
    pr.add_argument("--shadow-data", help="shadow attack pool (default: the rest of the splits)")
    pr.add_argument(
        "--reference-arch",
        choices=("same", "mlp"),
        help="shadow / reference models: the target's architecture and recipe (default when "
        "the model is a zoo name or a training directory) or MLPs (default otherwise)",
    )
    pr.add_argument(
        "--reference-epochs", type=int, help="same: epochs per model (default: the recipe's)"
    )
    pr.add_argument("--shadow-steps", type=int, default=300, help="mlp: training steps")
    pr.add_argument("--shadow-hidden", type=int, default=128, help="mlp: hidden width")
    pr.add_argument(
        "--boundary-attack",
        default="auto",
        choices=("auto", "hsj", "deepfool", "cw", "fab"),
        help="boundary: the min-norm attack (auto: deepfool with gradients, else hsj)",
    )
    pr.add_argument(
        "--boundary-queries", type=int, default=2000, help="boundary, hsj: queries per point"
    )
    pr.add_argument("--fixed-variance", action="store_true", help="LiRA: pooled variance")
    pr.add_argument("--fpr", default="0.01,0.001", help="FPR targets for TPR, each in (0, 1)")
    pr.add_argument("--seed", type=int, default=0, help="seeds every random choice")
    pr.add_argument("--out", required=True, help="output directory (created if missing)")
    pr.set_defaults(handler=cmd_privacy)

    inv = commands.add_parser(
        "invert",
        parents=[common],
        help="model inversion (MIFace); writes inversion.json and inversion.html",
        description="MIFace model inversion (Fredrikson et al. 2015): reconstruct what each "
        "class looks like to the model by gradient descent on the input. Needs gradient "
        "access.",
    )
    inv.add_argument("--model", required=True, help="zoo name, training directory, file, ...")
    inv.add_argument("--weights", help="state_dict for a file.py:factory model")
    inv.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
        "which runs code from the file (--model and --independent)",
    )
    inv.add_argument("--data", help="dataset for the input shape, class means, mean image")
    inv.add_argument("--label-column", help="the label column of a .csv dataset")
    inv.add_argument("--classes", help="comma-separated classes (default: all)")
    inv.add_argument("--init", default="zeros,mean,random", help="zeros, mean, random (list)")
    inv.add_argument("--tv", type=float, default=0.0, help="total-variation prior weight")
    inv.add_argument("--steps", type=int, default=500, help="gradient steps")
    inv.add_argument("--step-size", type=float, default=0.1, help="gradient step size")
    inv.add_argument(
        "--objective",
        default="log",
        choices=("confidence", "log"),
        help="1 - p_y (the paper's cost) or -log p_y (default; does not vanish far from y)",
    )
    inv.add_argument("--independent", help="independently trained model (default: train one)")
    inv.add_argument("--seed", type=int, default=0, help="seeds the random init")
    inv.add_argument("--out", required=True, help="output directory (created if missing)")
    inv.set_defaults(handler=cmd_invert)


def _parse_fprs(text: str) -> tuple[float, ...]:
    from adversa.privacy.metrics import check_fpr

    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BadInput(f"--fpr: cannot read {text!r} as comma-separated numbers") from None
    if not values:
        raise BadInput("--fpr needs at least one value")
    return tuple(check_fpr(v, "--fpr target") for v in values)


def _training_recipe(spec: str) -> tuple[str, int | None, Any] | None:
    """(data, train_size, TrainConfig) of a zoo model or an `adversa train` directory."""
    import json
    from pathlib import Path

    from adversa.train.config import TrainConfig
    from adversa.zoo import list_models, zoo_entry

    if spec.strip().lower() in list_models():
        config = zoo_entry(spec.strip().lower()).train_config()
        return config.data, config.train_size, config
    card = Path(spec).expanduser() / "card.json"
    if card.is_file():
        try:
            recorded = json.loads(card.read_text())["config"]
        except (ValueError, KeyError, TypeError):
            raise BadInput(
                f"--model {spec}: {card} is not a model card written by adversa train "
                f"(expected JSON with a 'config' object)"
            ) from None
        config = TrainConfig.from_dict(recorded)
        return config.data, config.train_size, config
    return None


def _splits(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(train, test, source): the model's training split and a held-out split."""
    from adversa.data import list_datasets, load_data
    from adversa.data.builtin import stratified_split
    from adversa.train.config import load_splits

    recipe = _training_recipe(args.model)
    if recipe is not None and (args.data is None or args.data == recipe[0]):
        train, test = load_splits(recipe[2])
        size = "all" if recipe[1] is None else f"the first {recipe[1]}"
        return train, test, f"{size} of the training split of {recipe[0]} (the model's recipe)"
    if args.data is None:
        raise BadInput("--data is required unless --model is a zoo name or a training directory")
    if args.data.strip().lower() in list_datasets():
        train = load_data(args.data, split="train", label_column=args.label_column)
        test = load_data(args.data, split="test", label_column=args.label_column)
    else:
        full = load_data(args.data, label_column=args.label_column)
        train_idx, test_idx = stratified_split(full.y.numpy())
        train = full.subset(torch.as_tensor(train_idx))
        test = full.subset(torch.as_tensor(test_idx))
    return train, test, f"the train split of {args.data} (assumed to be the training data)"


def _candidates(args: argparse.Namespace) -> dict[str, Any]:
    from adversa.data import load_data

    if (args.members is None) != (args.nonmembers is None):
        raise BadInput("--members and --nonmembers go together")
    if args.members is not None:
        members = load_data(args.members, split="all", label_column=args.label_column)
        nonmembers = load_data(args.nonmembers, split="all", label_column=args.label_column)
        if members.input_shape != nonmembers.input_shape:
            raise BadInput(
                f"--members inputs {members.input_shape} and --nonmembers "
                f"{nonmembers.input_shape} differ"
            )
        pool = None
        source = f"--members {args.members}, --nonmembers {args.nonmembers}"
        dataset = members
    else:
        train, test, source = _splits(args)
        n = min(args.n, len(train), len(test))
        members, nonmembers = train.take(n), test.take(n)
        rest = [d.subset(slice(n, None)) for d in (train, test) if len(d) > n]
        pool = (torch.cat([d.x for d in rest]), torch.cat([d.y for d in rest])) if rest else None
        source = f"members: first {n} of {source}; non-members: first {n} of the test split"
        dataset = train
    if args.shadow_data is not None:
        shadow = load_data(args.shadow_data, split="all", label_column=args.label_column)
        pool = (shadow.x, shadow.y)
    return dict(
        members=(members.x, members.y),
        nonmembers=(nonmembers.x, nonmembers.y),
        pool=pool,
        source=source,
        dataset=dataset,
    )


def _reference_training(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """(training, warnings): the shadow / reference recipe `--reference-arch` asks for."""
    from adversa.privacy.arch_stack import ArchTraining
    from adversa.privacy.stacked import StackedTraining

    recipe = _training_recipe(args.model)
    known = recipe is not None and (args.data is None or args.data == recipe[0])
    choice = args.reference_arch or ("same" if known else "mlp")
    if choice == "mlp":
        if args.reference_epochs is not None:
            raise BadInput("--reference-epochs applies to --reference-arch same only")
        return StackedTraining(hidden=(args.shadow_hidden,), steps=args.shadow_steps), []
    if not known or recipe is None:
        raise BadInput(
            "--reference-arch same needs the target's architecture: give a zoo name or an "
            "`adversa train` directory as --model (or use --reference-arch mlp)"
        )
    if args.reference_epochs is not None:
        from adversa.cli.common import check_positive

        check_positive("--reference-epochs", args.reference_epochs)
    config = recipe[2]
    training = ArchTraining.from_train_config(config, epochs=args.reference_epochs)
    warnings = []
    if config.defense_name != "none":
        warnings.append(
            f"reference models use the target's architecture and optimiser but train without "
            f"its defense ({config.defense_name})"
        )
    return training, warnings


def cmd_privacy(args: argparse.Namespace) -> int:
    from adversa.cli.common import EXIT_OK, RichProgress, check_positive
    from adversa.load import load_model
    from adversa.privacy.audit import MembershipAudit, parse_membership_attacks
    from adversa.privacy.boundary import BoundaryDistance
    from adversa.privacy.report import membership_report, write_membership_reports
    from adversa.privacy.stacked import StackedTraining

    start = time.perf_counter()
    check_positive("--n", args.n)
    check_positive("--shadows", args.shadows)
    check_positive("--shadow-steps", args.shadow_steps)
    check_positive("--shadow-hidden", args.shadow_hidden)
    check_positive("--boundary-queries", args.boundary_queries)
    fprs = _parse_fprs(args.fpr)
    attacks = parse_membership_attacks(args.attack)
    training, warnings = _reference_training(args)
    audit = MembershipAudit(
        attacks=attacks,
        num_shadows=args.shadows,
        training=training,
        fixed_variance=args.fixed_variance,
        boundary=BoundaryDistance(
            attack=args.boundary_attack, max_queries=args.boundary_queries, seed=args.seed
        ),
        seed=args.seed,
    )
    parts = _candidates(args)
    dataset = parts["dataset"]
    with RichProgress() as progress:
        model = load_model(
            args.model,
            weights=args.weights,
            progress=progress,
            num_classes=dataset.num_classes,
            bounds=tuple(dataset.bounds),
            trust_model_file=args.trust_model_file,
        )
        source = (
            f"--members {args.members}" if args.members else f"--data {args.data or dataset.name}"
        )
        logits = check_model_accepts(model, parts["members"][0], data=source)
        check_labels(parts["members"][1], logits.shape[1], source)
        nonmembers = f"--nonmembers {args.nonmembers}" if args.nonmembers else "the test split"
        check_labels(parts["nonmembers"][1], logits.shape[1], nonmembers)
        results, is_member = audit(
            model, parts["members"], parts["nonmembers"], parts["pool"], progress
        )
    config = {
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "attacks": list(audit.attacks),
        "shadows": args.shadows,
        "reference_arch": "mlp" if isinstance(training, StackedTraining) else "same",
        "shadow_training": _training_dict(training),
        "boundary_attack": audit.boundary.evasion(model) if "boundary" in attacks else None,
        "fixed_variance": args.fixed_variance,
        "n_members": int(is_member.sum()),
        "n_nonmembers": int((~is_member).sum()),
        "shadow_pool": None if parts["pool"] is None else len(parts["pool"][1]),
        "fprs": list(fprs),
        "seed": args.seed,
    }
    data = membership_report(
        results,
        is_member,
        config=config,
        seed=args.seed,
        seconds=time.perf_counter() - start,
        fprs=fprs,
        extra={"membership_source": parts["source"], "warnings": warnings},
    )
    _, html_path = write_membership_reports(args.out, data)
    for a in data["attacks"]:
        tprs = "  ".join(f"TPR@{100 * f:g}%FPR {100 * a['tpr_at_fpr'][str(f)]:5.2f}%" for f in fprs)
        print(
            f"{a['name']:<16} AUC {a['auc']:.3f}  balanced acc "
            f"{100 * a['balanced_accuracy']:.1f}%  {tprs}"
        )
    print(f"report: {html_path}")
    return EXIT_OK


def _training_dict(training: Any) -> dict[str, Any]:
    out = dataclasses.asdict(training)
    if not isinstance(out.get("arch", ""), str):
        out["arch"] = training.arch_name
    return out


def _parse_classes(text: str | None, num_classes: int) -> torch.Tensor | None:
    if text is None:
        return None
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BadInput(f"--classes: cannot read {text!r} as comma-separated integers") from None
    bad = [v for v in values if not 0 <= v < num_classes]
    if not values or bad:
        raise BadInput(f"--classes must lie in [0, {num_classes}), got {text!r}")
    return torch.tensor(values)


def cmd_invert(args: argparse.Namespace) -> int:
    from adversa.cli.common import EXIT_OK, RichProgress, check_positive
    from adversa.load import load_model
    from adversa.model import Model
    from adversa.privacy.inversion import MIFace, class_means, inversion_measures
    from adversa.privacy.report import inversion_report, write_inversion_reports
    from adversa.privacy.stacked import StackedTraining, train_stacked

    start = time.perf_counter()
    check_positive("--steps", args.steps)
    if not (math.isfinite(args.tv) and args.tv >= 0):
        raise BadInput(f"--tv must be >= 0 and finite, got {args.tv}")
    inits = tuple(p.strip() for p in args.init.split(",") if p.strip())
    attack = MIFace(
        steps=args.steps,
        step_size=args.step_size,
        tv_weight=args.tv,
        objective=args.objective,
        inits=inits,
        seed=args.seed,
    )
    train, _, source = _splits(args)
    classes = _parse_classes(args.classes, train.num_classes)
    with RichProgress() as progress:
        model = load_model(
            args.model,
            weights=args.weights,
            progress=progress,
            num_classes=train.num_classes,
            bounds=tuple(train.bounds),
            trust_model_file=args.trust_model_file,
        )
        check_model_accepts(model, train.x, data=f"--data {args.data or train.name}")
        result = attack(model, train.input_shape, classes, mean_image=train.x.mean(0))
        if args.independent:
            independent = load_model(
                args.independent,
                progress=progress,
                num_classes=train.num_classes,
                bounds=tuple(train.bounds),
                trust_model_file=args.trust_model_file,
            )
            check_model_accepts(independent, train.x, data=f"--data {args.data or train.name}")
            independent_name = args.independent
        else:  # an MLP of another architecture and seed, trained on the same split
            masks = torch.ones(1, len(train), dtype=torch.bool)
            recipe = StackedTraining(hidden=(64,), steps=200, seed=args.seed + 1000)
            net = train_stacked(
                train.x, train.y, masks, recipe, train.num_classes, progress, "independent model"
            )
            independent = Model(net.member(0), num_classes=train.num_classes, name="mlp")
            independent_name = "MLP (64 hidden) trained by adversa on the same split"
        measures = inversion_measures(result, model, train.x, train.y, independent)
    config = {
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "reference_data": source,
        "classes": result.classes.tolist(),
        "inits": list(inits),
        "steps": args.steps,
        "step_size": args.step_size,
        "tv": args.tv,
        "objective": args.objective,
        "independent": independent_name,
        "seed": args.seed,
    }
    data = inversion_report(
        result, measures, config=config, seed=args.seed, seconds=time.perf_counter() - start
    )
    means = class_means(train.x, train.y, train.num_classes)
    names = list(train.class_names) if train.class_names else None
    _, html_path = write_inversion_reports(
        args.out, data, result, means, tuple(train.bounds), names
    )
    print(
        f"MIFace on {len(result.classes)} classes x {len(inits)} inits: attacked model "
        f"assigns {100 * measures['target_rate']:.1f}% to their class (mean confidence "
        f"{100 * measures['target_confidence']:.1f}%), independent model "
        f"{100 * measures['independent_rate']:.1f}%; RMSE to class mean "
        f"{measures['class_mean_rmse']:.3f}"
    )
    print(f"report: {html_path}")
    return EXIT_OK
