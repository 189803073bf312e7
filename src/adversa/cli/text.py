"""`adversa text-attack`: attack a text filter with DeepWordBug and PWWS, optionally defend it
by adversarial data augmentation, and write DIR/report.json and DIR/report.html.

adversa text-attack --data movie-reviews|file.csv --attacks pwws,deepwordbug --n 200 --out DIR
                    [--text-column text --label-column label]
                    [--model builtin:bow|builtin:minilm|hf:DIR|PATH|sklearn:pipe.joblib]
                    [--trust-model-file] [--ranking queries|gradient]
                    [--max-change 0.25] [--min-similarity 0.8] [--seed 0]
                    [--augment N] [--save-model PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adversa.cli.common import (
    EXIT_OK,
    RichProgress,
    check_output_file,
    check_positive,
    parse_attacks,
)
from adversa.errors import BadInput
from adversa.jobs.text import TextAttackPlan, text_victim
from adversa.text import TextClassifier, load_text_data
from adversa.text.report import write_text_report


def add_text_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    tx = commands.add_parser(
        "text-attack",
        parents=[common],
        help="word- and character-level attacks on a text classifier (pwws, deepwordbug)",
        description="Attack a text classifier (default: a bag-of-words filter trained and "
        "cached on the data's train split) on the first N test texts. Writes DIR/report.json "
        "and DIR/report.html with success rates, words changed, similarity, queries and "
        "highlighted examples.",
    )
    tx.add_argument(
        "--data",
        default="movie-reviews",
        help="built-in text set (movie-reviews) or a .csv with a text and a label column",
    )
    tx.add_argument("--text-column", help="the text column of a .csv (default text)")
    tx.add_argument("--label-column", help="the label column of a .csv (default label)")
    tx.add_argument("--attacks", default="pwws,deepwordbug", help="comma-separated text attacks")
    tx.add_argument(
        "--n", "--n-points", type=int, default=200, help="attack the first N test texts"
    )
    tx.add_argument(
        "--model",
        help="builtin:bow (default: a bag-of-words filter trained on the data's train split), "
        "builtin:minilm (a MiniLM encoder with a trained linear head), hf:DIR (a local Hugging "
        "Face sequence-classification directory with its tokenizer), a TextClassifier.save "
        "file, or sklearn:PATH.joblib (anything with predict_proba(list of str); needs "
        "--trust-model-file)",
    )
    tx.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading sklearn:PATH.joblib and hf:DIR with pytorch_model.bin weights; "
        "unpickling runs code from the file",
    )
    tx.add_argument(
        "--ranking",
        choices=("queries", "gradient"),
        default="queries",
        help="rank words by model queries (leave-one-out, the papers'), or by the gradient "
        "norm at their token embeddings (builtin:minilm, hf:DIR); default queries",
    )
    tx.add_argument("--max-change", type=float, help="largest share of words changed (0.25)")
    tx.add_argument("--min-similarity", type=float, help="smallest MiniLM similarity (0.8)")
    tx.add_argument("--seed", type=int, default=0, help="seeds the attacks and augmentation")
    tx.add_argument(
        "--augment",
        type=int,
        metavar="N",
        help="also defend: attack N training texts, retrain with the successes, re-attack",
    )
    tx.add_argument("--save-model", help="save the (augmented, with --augment) model here")
    tx.add_argument("--out", required=True, help="output directory (created if missing)")
    tx.set_defaults(handler=cmd_text_attack)


def cmd_text_attack(args: argparse.Namespace) -> int:
    check_positive("--n", args.n)
    if args.save_model:
        check_output_file("--save-model", args.save_model)
    if args.augment is not None:
        check_positive("--augment", args.augment)
    plan = TextAttackPlan(
        attacks=tuple(parse_attacks(args.attacks)),
        n=args.n,
        max_change=args.max_change,
        min_similarity=args.min_similarity,
        seed=args.seed,
        augment=args.augment,
        ranking=args.ranking,
        provenance={"model": args.model or f"{Path(args.data).name}-bow", "data": args.data},
    )
    for flag, value in (("--text-column", args.text_column), ("--label-column", args.label_column)):
        if value is not None and not args.data.lower().endswith(".csv"):
            raise BadInput(f"{flag} {value}: applies to a .csv --data only, got {args.data!r}")
    split = load_text_data(
        args.data,
        text_column=args.text_column or "text",
        label_column=args.label_column or "label",
    )
    model = text_victim(args.data, split, args.model, trust_model_file=args.trust_model_file)
    if args.save_model and not isinstance(model, TextClassifier):
        raise BadInput(
            "--augment and --save-model work on adversa's bag-of-words model; they cannot "
            f"retrain or save a {type(model).__name__} (augment your own pipeline's data)"
        )
    with RichProgress() as progress:
        run = plan.run(model, split, progress)
    if args.save_model:
        run.model.save(args.save_model)
    json_path, html_path = write_text_report(args.out, run.report)
    print(summary(run.report))
    print(f"report: {html_path} (and {json_path})")
    return EXIT_OK


def summary(report: dict[str, Any]) -> str:
    """A line per attack, and one for the augmentation defense when there is one."""
    lines = [
        f"{a['name']:<12} success {100 * a['success_rate']:5.1f}% of {a['n_attacked']}  "
        f"words changed {100 * (a['mean_words_changed'] or 0):4.1f}%  "
        f"similarity {a['mean_similarity'] or 0:.3f}  queries {a['mean_queries'] or 0:.1f}  "
        f"{a['seconds']:.1f} s"
        + (
            f"  (gradient ranking: {a['mean_gradients']:.1f} passes, "
            f"{a['mean_queries_saved']:.1f} queries saved)"
            if a.get("mean_gradients")
            else ""
        )
        for a in report["attacks"]
    ]
    defense = report.get("defense")
    if defense:
        lines.append(
            f"augmentation: +{defense['n_added']} texts; clean accuracy "
            f"{100 * defense['clean_accuracy_before']:.1f}% -> "
            f"{100 * defense['clean_accuracy_after']:.1f}%; "
            + ", ".join(
                f"{d['name']} {100 * d['success_rate_before']:.1f}% -> "
                f"{100 * d['success_rate_after']:.1f}%"
                for d in defense["attacks"]
            )
        )
    return "\n".join(lines)
