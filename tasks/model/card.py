"""The model card: what a version is, how good, against what, why it was decided, what drives it and
where its data came from. One Markdown text per version, made once at training and kept with it.

The same bytes travel everywhere the version goes: the registry (``model_card.md`` beside
``model.txt``), the W&B model artifact, the BentoML model and the bento's README. Plots are named as
files of the version (``plots/<name>.png``); the Prefect artifact shows the same card with them
inlined (``inline_plots``), since an artifact cannot read the store.

Feature attributions are LightGBM's own (``pred_contrib``: TreeSHAP values in the model's raw score,
log-odds for a binary model), averaged in absolute value over the test rows each held-out part
scored: the global "how much does this input move the score" a card reader wants.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from tasks.model.evaluate import Evaluation, Metrics, kind_rows, metric_table, png_data_uri
from tasks.model.kind_metrics import KindMetrics

ATTRIBUTION_ROWS_PER_PART = 5_000  # test rows per held-out part explained (evenly spaced)
ATTRIBUTIONS_SHOWN = 15


class AttributionSums(BaseModel):
    """Sum of |contribution| per feature over ``rows`` test rows: parts add up, then divide once."""

    rows: int = 0
    sums: dict[str, float] = {}

    def plus(self, other: "AttributionSums") -> "AttributionSums":
        keys = dict.fromkeys([*self.sums, *other.sums])
        return AttributionSums(
            rows=self.rows + other.rows,
            sums={k: self.sums.get(k, 0.0) + other.sums.get(k, 0.0) for k in keys},
        )

    def mean_abs(self) -> list[tuple[str, float]]:
        """Features by mean |contribution|, largest first."""
        if not self.rows:
            return []
        means = [(k, v / self.rows) for k, v in self.sums.items()]
        return sorted(means, key=lambda kv: -kv[1])


def attribution_sums(booster: Any, X: np.ndarray, feature_names: list[str]) -> AttributionSums:
    """|pred_contrib| summed per feature over (at most ``ATTRIBUTION_ROWS_PER_PART``, evenly spaced)
    rows of ``X`` (and, for classes, over every class's raw score). The last column LightGBM returns per
    class is the expected value, not a feature."""
    if len(X) == 0:
        return AttributionSums()
    step = max(1, -(-len(X) // ATTRIBUTION_ROWS_PER_PART))
    rows = X[::step]
    width = len(feature_names) + 1
    contrib = np.asarray(booster.predict(rows, pred_contrib=True)).reshape(len(rows), -1, width)
    sums = np.abs(contrib[:, :, : len(feature_names)]).sum(axis=(0, 1))
    return AttributionSums(rows=len(rows), sums={n: float(s) for n, s in zip(feature_names, sums)})


class GateRow(BaseModel):
    """One comparison the promotion gate read: the candidate's ROC-AUC (or, classes and numbers, mean
    loss) against another model's on the same test rows, with the one-sided bounds of the gain (for a
    loss: of its relative reduction)."""

    against: str
    metric: str = "ROC-AUC"
    other_auc: float
    auc: float
    gain: float
    low: float
    high: float


class CardFacts(BaseModel):
    """Everything the card says, gathered by the training run before registration."""

    model_name: str
    dataset: str
    decision: str
    reason: str
    evaluation: Evaluation
    champion: Metrics | KindMetrics | None
    champion_version: int | None
    gate: list[GateRow]
    test_flagged: int  # test rows the threshold labels positive
    snapshot_id: str
    snapshot_rows: int
    time_range: tuple[str | None, str | None]
    sources: dict[str, int]  # table -> valid batches read
    split_method: str
    cv: dict[str, float]
    params: dict[str, Any]
    git_commit: str
    attributions: list[tuple[str, float]]
    plot_names: list[str]


CV_WORDING = {
    "time": "time-ordered CV (expanding windows)",
    "stratified": "stratified k-fold CV",
    "random": "k-fold CV (random rows)",
}
SPLIT_WORDING = {
    "time": "by time: the latest rows are the test window, the ones before them validation",
    "stratified": "rows assigned by a seeded hash, each split keeping the target's class shares",
    "random": "rows assigned by a seeded hash",
}


def model_card(facts: CardFacts, inline_plots: dict[str, bytes] | None = None) -> str:
    """The card as Markdown. ``inline_plots`` (name -> PNG) replaces the plot file references with the
    images themselves (the Prefect artifact); without it, the card names ``plots/<name>.png``."""
    f, t = facts, facts.evaluation.test
    kind = f.evaluation.kind
    if isinstance(t, KindMetrics):
        target_line = f"{kind} target"
        cv_metric = "mean loss"
        constant = "class shares" if kind == "multiclass" else "constant"
    else:
        target_line, cv_metric, constant = f"positive rate {t.positive_rate:.3f}", "ROC-AUC", "positive rate"
    lines = [
        f"# Model card: {f.model_name}",
        "",
        f"**Gate decision: {f.decision}**: {f.reason}",
        "",
        "## Data and lineage",
        "",
        f"- dataset config `{f.dataset}`; snapshot `{f.snapshot_id}` ({f.snapshot_rows:,} rows"
        + (f", {f.time_range[0]} .. {f.time_range[1]})" if f.time_range[0] else ")"),
        "- sources: " + ", ".join(f"{table} ({n} batches)" for table, n in sorted(f.sources.items())),
        f"- split: {SPLIT_WORDING.get(f.split_method, f.split_method)}",
        f"- test window {f.evaluation.test_window[0]} .. {f.evaluation.test_window[1]}: {t.rows:,} rows, "
        f"{target_line}",
        f"- {CV_WORDING.get(f.split_method, 'CV')} {cv_metric}: "
        + (
            f"{f.cv['mean']:.4f} ± {f.cv['std']:.4f} over {int(f.cv['folds'])} folds"
            if f.cv.get("folds")
            else "not run (cv_folds 0)"
        ),
        f"- code: git commit `{f.git_commit}`",
        "",
        "## Test metrics",
        "",
        f"| metric | model | baseline ({constant}) |" + (" champion |" if f.champion else ""),
        "|---|---|---|" + ("---|" if f.champion else ""),
    ]
    number = ".4g" if isinstance(t, KindMetrics) else ".4f"
    names = dict(kind_rows(t)) if isinstance(t, KindMetrics) else {}
    for label, model, baseline, champ in metric_table(t, f.evaluation.baseline, f.champion):
        shown = f"{model:{number}}"
        if label in names:
            interval = t.metrics[names[label]]  # type: ignore[union-attr]
            shown += f" [{interval.low:.4g}, {interval.high:.4g}]"
        lines.append(
            f"| {label} | {shown} | {baseline:{number}} |"
            + (f" {champ:{number}} |" if champ is not None else "")
        )
    if isinstance(t, KindMetrics):
        lines += ["", "Model values with their 95% bootstrap intervals over the test rows."]
    lines += ["", *_gate_lines(f), "", *_attribution_lines(f), ""]
    lines += ["## Parameters", "", "```", *(f"{k}: {v}" for k, v in sorted(f.params.items())), "```", ""]
    lines += ["## Slices (test)", ""]
    if f.evaluation.kind != "binary":
        lines += _kind_slice_lines(f)
    else:
        lines += ["| column | value | rows | positive rate | ROC-AUC |", "|---|---|---|---|---|"]
    for s in f.evaluation.slices:
        auc = f"{s.roc_auc:.4f}" if s.roc_auc is not None else "n/a"
        lines.append(f"| {s.column} | {s.value} | {s.rows} | {s.positive_rate:.3f} | {auc} |")
    lines += ["", "## Plots", ""]
    for name in f.plot_names:
        png = (inline_plots or {}).get(name)
        source = png_data_uri(png) if png is not None else f"plots/{name}.png"
        lines.append(f"![{name}]({source})")
    return "\n".join(lines) + "\n"


def _kind_slice_lines(f: CardFacts) -> list[str]:
    """A class or number model's metrics per slice value (the config's ``slices``)."""
    slices = f.evaluation.kind_slices
    if not slices:
        return ["No slice columns configured (`slices` in the dataset config), or none with 200 test rows."]
    names = [n for n in slices[0].metrics if not n.startswith("recall[")]
    lines = ["| column | value | rows | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for s in slices:
        lines.append(
            f"| {s.column} | {s.value} | {s.rows} | "
            + " | ".join(f"{s.metrics[n]:.4g}" for n in names)
            + " |"
        )
    return lines


def _gate_lines(f: CardFacts) -> list[str]:
    """The evidence the gate read: ROC-AUC gains with their one-sided bounds, against each baseline and
    the champion, on the same test rows."""
    if f.evaluation.kind != "binary":
        metric = f.gate[0].metric if f.gate else "loss"
        lines = [
            "## Gate evidence (same test rows)",
            "",
            f"| against | mean {metric} there | candidate | reduction | bounds |",
            "|---|---|---|---|---|",
        ]
        for g in f.gate:
            bounds = f"{g.low:+.1%} .. {g.high:+.1%}"
            lines.append(f"| {g.against} | {g.other_auc:.4g} | {g.auc:.4g} | {g.gain:+.1%} | {bounds} |")
        return [*lines, "", "Reductions of the mean loss, with one-sided paired-bootstrap bounds."]
    lines = [
        "## Gate evidence (same test rows)",
        "",
        "| against | ROC-AUC there | candidate | gain | bounds |",
        "|---|---|---|---|---|",
    ]
    for g in f.gate:
        bounds = f"{g.low:+.4f} .. {g.high:+.4f}"
        lines.append(f"| {g.against} | {g.other_auc:.4f} | {g.auc:.4f} | {g.gain:+.4f} | {bounds} |")
    flagged, rows = f.test_flagged, f.evaluation.test.rows
    lines += ["", f"At its threshold the model labels {flagged:,} of {rows:,} test rows positive."]
    return lines


def _attribution_lines(f: CardFacts) -> list[str]:
    lines = ["## What drives the score", ""]
    if not f.attributions:
        return [*lines, "No attributions (no test rows were explained)."]
    top = f.attributions[:ATTRIBUTIONS_SHOWN]
    largest = top[0][1] or 1.0
    lines += [
        "Mean |contribution| to the raw score (LightGBM `pred_contrib`, TreeSHAP) over the test rows:",
        "",
        "| feature | mean abs contribution | |",
        "|---|---|---|",
    ]
    for name, value in top:
        lines.append(f"| {name} | {value:.4f} | {'█' * max(1, round(20 * value / largest))} |")
    if len(f.attributions) > len(top):
        lines.append(f"| ({len(f.attributions) - len(top)} more) | | |")
    return lines
