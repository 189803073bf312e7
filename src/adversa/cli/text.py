"""`adversa text-attack`: attack a text filter with DeepWordBug and PWWS, optionally defend it
by adversarial data augmentation, and write DIR/report.json and DIR/report.html.

adversa text-attack --data movie-reviews|file.csv --attacks pwws,deepwordbug --n 200 --out DIR
                    [--text-column text --label-column label]
                    [--model PATH | --model sklearn:pipe.joblib --trust-model-file]
                    [--max-change 0.25] [--min-similarity 0.8] [--seed 0]
                    [--augment N] [--save-model PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from adversa.cli.common import RichProgress, check_output_file, check_positive, parse_attacks
from adversa.errors import BadInput


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
    tx.add_argument("--text-column", default="text", help="the text column of a .csv (text)")
    tx.add_argument("--label-column", default="label", help="the label column of a .csv (label)")
    tx.add_argument("--attacks", default="pwws,deepwordbug", help="comma-separated text attacks")
    tx.add_argument("--n", type=int, default=200, help="attack the first N test texts")
    tx.add_argument(
        "--model",
        help="a TextClassifier.save file, or sklearn:PATH.joblib (anything with "
        "predict_proba(list of str), e.g. a TF-IDF pipeline; needs --trust-model-file); default: "
        "a bag-of-words filter trained on the data's train split",
    )
    tx.add_argument(
        "--trust-model-file",
        action="store_true",
        help="allow loading sklearn:PATH.joblib; unpickling runs code from the file",
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
    from adversa.text import (
        TEXT_ATTACKS,
        TextClassifier,
        load_text_data,
        load_text_victim,
        train_text_classifier,
    )
    from adversa.text.base import run_text_attack
    from adversa.text.data import TEXT_DATASETS
    from adversa.text.defense import evaluate_augmentation
    from adversa.text.model import load_text_model
    from adversa.text.report import text_report, write_text_report

    start = time.perf_counter()
    check_positive("--n", args.n)
    if args.save_model:
        check_output_file("--save-model", args.save_model)
    if args.augment is not None:
        check_positive("--augment", args.augment)
    names = [TEXT_ATTACKS.canonical(n) for n in parse_attacks(args.attacks)]
    options: dict[str, Any] = {"seed": args.seed}
    if args.max_change is not None:
        options["max_change"] = args.max_change
    if args.min_similarity is not None:
        options["min_similarity"] = args.min_similarity
    attacks = [TEXT_ATTACKS.get(name, **options) for name in names]
    split = load_text_data(args.data, text_column=args.text_column, label_column=args.label_column)
    if args.model:
        model = load_text_model(args.model, trust_model_file=args.trust_model_file)
    elif args.data in TEXT_DATASETS:
        model = load_text_victim(data=args.data)
    else:  # a user's csv: the same bag-of-words recipe on its train split (seconds)
        model = train_text_classifier(split.train_texts, split.train_labels)
    if (args.augment or args.save_model) and not isinstance(model, TextClassifier):
        raise BadInput(
            "--augment and --save-model work on adversa's bag-of-words model; they cannot "
            f"retrain or save a {type(model).__name__} (augment your own pipeline's data)"
        )
    texts, labels = split.test_texts[: args.n], split.test_labels[: args.n]
    defense = None
    with RichProgress() as progress:
        if args.augment:
            evaluation = evaluate_augmentation(
                model,
                split,
                attacks,
                n_eval=args.n,
                n_augment=args.augment,
                seed=args.seed,
                progress=progress,
            )
            results = evaluation.before
            defense = evaluation.summary()
            final_model = evaluation.model
        else:
            results = [run_text_attack(a, model, texts, labels, progress=progress) for a in attacks]
            final_model = model
    if args.save_model:
        final_model.save(args.save_model)
    config = {
        "model": args.model or f"{Path(args.data).name}-bow",
        "data": args.data,
        "attacks": names,
        "n": len(texts),
        "seed": args.seed,
        "max_change": attacks[0].max_change,
        "min_similarity": attacks[0].min_similarity,
        "augment": args.augment,
    }
    report = text_report(
        results,
        config=config,
        class_names=split.class_names,
        defense=defense,
        seconds=time.perf_counter() - start,
    )
    json_path, html_path = write_text_report(args.out, report)
    for a in report["attacks"]:
        print(
            f"{a['name']:<12} success {100 * a['success_rate']:5.1f}% of {a['n_attacked']}  "
            f"words changed {100 * (a['mean_words_changed'] or 0):4.1f}%  "
            f"similarity {a['mean_similarity'] or 0:.3f}  queries {a['mean_queries'] or 0:.1f}  "
            f"{a['seconds']:.1f} s"
        )
    if defense:
        print(
            f"augmentation: +{defense['n_added']} texts; clean accuracy "
            f"{100 * defense['clean_accuracy_before']:.1f}% -> "
            f"{100 * defense['clean_accuracy_after']:.1f}%; "
            + ", ".join(
                f"{d['name']} {100 * d['success_rate_before']:.1f}% -> "
                f"{100 * d['success_rate_after']:.1f}%"
                for d in defense["attacks"]
            )
        )
    print(f"report: {html_path} (and {json_path})")
    return 0
