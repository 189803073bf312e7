"""`adversa compare`: rows from evaluation reports and training cards, the HTML scatter and
table, warnings for incomparable rows, and the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from adversa import ThreatModel
from adversa.cli.main import main
from adversa.compare import compare, read_row, render_compare_html, write_compare
from adversa.errors import BadInput
from adversa.evaluation import evaluate
from adversa.evaluation.report import Report, write_reports
from adversa.scatter import Box, place_labels, plot_area, text_width


def fake_report(root: Path, name: str, clean: float, robust: float, eps: float = 0.1) -> Path:
    """A minimal report.json as `adversa evaluate` writes it."""
    out = root / name
    out.mkdir(parents=True)
    report = {
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "n": 100,
        "attacks": [{"name": "fgsm"}, {"name": "pgd"}],
        "warnings": [],
        "config": {"model": f"{name}.pt", "data": "digits", "norm": "linf", "eps": [eps, 0.2]},
        "versions": {},
    }
    (out / "report.json").write_text(json.dumps(report))
    return out


def fake_card(root: Path, name: str) -> Path:
    """A card.json as `adversa train` writes it (the keys compare reads)."""
    out = root / name
    out.mkdir(parents=True)
    card = {
        "format": "adversa-train-card/1",
        "data": "digits",
        "arch": "mlp",
        "defense": {"name": "trades", "options": {"eps": 0.1, "norm": "linf", "beta": 6.0}},
        "evaluation": {
            "clean_accuracy": 0.93,
            "n": 397,
            "robust": {
                "eps": 0.1,
                "norm": "linf",
                "clean_accuracy": 0.94,
                "robust_accuracy": 0.71,
                "n": 200,
                "attacks": [{"name": "apgd-ce"}, {"name": "apgd-t"}],
            },
        },
    }
    (out / "card.json").write_text(json.dumps(card))
    return out


def test_two_reports_give_rows_and_a_scatter(tmp_path: Path):
    first = fake_report(tmp_path, "plain", 0.96, 0.30)
    second = fake_report(tmp_path, "pgd-at", 0.94, 0.72)
    result = compare([first, second])
    rows = result["rows"]
    assert [r["label"] for r in rows] == ["plain", "pgd-at"]
    assert rows[0]["clean_accuracy"] == 0.96 and rows[1]["robust_accuracy"] == 0.72
    assert rows[0]["eps"] == 0.1 and rows[0]["norm"] == "linf"  # the headline (first) eps
    assert rows[0]["attacks"] == ["fgsm", "pgd"]
    assert result["warnings"] == []

    json_path, html_path = write_compare(result, tmp_path / "out")
    assert json.loads(json_path.read_text())["rows"] == rows
    html = html_path.read_text()
    assert "<svg" in html and html.count("<circle") >= 2
    assert "96.0%" in html and "72.0%" in html and "<table>" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_a_training_card_is_a_row(tmp_path: Path):
    row = read_row(fake_card(tmp_path, "run"))
    assert row["defense"] == "trades" and row["model"] == "mlp"
    assert (row["clean_accuracy"], row["robust_accuracy"]) == (0.93, 0.71)
    assert (row["norm"], row["eps"], row["n"]) == ("linf", 0.1, 200)
    assert row["attacks"] == ["apgd-ce", "apgd-t"]


def test_a_card_without_robust_evaluation_is_listed_not_plotted(tmp_path: Path):
    out = fake_card(tmp_path, "clean-only")
    card = json.loads((out / "card.json").read_text())
    card["evaluation"]["robust"] = None
    (out / "card.json").write_text(json.dumps(card))
    result = compare([out, fake_report(tmp_path, "plain", 0.9, 0.3)])
    assert result["rows"][0]["robust_accuracy"] is None
    assert any("no robust accuracy for clean-only" in w for w in result["warnings"])
    assert render_compare_html(result).count("<circle") == 1 + 2  # plain, 2 legend dots


def test_different_threat_models_are_flagged(tmp_path: Path):
    result = compare(
        [fake_report(tmp_path, "a", 0.9, 0.5), fake_report(tmp_path, "b", 0.9, 0.4, eps=0.3)]
    )
    assert any("different threat models" in w for w in result["warnings"])


def test_same_directory_names_are_told_apart(tmp_path: Path):
    result = compare(
        [fake_report(tmp_path / "x", "out", 0.9, 0.5), fake_report(tmp_path / "y", "out", 0.8, 0.4)]
    )
    assert [r["label"] for r in result["rows"]] == ["x/out", "y/out"]


def test_user_strings_are_escaped(tmp_path: Path):
    out = fake_report(tmp_path, "m", 0.9, 0.5)
    data = json.loads((out / "report.json").read_text())
    data["config"]["model"] = "<script>alert(1)</script>"
    (out / "report.json").write_text(json.dumps(data))
    html = render_compare_html(compare([out]))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_real_report(tmp_path: Path, digits_mlp):
    """The report.json `adversa evaluate` writes, not a hand-made one."""
    model, x, y = digits_mlp
    result = evaluate(model, x[:60], y[:60], ThreatModel(norm="linf", eps=0.1), ["fgsm"])
    report = Report.from_results(result, config={"model": "digits-mlp", "data": "digits"})
    write_reports(tmp_path / "eval", report, result)
    row = read_row(tmp_path / "eval")
    assert row["clean_accuracy"] == report.clean_accuracy
    assert row["robust_accuracy"] == report.robust_accuracy
    assert row["attacks"] == ["fgsm"] and row["eps"] == 0.1


def test_bad_inputs(tmp_path: Path):
    with pytest.raises(BadInput, match=r"no report.json .* or card.json"):
        read_row(tmp_path)
    with pytest.raises(BadInput, match="no such file or directory"):
        read_row(tmp_path / "missing")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(BadInput, match="not a readable JSON file"):
        read_row(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{}")
    with pytest.raises(BadInput, match="not an adversa report"):
        read_row(tmp_path / "y.json")


def test_cli(tmp_path: Path, capsys):
    first = fake_report(tmp_path, "plain", 0.96, 0.30)
    second = fake_card(tmp_path, "trades-run")
    code = main(["compare", str(first), str(second), "--out", str(tmp_path / "cmp")])
    assert code == 0
    assert (tmp_path / "cmp" / "compare.json").is_file()
    assert "<svg" in (tmp_path / "cmp" / "compare.html").read_text()
    out = capsys.readouterr().out
    assert "plain" in out and "trades-run" in out and "71.0%" in out

    assert main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_cli_evaluations_of_training_runs_show_their_defense(tmp_path: Path, capsys, monkeypatch):
    """`adversa evaluate --model runs/x` records the run directory as the model: compare reads
    the defense from its card.json, found from where it runs or from the report's parents."""
    fake_card(tmp_path / "runs", "trades-run")  # defense trades
    plain = fake_report(tmp_path / "evals", "trades-eval", 0.9, 0.6)
    guarded = fake_report(tmp_path / "evals", "guarded-eval", 0.9, 0.65)
    for out, extra in ((plain, {}), (guarded, {"defense": "jpeg:quality=75"})):
        data = json.loads((out / "report.json").read_text())
        data["config"].update({"model": "runs/trades-run", **extra})
        (out / "report.json").write_text(json.dumps(data))
    unknown = fake_report(tmp_path / "evals", "file-eval", 0.9, 0.3)
    data = json.loads((unknown / "report.json").read_text())
    data["config"]["model"] = "x" * 5000  # no path can be that long: no run, no error
    (unknown / "report.json").write_text(json.dumps(data))
    for cwd in (tmp_path, tmp_path / "evals"):  # runs/trades-run relative to cwd, then parents
        monkeypatch.chdir(cwd)
        code = main(["compare", str(plain), str(guarded), str(unknown), "--out", "cmp"])
        assert code == 0, capsys.readouterr().err
        rows = json.loads((cwd / "cmp" / "compare.json").read_text())["rows"]
        assert [r["defense"] for r in rows] == ["trades", "trades + jpeg:quality=75", None]
        out = capsys.readouterr().out.splitlines()
        assert out[1].split()[:2] == ["trades-eval", "trades"]
        html = (cwd / "cmp" / "compare.html").read_text()
        assert ">trades</text>" in html and ">unknown</text>" in html  # the legend


def _boxes(html: str) -> list[Box]:
    """The label boxes of the scatter, as drawn (x, baseline and forced text length)."""
    found = re.findall(
        r'<text x="([\d.]+)" y="([\d.]+)" textLength="([\d.]+)" [^>]*data-box="([\d. ]+)"', html
    )
    boxes = []
    for x, y, length, attr in found:
        box = Box(*map(float, attr.split()))
        assert float(x) == pytest.approx(box.x0 + 1, abs=0.06)  # drawn where laid out
        assert float(length) == pytest.approx(box.x1 - box.x0 - 2, abs=0.06)
        assert float(y) == pytest.approx(box.y1 - 4, abs=0.06)
        boxes.append(box)
    return boxes


def test_cli_ten_crowded_models_get_readable_labels(tmp_path: Path, capsys):
    """Ten models in three tight clusters: every label box lies inside the plot and overlaps no
    other label, no point and the legend."""
    points = [(0.96, 0.30), (0.95, 0.31), (0.94, 0.72), (0.93, 0.71), (0.95, 0.70)]
    points += [(0.94, 0.73), (0.92, 0.30), (0.955, 0.305), (0.90, 0.50), (0.91, 0.51)]
    dirs = []
    for i, (clean, robust) in enumerate(points):
        out = fake_report(tmp_path, f"model-{i}-a-rather-long-run-name", clean, robust)
        data = json.loads((out / "report.json").read_text())
        data["config"]["defense"] = f"defense-{i}"  # ten legend lines
        (out / "report.json").write_text(json.dumps(data))
        dirs.append(str(out))
    assert main(["compare", *dirs, "--out", str(tmp_path / "cmp")]) == 0
    capsys.readouterr()
    html = (tmp_path / "cmp" / "compare.html").read_text()
    boxes = _boxes(html)
    assert len(boxes) == 10
    area = plot_area(560, 420)
    dots = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="5"', html)
    assert len(dots) == 10
    markers = [Box(float(x) - 5, float(y) - 5, float(x) + 5, float(y) + 5) for x, y in dots]
    legend_y = [float(y) for y in re.findall(r'<circle cx="70" cy="([\d.]+)" r="4"', html)]
    assert len(legend_y) == 10
    legend = Box(area.x0, area.y0, area.x0 + 120, max(legend_y) + 6)
    for i, box in enumerate(boxes):
        assert box.within(area), box
        assert not any(box.overlaps(other) for other in boxes[:i] + boxes[i + 1 :])
        assert not any(box.overlaps(m) for m in markers) and not box.overlaps(legend)
    assert ">model-1-a-rather-long-run-n…</text>" in html  # shortened; the tooltip has it whole
    assert "<title>model-1-a-rather-long-run-name</title>" in html


def test_label_layout_is_deterministic_and_never_overlaps():
    gen = torch.Generator().manual_seed(0)
    area = Box(56, 16, 536, 376)
    anchors = (torch.rand(10, 2, generator=gen) * 30 + torch.tensor([480.0, 100.0])).tolist()
    sizes = [(text_width("m" * (5 + 2 * i)), 15.0) for i in range(10)]
    boxes = place_labels([tuple(a) for a in anchors], sizes, area)
    assert boxes == place_labels([tuple(a) for a in anchors], sizes, area)
    for i, box in enumerate(boxes):
        assert box.within(area)
        assert (box.x1 - box.x0, box.y1 - box.y0) == pytest.approx(sizes[i])
        assert not any(box.overlaps(b) for b in boxes[i + 1 :])
    nearest = [b.distance(x, y) for b, (x, y) in zip(boxes, anchors, strict=True)]
    assert min(nearest) < 8 and max(nearest) < 150  # beside the point, or led to it nearby
