"""`adversa evaluate`: attack a model with a battery of attacks at one or more eps and write
report.json and report.html (optionally beside input-side defenses, certification and a
backdoor's attack success rate)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from adversa import distributed
from adversa.attacks import ATTACKS, get_attack
from adversa.attacks.adaptive import EOT, bpda
from adversa.checks import check_batch
from adversa.cli.common import (
    EXIT_OK,
    RichProgress,
    check_device,
    check_positive,
    parse_attacks,
    parse_bounds,
    parse_eps,
)
from adversa.cli.input_defenses import add_evaluate_options, defense_summary, evaluate_defended
from adversa.data import load_data
from adversa.data.files import check_labelled_folder, folder_class_warning
from adversa.errors import BadInput
from adversa.evaluation import evaluate_sweep
from adversa.evaluation.adaptive_eval import attach_to_report
from adversa.evaluation.report import Report, write_reports
from adversa.load import load_model
from adversa.model import Access, check_model_accepts
from adversa.threat import NORMS, ThreatModel


def add_evaluate_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    ev = commands.add_parser(
        "evaluate",
        parents=[common],
        help="robust accuracy under a cascade of attacks; writes report.json and report.html",
        description="Evaluate a model's robustness: clean accuracy, then a cascade of attacks "
        "(each only on the points still robust) and the per-sample worst case, with sanity "
        "checks for gradient masking. Writes DIR/report.json and DIR/report.html.",
    )
    ev.add_argument(
        "--model",
        required=True,
        help="zoo name, TorchScript file, .pt2 archive (with --trust-model-file), "
        "path/file.py:factory (with --weights), or sklearn:path.joblib (with --trust-model-file)",
    )
    ev.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
        "which runs code from the file (--model and --surrogate)",
    )
    ev.add_argument(
        "--weights",
        help="state_dict (.pt, loaded weights-only) or .safetensors for a file.py:factory model",
    )
    ev.add_argument(
        "--data",
        required=True,
        help="built-in name (mnist, digits, "
        "breast-cancer), .npz with x and y, .csv (with --label-column), or an "
        "image folder root/<class>/*.png",
    )
    ev.add_argument("--label-column", help="the label column of a .csv dataset")
    ev.add_argument("--bounds", help="input range LO,HI (default: the dataset's, usually 0,1)")
    ev.add_argument("--norm", required=True, choices=NORMS, help="the threat model's norm")
    ev.add_argument(
        "--eps",
        required=True,
        help="radius, or a comma-separated sweep; "
        "fractions allowed (8/255). The first value is the headline.",
    )
    ev.add_argument(
        "--attacks",
        help="comma-separated registry names in cascade order "
        "(default: fgsm,pgd, plus deepfool for linf/l2 and cw for l2 when "
        "available); see `adversa list attacks`",
    )
    ev.add_argument(
        "--n",
        type=int,
        help="evaluate the first N test points (deterministic: "
        "the dataset's own order; default all)",
    )
    ev.add_argument("--batch-size", type=int, default=256, help="points per attack batch")
    ev.add_argument("--seed", type=int, default=0, help="seeds every attack (default 0)")
    ev.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default cpu)")
    ev.add_argument("--steps", type=int, help="override the steps of every attack that has them")
    ev.add_argument(
        "--eot",
        type=int,
        metavar="K",
        help="attack the expectation over K random draws of a randomised model (EOT)",
    )
    ev.add_argument(
        "--bpda",
        choices=("identity",),
        help="backward pass through the model's non-differentiable submodules (those marked "
        "non_differentiable=True) as the identity (BPDA)",
    )
    ev.add_argument("--surrogate", help="model the 'transfer' attack crafts its examples on")
    ev.add_argument("--surrogate-weights", help="weights for a file.py:factory --surrogate")
    ev.add_argument(
        "--check-masking",
        action="store_true",
        help="also run the costlier gradient-masking checks: convergence (2x steps, one more "
        "restart) and an eps sweep up to the full input range",
    )
    add_evaluate_options(ev)
    ev.add_argument(
        "--certify",
        choices=("ibp", "crown"),
        help="also verify each point with IBP or CROWN bounds and check certified <= robust",
    )
    ev.add_argument(
        "--constraints",
        metavar="SPEC",
        help="tabular feature constraints every attack must respect: 'data' (the data set's "
        "own, e.g. fraud) or a JSON file with immutable/integer/increase_only/categorical/"
        "lower/upper/weights, features by name, values in original units",
    )
    ev.add_argument(
        "--backdoor",
        metavar="DIR",
        help="a directory from `adversa poison`: also report the attack success rate of its "
        "trigger (in report.json under config.backdoor)",
    )
    ev.add_argument("--out", required=True, help="output directory (created if missing)")
    ev.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    eps_values = parse_eps(args.eps)
    names = parse_attacks(args.attacks) if args.attacks else default_attacks(args.norm)
    names = [ATTACKS.canonical(name) for name in names]  # unknown names fail before any work
    check_positive("--batch-size", args.batch_size)
    if args.n is not None:
        check_positive("--n", args.n)
    if args.steps is not None:
        check_positive("--steps", args.steps)
    check_device(args.device)

    if args.surrogate_weights and not args.surrogate:
        raise BadInput(f"--surrogate-weights {args.surrogate_weights}: needs --surrogate MODEL")
    if args.surrogate and "transfer" not in names:
        raise BadInput(
            f"--surrogate {args.surrogate}: only the 'transfer' attack uses a surrogate; add "
            f"transfer to --attacks (got {','.join(names)})"
        )
    if args.defense:
        from adversa.input_defenses.spec import parse_defense

        parse_defense(args.defense)  # a bad spec fails before the model loads
    dataset = load_data(args.data, split="test", label_column=args.label_column).take(args.n)
    check_labelled_folder(dataset)
    bounds = parse_bounds(args.bounds) if args.bounds else tuple(dataset.bounds)
    threat = ThreatModel(norm=args.norm, eps=eps_values[0], bounds=bounds)
    if args.constraints:
        from adversa.tabular import ConstrainedThreat
        from adversa.tabular.changes import load_constraints

        constraints = load_constraints(dataset, args.constraints)
        threat = ConstrainedThreat(
            norm=args.norm, eps=eps_values[0], bounds=bounds, constraints=constraints
        )
    threats = [threat.with_eps(eps) for eps in eps_values]
    check_batch(dataset.x, dataset.y, max(threats, key=lambda t: t.eps), None)

    if args.eot is not None:
        check_positive("--eot", args.eot)
    if "transfer" in names and not args.surrogate:
        raise BadInput("attack 'transfer' needs --surrogate MODEL")
    joined = distributed.init_from_env(args.device)
    main_rank = distributed.is_main()  # the group is gone once shut down: ask now
    try:
        with RichProgress(enabled=main_rank) as progress:
            model = _load_on_all_ranks(
                args.model, args.weights, args.device, progress, bounds, args.trust_model_file
            )
            surrogate = (
                _load_on_all_ranks(
                    args.surrogate,
                    args.surrogate_weights,
                    args.device,
                    progress,
                    bounds,
                    args.trust_model_file,
                )
                if args.surrogate
                else None
            )
            defense = args.defense or args.detector  # input-side: naive and adaptive runs
            if args.eot is not None and not defense:
                model = EOT(model, args.eot)
            backdoor = _backdoor(model, dataset, args)  # before the attacks: it can fail
            if not args.attacks and model.access < Access.GRADIENT:
                names = default_attacks(args.norm, gradients=False)
            attacks = [
                _build_attack(name, threat, args.seed, args.steps, surrogate) for name in names
            ]
            evaluation = (
                evaluate_defended(args, model, dataset, threat, eps_values, attacks, progress)
                if defense
                else None
            )
            with bpda(model, args.bpda) if args.bpda else contextlib.nullcontext():
                sweep = (
                    evaluation.adaptive
                    if evaluation is not None
                    else evaluate_sweep(
                        model,
                        dataset.x,
                        dataset.y,
                        threat,
                        eps_values,
                        attacks,
                        batch_size=args.batch_size,
                        seed=args.seed,
                        progress=progress,
                        check_masking=args.check_masking,
                    )
                )
    finally:
        if joined:
            distributed.shutdown()
    if not main_rank:
        return EXIT_OK
    config: dict[str, Any] = {
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "label_column": args.label_column,
        "norm": args.norm,
        "eps": eps_values,
        "bounds": list(bounds),
        "attacks": names,
        "n": len(dataset),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "steps": args.steps,
        "device": args.device,
        "eot": args.eot,
        "bpda": args.bpda,
        "surrogate": args.surrogate,
        "check_masking": args.check_masking,
        "certify": args.certify,
        "constraints": args.constraints,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "class_names": list(dataset.class_names) if dataset.class_names else None,
    }
    if "class_map" in dataset.meta:  # an image folder: which folder is which label, and why
        config["class_map"] = dataset.meta["class_map"]
        config["labels_from"] = dataset.meta["labels_from"]
    if backdoor is not None:
        config["backdoor"] = backdoor
    report = Report.from_results(sweep, config=config, seconds=time.perf_counter() - start)
    if "class_map" in dataset.meta:
        folder_warning = folder_class_warning(dataset, _num_outputs(model, dataset))
        if folder_warning:
            report = dataclasses.replace(report, warnings=(*report.warnings, folder_warning))
    if evaluation is not None:
        report = attach_to_report(report, evaluation)
    if args.certify:
        from adversa.certify.consistency import attach_certification, certify_sweep

        entries, bugs = certify_sweep(model, sweep, args.certify, args.batch_size, None)
        report = attach_certification(report, entries, bugs)
    _, html_path = write_reports(
        args.out,
        report,
        sweep,
        kind=dataset.kind,
        class_names=dataset.class_names,
        feature_names=dataset.feature_names,
    )
    print(summary(report, Path(args.out), html_path))
    if args.backdoor:
        bd = config["backdoor"]
        print(f"backdoor: clean accuracy {bd['clean_accuracy']:.1%}   ASR {bd['asr']:.1%}")
    if evaluation is not None:
        print(defense_summary(evaluation))
    return EXIT_OK


def summary(report: Report, out: Path, html_path: Path) -> str:
    """A few lines for the terminal: accuracies per eps, warnings, where the report is."""
    config = report.config
    lines = [
        f"{config.get('model')} on {config.get('data')}: n={report.n}, {config.get('norm')}, "
        f"seed {report.seed}, {report.seconds:.1f} s",
        f"clean accuracy   {100 * report.clean_accuracy:5.1f}%",
    ]
    for entry in report.results:
        steps = ", ".join(
            f"{a['name']} {100 * a['robust_accuracy']:.1f}%" for a in entry["attacks"]
        )
        lines.append(
            f"robust accuracy  {100 * entry['robust_accuracy']:5.1f}% at eps={entry['eps']:g}"
            f"  (after {steps})"
        )
    for entry in report.certified:
        lines.append(
            f"certified ({entry['method']}) {100 * entry['certified_accuracy']:5.1f}% at "
            f"eps={entry['eps']:g}"
        )
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    lines.append(f"report: {html_path} (and {out / 'report.json'})")
    return "\n".join(lines)


def _num_outputs(model: Any, dataset: Any) -> int | None:
    """How many classes the model scores (one forward pass on one point if not yet known)."""
    if model.num_classes is not None:
        return int(model.num_classes)
    import torch

    with torch.no_grad():
        return int(model(dataset.x[:1].to(model.device)).shape[-1])


def _backdoor(model: Any, dataset: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """The `--backdoor DIR` summary (clean accuracy and ASR of its trigger), or None."""
    if args.backdoor is None:
        return None
    from adversa.cli.poison import backdoor_summary

    check_model_accepts(model, dataset.x, data=f"--data {args.data}")
    return backdoor_summary(model, dataset, args.backdoor)


def default_attacks(norm: str, gradients: bool = True) -> list[str]:
    """Cheap first: fgsm, pgd, then deepfool (linf, l2) and cw (l2). A model without gradient
    access (e.g. scikit-learn) gets the black-box attacks for its norm: square, hsj."""
    if not gradients:
        return [n for n in ("square", "hsj") if norm in ATTACKS.factory(n).norms]
    names = ["fgsm", "pgd"]
    if "deepfool" in ATTACKS and norm in ("linf", "l2"):
        names.append("deepfool")
    if "cw" in ATTACKS and norm == "l2":
        names.append("cw")
    return names


def _load_on_all_ranks(
    spec: str,
    weights: str | None,
    device: str,
    progress: Any,
    bounds: tuple[float, float],
    trust_model_file: bool = False,
) -> Any:
    """Load a model; under torchrun rank 0 goes first, so a zoo model trains once."""
    if not distributed.is_main():
        distributed.barrier()
    model = load_model(
        spec,
        weights=weights,
        device=device,
        progress=progress,
        bounds=bounds,
        trust_model_file=trust_model_file,
    )
    if distributed.is_main():
        distributed.barrier()
    return model


def _build_attack(
    name: str, threat: ThreatModel, seed: int, steps: int | None, surrogate: Any = None
) -> Any:
    """The attack object with `seed` (and `steps`, if it has that option; `surrogate` for
    'transfer'); a name when it does not support the threat's norm, so that the evaluation
    skips it with a warning."""
    factory = ATTACKS.factory(name)
    if threat.norm not in getattr(factory, "norms", NORMS):
        return name
    options: dict[str, Any] = {"seed": seed}
    if name == "transfer":
        options["surrogate"] = surrogate
    if (
        steps is not None
        and dataclasses.is_dataclass(factory)
        and "steps" in {f.name for f in dataclasses.fields(factory)}
    ):
        options["steps"] = steps
    return get_attack(name, threat, **options)
