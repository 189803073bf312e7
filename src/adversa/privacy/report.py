"""Reports of the privacy commands: `privacy.json` / `privacy.html` (membership inference) and
`inversion.json` / `inversion.html` (model inversion), each written atomically.

The membership page shows the log-log ROC of every attack beside the global-threshold
baseline (Yeom et al. 2018), with AUC, balanced accuracy and TPR at each low FPR, as Carlini
et al. 2022 ask; the inversion page shows, per class, the real class mean beside one
reconstruction per initialisation, and the quantitative measures. Cost: no model passes.
"""

from __future__ import annotations

import datetime
import json
from html import escape
from pathlib import Path
from typing import Any

from torch import Tensor

from adversa.io import atomic_write_text
from adversa.privacy.inversion import InversionResult
from adversa.privacy.membership import MembershipResult
from adversa.privacy.metrics import DEFAULT_FPRS, needed_nonmembers, roc_curve, roc_svg
from adversa.render import config_section, figure, kv_table, page_start, pct, run_line
from adversa.versions import versions

BASELINE = "loss-threshold"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def membership_report(
    results: list[MembershipResult],
    members: Tensor,
    *,
    config: dict[str, Any],
    seed: int,
    seconds: float,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON content of `privacy.json`: per attack its metrics, cost and ROC curve."""
    attacks = []
    for result in results:
        metrics = result.metrics(members, fprs).as_dict()
        fpr, tpr = roc_curve(result.scores, members)
        attacks.append(
            {
                "name": result.name,
                **metrics,
                "forward_calls": result.cost.forward,
                "queries": result.cost.queries,
                "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
            }
        )
    return {
        "kind": "membership-inference",
        "timestamp": _now(),
        "seed": seed,
        "seconds": round(seconds, 3),
        "baseline": BASELINE,
        "fprs": list(fprs),
        "attacks": attacks,
        **(extra or {}),
        "config": config,
        "versions": versions(),
    }


def _page(title: str, body: list[str], data: dict[str, Any]) -> str:
    return "\n".join(
        [
            page_start(title),
            f"<h1>{escape(title)}</h1>",
            run_line(data["timestamp"], data["seed"], data["seconds"]),
            *body,
            config_section(data["config"], data["versions"]),
            "</main></body></html>\n",
        ]
    )


def render_membership_html(data: dict[str, Any]) -> str:
    """`privacy.html`: a metrics table (baseline first) and the log-log ROC plot."""
    import torch

    fprs = data["fprs"]
    head = (
        "<tr><th>attack</th><th>AUC</th><th>balanced accuracy</th>"
        + "".join(f"<th>TPR at {100 * f:g}% FPR</th>" for f in fprs)
        + "<th>forward passes</th></tr>"
    )
    rows = []
    for a in data["attacks"]:
        tag = " (baseline)" if a["name"] == data["baseline"] else ""
        cells = "".join(f"<td>{escape(tpr_text(a, f))}</td>" for f in fprs)
        rows.append(
            f"<tr><td>{escape(a['name'] + tag)}</td><td>{a['auc']:.3f}</td>"
            f"<td>{pct(a['balanced_accuracy'])}</td>{cells}"
            f"<td>{a['forward_calls']}</td></tr>"
        )
    curves = {
        a["name"]: (torch.tensor(a["roc"]["fpr"]), torch.tensor(a["roc"]["tpr"]))
        for a in data["attacks"]
    }
    first = data["attacks"][0]
    smallest = first.get("min_fpr", 1.0 / first["n_nonmembers"])
    body = [
        f'<div class="muted">{first["n_members"]} members, {first["n_nonmembers"]} '
        f"non-members (the smallest FPR they resolve: {100 * smallest:.3g}%). Scores rank "
        "candidates; TPR at low FPR is the number that matters "
        "(Carlini et al. 2022); the global loss threshold (Yeom et al. 2018) is the "
        "baseline.</div>",
        f"<h2>Attacks</h2><table>{head}{''.join(rows)}</table>",
        "<h2>ROC curve (log-log)</h2>",
        roc_svg(curves),
    ]
    if data.get("membership_source"):
        body.insert(0, f"<p>Membership: {escape(str(data['membership_source']))}</p>")
    for warning in [*(data.get("warnings") or []), *attack_warnings(data)]:
        body.insert(0, f'<p class="warn">Warning: {escape(str(warning))}</p>')
    return _page("Membership inference report", body, data)


def tpr_text(attack: dict[str, Any], fpr: float, prefix: str = "") -> str:
    """TPR at `fpr` as a percentage, or "n/a (needs >= N non-members)" when the attack's
    non-members cannot resolve that FPR (fewer than 1 / fpr of them); `prefix` picks the
    attack's keys in a row holding several ("lira_" in `defense.json`)."""
    if attack.get(f"{prefix}tpr_at_fpr_resolvable", {}).get(str(fpr), True):
        return f"{100 * attack[f'{prefix}tpr_at_fpr'][str(fpr)]:.2f}%"
    return f"n/a (needs >= {needed_nonmembers(fpr):,} non-members)"


def attack_warnings(data: dict[str, Any]) -> list[str]:
    """Each attack's own warnings (an AUC below chance), named by attack."""
    return [f"{a['name']}: {w}" for a in data["attacks"] for w in a.get("warnings") or []]


def _write_pair(
    directory: str | Path, stem: str, data: dict[str, Any], html: str
) -> tuple[Path, Path]:
    """Write DIR/<stem>.json and DIR/<stem>.html atomically; return both paths."""
    out = Path(directory)
    json_path = atomic_write_text(out / f"{stem}.json", json.dumps(data, indent=2) + "\n")
    return json_path, atomic_write_text(out / f"{stem}.html", html)


def write_membership_reports(directory: str | Path, data: dict[str, Any]) -> tuple[Path, Path]:
    """Write DIR/privacy.json and DIR/privacy.html atomically; return both paths."""
    return _write_pair(directory, "privacy", data, render_membership_html(data))


def inversion_report(
    result: InversionResult,
    measures: dict[str, Any],
    *,
    config: dict[str, Any],
    seed: int,
    seconds: float,
) -> dict[str, Any]:
    """The JSON content of `inversion.json` (reconstructions are kept in the HTML only)."""
    return {
        "kind": "model-inversion",
        "timestamp": _now(),
        "seed": seed,
        "seconds": round(seconds, 3),
        "classes": result.classes.tolist(),
        "inits": list(result.inits),
        "restarts": result.restarts,
        "confidence": result.confidence.tolist(),
        "steps_run": result.steps_run.tolist(),
        "forward_calls": result.cost.forward,
        "backward_calls": result.cost.backward,
        "measures": measures,
        "config": config,
        "versions": versions(),
    }


def render_inversion_html(
    data: dict[str, Any],
    result: InversionResult,
    means: Tensor,
    bounds: tuple[float, float],
    class_names: list[str] | None = None,
) -> str:
    """`inversion.html`: per class, the real class mean then each initialisation's
    reconstruction (with the attacked model's confidence), and the measures."""
    lo, hi = bounds

    def img(x: Tensor, label: str) -> str:
        return figure((x.float() - lo) / (hi - lo), label)

    cards = []
    for k, c in enumerate(result.classes.tolist()):
        name = class_names[c] if class_names and c < len(class_names) else str(c)
        figures = [img(means[c], "class mean")]
        for i, init in enumerate(result.inits):
            conf = float(result.confidence[k, i])
            figures.append(img(result.x[k, i], f"{init} ({100 * conf:.0f}%)"))
        cards.append(
            f'<div class="ex">{"".join(figures)}<div class="muted">class {escape(name)}</div></div>'
        )
    body = [
        "<p>MIFace (Fredrikson et al. 2015): gradient descent on the input to maximise the "
        f"target class's confidence ({escape(restarts_text(data))} per initialisation). Each "
        "row: the real class mean, then one reconstruction per initialisation with the "
        "attacked model's confidence.</p>",
        "<h2>Recognisability</h2><table>"
        + "".join(
            f"<tr><td>{escape(label)}</td><td>{escape(value)}</td></tr>"
            for label, value in recognisability(data)
        )
        + "</table>",
        f'<h2>Reconstructions</h2><div class="gallery">{"".join(cards)}</div>',
        "<h2>Measures</h2>" + kv_table(data["measures"]),
        "<p class='muted'>target_rate: share of reconstructions the attacked model assigns to "
        "their class; independent_rate: the same for an independently trained model; "
        "nearest_class_mean_rate: share whose most correlated real class mean (images centred "
        "and scaled to unit norm, so brightness does not count) is their class's; "
        "class_mean_correlation: their mean correlation with it; *_rmse: root mean squared "
        "distance to the nearest training image, the nearest one of the class, and the class "
        "mean.</p>",
    ]
    return _page("Model inversion report", body, data)


def recognisability(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of an `inversion.json`: how many reconstructions the attacked and
    the independent model assign to their class, how many sit nearest their class mean,
    rounded for people."""
    m = data["measures"]
    n = len(data["classes"]) * len(data["inits"])

    def share(rate: float) -> str:
        return f"{100 * rate:.0f}% ({round(rate * n)} of {n})"

    rows = [("attacked model assigns their class", share(m["target_rate"]))]
    if "independent_rate" in m:
        rows.append(("independent model recognises them", share(m["independent_rate"])))
    rows.append(("nearest class mean is their class's", share(m["nearest_class_mean_rate"])))
    rows.append(("correlation with their class mean", f"{m['class_mean_correlation']:.2f}"))
    return rows


def restarts_text(data: dict[str, Any]) -> str:
    """How an `inversion.json`'s restarts were combined, in words."""
    restarts = data.get("restarts", 1)
    if restarts == 1:
        return "one start each"
    how = "mean" if data.get("config", {}).get("combine") == "mean" else "best"
    return f"{how} of {restarts} restarts"


def inversion_summary(data: dict[str, Any]) -> str:
    """The terminal summary of an `inversion.json`: what ran, then `recognisability`."""
    k, inits = len(data["classes"]), data["inits"]
    head = (
        f"MIFace on {k} classes x {len(inits)} init{'s' * (len(inits) > 1)} "
        f"({', '.join(inits)}; {restarts_text(data)}): "
        f"mean confidence {100 * data['measures']['target_confidence']:.1f}%"
    )
    return "\n".join([head, *(f"  {label}: {value}" for label, value in recognisability(data))])


def write_inversion_reports(
    directory: str | Path,
    data: dict[str, Any],
    result: InversionResult,
    means: Tensor,
    bounds: tuple[float, float],
    class_names: list[str] | None = None,
) -> tuple[Path, Path]:
    """Write DIR/inversion.json and DIR/inversion.html atomically; return both paths."""
    html = render_inversion_html(data, result, means, bounds, class_names)
    return _write_pair(directory, "inversion", data, html)


def defense_report(
    rows: list[dict[str, Any]],
    *,
    config: dict[str, Any],
    seed: int,
    seconds: float,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    membership_source: str = "",
) -> dict[str, Any]:
    """The JSON content of `defense.json`: `defense_tradeoff`'s rows, one per training option,
    and `warnings`: every attack's AUC below 0.5, named by option and attack."""
    return {
        "kind": "membership-defense",
        "timestamp": _now(),
        "seed": seed,
        "seconds": round(seconds, 3),
        "baseline": BASELINE,
        "fprs": list(fprs),
        "membership_source": membership_source,
        "warnings": defense_warnings(rows),
        "options": rows,
        "config": config,
        "versions": versions(),
    }


DEFENSE_ATTACKS = (("", "loss threshold"), ("lira_", "offline LiRA"))  # key prefix, label


def defense_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """Each option's attacks' warnings (an AUC below 0.5), named "option, attack: ..."."""
    return [
        f"{row['name']}, {label}: {warning}"
        for row in rows
        for prefix, label in DEFENSE_ATTACKS
        for warning in row.get(f"{prefix}warnings") or []
    ]


def resolution_note(row: dict[str, Any]) -> str:
    """How many non-members a row's attacks saw and the smallest FPR they resolve."""
    n = row["n_nonmembers"]
    return f"{n:,} non-members: the smallest FPR they resolve is 1/{n:,} = {100 / n:.3g}%"


def render_defense_html(data: dict[str, Any]) -> str:
    """`defense.html`: per training option its accuracy cost beside the attacks' AUC and TPR at
    low FPR (loss threshold always; offline LiRA when references were trained)."""
    fprs = data["fprs"]
    lira = any("lira_auc" in row for row in data["options"])
    attacks = list(DEFENSE_ATTACKS[: 1 + lira])
    head = "<tr><th>option</th><th>test accuracy</th><th>accuracy cost</th><th>epsilon</th>"
    for _, label in attacks:
        head += f"<th>{label} AUC</th>" + "".join(
            f"<th>{label} TPR at {100 * f:g}% FPR</th>" for f in fprs
        )
    rows = []
    for row in data["options"]:
        eps = "" if row.get("epsilon") is None else f"{row['epsilon']:.2f}"
        cells = (
            f"<td>{escape(row['name'])}</td><td>{pct(row['test_accuracy'])}</td>"
            f"<td>{100 * row['accuracy_cost']:+.1f} pts</td><td>{eps}</td>"
        )
        for prefix, _ in attacks:
            cells += f"<td>{row[prefix + 'auc']:.3f}</td>" + "".join(
                f"<td>{escape(tpr_text(row, f, prefix))}</td>" for f in fprs
            )
        rows.append(f"<tr>{cells}</tr>")
    body = [
        f"<p>Membership: {escape(str(data.get('membership_source', '')))}</p>",
        '<div class="muted">Each option trains the target on the members; an AUC near 0.5 and '
        "a TPR near the FPR mean the attack cannot tell members from non-members. Accuracy cost "
        'is against the first option ("none" when listed); epsilon is DP-SGD\'s at the '
        "configured delta.</div>",
        f"<h2>Options</h2><table>{head}{''.join(rows)}</table>",
    ]
    if data["options"] and "n_nonmembers" in data["options"][0]:
        body.insert(2, f'<div class="muted">{escape(resolution_note(data["options"][0]))}</div>')
    for warning in data.get("warnings") or []:
        body.insert(0, f'<p class="warn">Warning: {escape(str(warning))}</p>')
    return _page("Membership-inference defenses", body, data)


def write_defense_reports(directory: str | Path, data: dict[str, Any]) -> tuple[Path, Path]:
    """Write DIR/defense.json and DIR/defense.html atomically; return both paths."""
    return _write_pair(directory, "defense", data, render_defense_html(data))
