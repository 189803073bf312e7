"""`adversa privacy-defense`: membership inference before and after training defenses."""

from __future__ import annotations

import json

from adversa.cli.main import main


def test_dp_sgd_report_shows_the_privacy_and_its_price(tmp_path, capsys) -> None:
    out = tmp_path / "defense"
    args = ["privacy-defense", "--data", "digits", "--defenses", "none,dp-sgd"]
    assert main([*args, "--lira-references", "4", "--out", str(out)]) == 0
    report = json.loads((out / "defense.json").read_text())
    html = (out / "defense.html").read_text()
    assert "<td>dp-sgd</td>" in html and "offline LiRA AUC" in html
    none, dp = report["options"]
    assert (none["name"], dp["name"]) == ("none", "dp-sgd")
    # measured: LiRA AUC 0.752 -> 0.510, threshold 0.540 -> 0.489, epsilon 5.34,
    # test accuracy 91.6% -> 51.5%
    assert none["lira_auc"] > 0.65
    assert dp["lira_auc"] < none["lira_auc"] - 0.15
    assert abs(dp["lira_auc"] - 0.5) < 0.1
    assert 0.2 < dp["accuracy_cost"] < 0.6 and none["accuracy_cost"] == 0.0
    assert dp["epsilon"] is not None and none["epsilon"] is None
    assert report["config"]["seed"] == 0 and "torch" in report["versions"]
    assert "dp-sgd" in capsys.readouterr().out


def test_bad_defense_options_exit_2(tmp_path, capsys) -> None:
    base = ["privacy-defense", "--data", "digits", "--out", str(tmp_path / "o")]
    assert main([*base, "--defenses", "none,dropout"]) == 2
    assert "unknown ['dropout']" in capsys.readouterr().err
    assert main([*base, "--members", "5000"]) == 2
    assert "--members 5000" in capsys.readouterr().err
    assert main([*base, "--lira-references", "2"]) == 2
    assert "lira_references" in capsys.readouterr().err
