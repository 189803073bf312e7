"""The `adversa` command: a thin layer over the library. Every command is one library call plus
I/O; progress bars (rich) live here only.

Exit codes: 0 success; 2 bad input (argparse errors and every `AdversaError`, printed as one
line `adversa: error: <message>`); 1 anything else (a short message; the traceback only with
`--debug` or ADVERSA_DEBUG=1); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence

from adversa.attacks import ATTACKS
from adversa.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    check_out_dir,
    check_seed,
    one_line,
)
from adversa.cli.evaluate import add_evaluate_parser
from adversa.cli.extract import add_extract_parser
from adversa.cli.input_defenses import add_reformer_parser
from adversa.cli.patch import add_patch_parser
from adversa.cli.universal import add_universal_parser
from adversa.data import list_datasets
from adversa.errors import AdversaError
from adversa.nets import ARCHS
from adversa.threat import NORMS
from adversa.zoo import list_models, zoo_entry

LIST_WHAT = (
    "archs",
    "attacks",
    "datasets",
    "defenses",
    "extractions",
    "models",
    "poisons",
    "text-attacks",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`); return the exit code."""
    parser = build_parser()
    argv = join_negative_values(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    debug = bool(args.debug) or os.environ.get("ADVERSA_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    try:
        if vars(args).get("seed") is not None:
            check_seed(args.seed)
        if vars(args).get("out") is not None:  # every command's output directory, before work
            check_out_dir("--out", args.out)
        return args.handler(args)
    except AdversaError as exc:
        if debug:
            traceback.print_exc()
        print(f"adversa: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("adversa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
            hint = ""
        else:
            hint = " (run with --debug or ADVERSA_DEBUG=1 for the traceback)"
        print(
            f"adversa: internal error: {type(exc).__name__}: {one_line(exc)}{hint}",
            file=sys.stderr,
        )
        return EXIT_ERROR


# A value argparse would take for an option: `-1,1`, `-0.5,0.5`, `-inf,0`, `-8/255`.
_NEGATIVE_VALUE = re.compile(r"-(\d|\.\d|inf\b|nan\b)", re.IGNORECASE)
# One argparse already reads as a value (a plain negative number): left alone.
_ARGPARSE_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--bounds -1,1` as `--bounds=-1,1`: argparse reads a value starting with '-' as an
    option unless it is a plain negative number, so such a value after a long option is joined
    to it. Only tokens argparse would reject are changed; nothing after `--` is."""
    out: list[str] = []
    for token in argv:
        previous = out[-1] if out else ""
        if (
            "--" not in out
            and previous.startswith("--")
            and previous != "--"
            and "=" not in previous
            and _NEGATIVE_VALUE.match(token)
            and not _ARGPARSE_NUMBER.match(token)
        ):
            out[-1] = f"{previous}={token}"
        else:
            out.append(token)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adversa",
        description="Attack, defend and measure PyTorch classifiers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_evaluate_parser(commands, common)
    add_reformer_parser(commands, common)
    add_extract_parser(commands, common)

    from adversa.cli.train import add_train_parser

    add_train_parser(commands, common)

    from adversa.cli.certify import add_certify_parser

    add_certify_parser(commands, common)

    from adversa.cli.poison import add_poison_parsers

    add_poison_parsers(commands, common)

    from adversa.cli.text import add_text_parser

    add_text_parser(commands, common)

    from adversa.cli.privacy import add_privacy_parsers

    add_privacy_parsers(commands, common)

    from adversa.cli.privacy_defense import add_privacy_defense_parser

    add_privacy_defense_parser(commands, common)
    add_universal_parser(commands, common)
    add_patch_parser(commands, common)

    ls = commands.add_parser(
        "list",
        parents=[common],
        help="list attacks, datasets, defenses, models, poisons or text attacks",
    )
    ls.add_argument("what", choices=LIST_WHAT)
    ls.set_defaults(handler=cmd_list)

    cmp = commands.add_parser(
        "compare",
        parents=[common],
        help="compare evaluated models: clean-vs-robust scatter and a table",
        description="Put several `adversa evaluate` outputs (DIR/report.json) or `adversa "
        "train` outputs (DIR/card.json) side by side. Writes OUT/compare.json and "
        "OUT/compare.html.",
    )
    cmp.add_argument("dirs", nargs="+", metavar="DIR", help="report or training directories")
    cmp.add_argument("--out", required=True, help="output directory (created if missing)")
    cmp.set_defaults(handler=cmd_compare)
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "attacks":
        for name in ATTACKS.list():
            norms = getattr(ATTACKS.factory(name), "norms", NORMS)
            print(f"{name:<20} norms: {', '.join(norms)}")
    elif args.what == "archs":
        print("\n".join(ARCHS.list()))
    elif args.what == "extractions":
        from adversa.extraction import EXTRACTIONS

        print("\n".join(EXTRACTIONS.list()))
    elif args.what == "datasets":
        print("\n".join(list_datasets()))
    elif args.what == "defenses":
        from adversa.defenses import DEFENSES

        for name in DEFENSES.list():
            doc = (DEFENSES.factory(name).__doc__ or "").strip().splitlines()
            print(f"{name:<14} {doc[0] if doc else ''}")
    elif args.what == "poisons":
        from adversa.poisoning import POISON_DETECTORS, POISONS

        print("attacks:   " + ", ".join(POISONS.list()))
        print("detectors: " + ", ".join([*POISON_DETECTORS.list(), "strip"]))
    elif args.what == "text-attacks":
        from adversa.text import TEXT_ATTACKS

        print("\n".join(TEXT_ATTACKS.list()))
    else:
        for name in list_models():
            print(f"{name:<20} {zoo_entry(name).description}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from adversa.compare import compare, summary, write_compare

    result = compare(args.dirs)
    json_path, html_path = write_compare(result, args.out)
    print(summary(result))
    print(f"comparison: {html_path} (and {json_path})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
