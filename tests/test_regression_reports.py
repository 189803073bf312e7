"""Fixed-seed commands across train, evaluate, certify, poison and privacy give the numbers
recorded in tests/golden/ (timings, versions and paths aside).

This guards refactors that must not change behaviour. A deliberate change of results is
recorded again with `ADVERSA_REGEN_GOLDEN=1 pytest tests/test_regression_reports.py`; review
the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from adversa.cli.main import main

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("ADVERSA_REGEN_GOLDEN", "") not in ("", "0")
VOLATILE = {
    "seconds",
    "timestamp",
    "created",
    "versions",
    "time",
    "elapsed",
    "out",
    "path",
    "paths",
}
REL_TOL = 1e-6

# (name, command line with {d} for the run's directory, the JSON file it writes, relative to {d})
COMMANDS: list[tuple[str, str, str]] = [
    (
        "train",
        "train --data digits --arch mlp --defense pgd-at --eps 0.1 --steps 3 --epochs 4 "
        "--lr 1e-2 --batch-size 128 --seed 0 --eval-size 40 --out {d}/train",
        "train/card.json",
    ),
    (
        "evaluate",
        "evaluate --model {d}/train --data digits --norm linf --eps 0.05,0.1 "
        "--attacks fgsm,pgd,square --steps 5 --n 40 --seed 0 --out {d}/eval",
        "eval/report.json",
    ),
    (
        "certify-crown",
        "certify --model {d}/train --data digits --method crown --eps 0.005,0.01 "
        "--n-points 40 --seed 0 --out {d}/crown",
        "crown/certify.json",
    ),
    (
        "certify-smoothing",
        "certify --model {d}/train --data digits --method smoothing --sigma 0.25 --n0 20 "
        "--samples 100 --n 10 --seed 0 --out {d}/smooth",
        "smooth/certify.json",
    ),
    (
        "poison",
        "poison --data digits --attack badnets --rate 0.1 --target-class 0 --seed 0 "
        "--out {d}/poison",
        "poison/manifest.json",
    ),
    (
        "privacy",
        "privacy --model {d}/train --attack threshold --n 100 --seed 0 --out {d}/privacy",
        "privacy/privacy.json",
    ),
]


def _stable(value: Any, run_dir: str) -> Any:
    """`value` without the keys that change from run to run, and without the run's path."""
    if isinstance(value, dict):
        return {
            k: _stable(v, run_dir)
            for k, v in value.items()
            if k not in VOLATILE and not k.endswith("seconds")
        }
    if isinstance(value, list):
        return [_stable(v, run_dir) for v in value]
    if isinstance(value, str) and run_dir in value:
        return value.replace(run_dir, "{d}")
    return value


def _differences(golden: Any, actual: Any, where: str = "") -> list[str]:
    """Where `actual` departs from `golden`; keys that `actual` adds are allowed."""
    if isinstance(golden, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {type(actual).__name__}"]
        out = []
        for key, value in golden.items():
            if key not in actual:
                out.append(f"{where}.{key}: missing")
            else:
                out.extend(_differences(value, actual[key], f"{where}.{key}"))
        return out
    if isinstance(golden, list):
        if not isinstance(actual, list) or len(actual) != len(golden):
            return [f"{where}: expected a list of {len(golden)}, got {actual!r:.80}"]
        return [
            d
            for i, (g, a) in enumerate(zip(golden, actual, strict=True))
            for d in _differences(g, a, f"{where}[{i}]")
        ]
    if isinstance(golden, float) and isinstance(actual, (int, float)):
        same = math.isclose(golden, actual, rel_tol=REL_TOL, abs_tol=1e-9) or (
            math.isnan(golden) and math.isnan(actual)
        )
        return [] if same else [f"{where}: expected {golden!r}, got {actual!r}"]
    return [] if golden == actual else [f"{where}: expected {golden!r}, got {actual!r}"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("regression"))


@pytest.mark.parametrize("name,argv,written", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_report_matches_golden(name: str, argv: str, written: str, run_dir: str) -> None:
    code = main([a.format(d=run_dir) for a in argv.split()])
    assert code == 0, f"{name} exited {code}"
    report = _stable(json.loads((Path(run_dir) / written).read_text()), run_dir)
    golden_path = GOLDEN / f"{name}.json"
    if REGENERATE:
        GOLDEN.mkdir(exist_ok=True)
        golden_path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {golden_path}")
    golden = json.loads(golden_path.read_text())
    problems = _differences(golden, report, name)
    assert not problems, "\n".join(problems[:20])
