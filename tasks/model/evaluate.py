"""Evaluation: test metrics, a trivial baseline, metrics per slice and plots.

Metrics come from scikit-learn (no hand-rolled AUC). Plots are PNG bytes (matplotlib, Agg) so they
can go to the artifact store, to W&B and into the model card (``tasks.model.card``).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from tasks.core.config import DatasetConfig
from tasks.core.store import ArtifactStore
from tasks.core.target import Kind, LearningTask
from tasks.model.kind_metrics import KindMetrics, kind_metrics


class Metrics(BaseModel):
    rows: int
    positive_rate: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    precision: float
    recall: float
    threshold: float


class SliceMetrics(BaseModel):
    column: str
    value: str
    rows: int
    positive_rate: float
    roc_auc: float | None
    log_loss: float


class KindSlice(BaseModel):
    """A class or number model's metrics on the test rows of one value of a slice column."""

    column: str
    value: str
    rows: int
    metrics: dict[str, float]


def kind_slice_metrics(
    frame: pl.DataFrame,
    columns: list[str],
    y: np.ndarray,
    p: np.ndarray,
    task: LearningTask,
    min_rows: int = 200,
) -> list[KindSlice]:
    """The kind's metrics per value of each slice column (values with fewer than ``min_rows`` rows are
    skipped)."""
    from tasks.model.kind_metrics import metric_values

    out = []
    for col in columns:
        values = frame[col].cast(pl.String).fill_null("<missing>").to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() >= min_rows:
                shown = metric_values(task, y[mask], p[mask])
                out.append(KindSlice(column=col, value=str(value), rows=int(mask.sum()), metrics=shown))
    return out


class Evaluation(BaseModel):
    """The candidate's test metrics beside the constant baseline's (``baseline``) and, for classes and
    numbers, the linear baseline's (``linear``; yes/no shows it in the gate's intervals). Yes/no
    metrics are ``Metrics``; classes and numbers ``KindMetrics``, each value with its interval."""

    kind: Kind = "binary"
    test: Metrics | KindMetrics
    baseline: Metrics | KindMetrics
    linear: KindMetrics | None = None
    slices: list[SliceMetrics]
    kind_slices: list[KindSlice] = []  # classes and numbers
    test_window: tuple[str, str]
    # how far a test day's ROC-AUC strays from what the calibrated scores expect, beyond sampling noise
    # (tasks.monitoring.estimate.day_to_day_spread; 0 without a time column)
    day_sd: float = 0.0


def flat_metrics(m: Metrics | KindMetrics) -> dict[str, float]:
    """A model's test metrics as name -> number (what the registry records and W&B summarises)."""
    if isinstance(m, KindMetrics):
        return {"rows": float(m.rows), **{k: v.value for k, v in m.metrics.items()}}
    return {k: float(v) for k, v in m.model_dump().items()}


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> Metrics:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    label = (p >= threshold).astype(int)
    two_classes = len(np.unique(y)) == 2
    return Metrics(
        rows=int(len(y)),
        positive_rate=float(np.mean(y)),
        roc_auc=float(skm.roc_auc_score(y, p)) if two_classes else float("nan"),
        pr_auc=float(skm.average_precision_score(y, p)) if two_classes else float("nan"),
        log_loss=float(skm.log_loss(y, p, labels=[0, 1])),
        brier=float(skm.brier_score_loss(y, p)),
        precision=float(skm.precision_score(y, label, zero_division=0)),
        recall=float(skm.recall_score(y, label, zero_division=0)),
        threshold=threshold,
    )


def slice_metrics(
    frame: pl.DataFrame, columns: list[str], y: np.ndarray, p: np.ndarray, min_rows: int = 200
) -> list[SliceMetrics]:
    """Metrics per value of each slice column (values with fewer than ``min_rows`` rows are skipped)."""
    out = []
    p = np.clip(p, 1e-7, 1 - 1e-7)
    for col in columns:
        values = frame[col].cast(pl.String).fill_null("<missing>").to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() < min_rows:
                continue
            ys, ps = y[mask], p[mask]
            auc = float(skm.roc_auc_score(ys, ps)) if len(np.unique(ys)) == 2 else None
            out.append(
                SliceMetrics(
                    column=col,
                    value=str(value),
                    rows=int(mask.sum()),
                    positive_rate=float(ys.mean()),
                    roc_auc=auc,
                    log_loss=float(skm.log_loss(ys, ps, labels=[0, 1])),
                )
            )
    return out


def evaluate_predictions(
    frame: pl.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    base_rate: float,
    threshold: float,
    slices: list[str],
    time_column: str | None,
) -> Evaluation:
    """A yes/no candidate's test evaluation (see ``evaluate_kind`` for classes and numbers)."""
    day_sd = 0.0
    if time_column is not None:
        window = (str(frame[time_column].min()), str(frame[time_column].max()))
        times = frame[time_column]
        day = ((times - times.min()).dt.total_seconds() // 86_400).to_numpy()
        day_sd = day_to_day_spread(np.asarray(y).astype(int), np.asarray(p), day)
    else:  # a random / stratified holdout has no time span: say what it is
        window = ("held-out rows", f"{frame.height} rows")
    return Evaluation(
        test=binary_metrics(y, p, threshold),
        baseline=binary_metrics(y, np.full_like(p, base_rate), threshold),
        slices=slice_metrics(frame, slices, y, p),
        test_window=window,
        day_sd=day_sd,
    )


def _test_window(frame: pl.DataFrame, time_column: str | None) -> tuple[str, str]:
    if time_column is not None:
        return (str(frame[time_column].min()), str(frame[time_column].max()))
    return ("held-out rows", f"{frame.height} rows")  # a random / stratified holdout has no time span


def evaluate_kind(
    frame: pl.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    constant: np.ndarray,
    linear: np.ndarray,
    task: LearningTask,
    time_column: str | None,
    slices: list[str] = (),
) -> Evaluation:
    """A class or number candidate's test evaluation: its metrics, the constant's and the linear
    baseline's on the same rows, each with bootstrap intervals (``tasks.model.kind_metrics``)."""
    return Evaluation(
        kind=task.kind,
        test=kind_metrics(task, y, p, seed=1),
        baseline=kind_metrics(task, y, constant, seed=2),
        linear=kind_metrics(task, y, linear, seed=3),
        slices=[],
        kind_slices=kind_slice_metrics(frame, list(slices), y, p, task),
        test_window=_test_window(frame, time_column),
    )


def _png_saver() -> tuple[Any, dict[str, bytes], Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs: dict[str, bytes] = {}

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        pngs[name] = buf.getvalue()

    return plt, pngs, save


def _importance_png(plt: Any, save: Any, importance: dict[str, float]) -> None:
    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20][::-1]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set(xlabel="total gain", title="Feature importance")
    save(fig, "importance")


def kind_plot_pngs(
    y: np.ndarray, p: np.ndarray, importance: dict[str, float], task: LearningTask
) -> dict[str, bytes]:
    """Classes: the confusion matrix (rows: true class, shares); numbers: predicted against actual and
    the residuals; both: feature importance. PNG bytes."""
    plt, pngs, save = _png_saver()
    if task.kind == "multiclass":
        k = len(task.classes)
        matrix = skm.confusion_matrix(y.astype(int), np.argmax(p, axis=1), labels=list(range(k)))
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.1 * k + 1.5))
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(k), task.classes, rotation=45, ha="right")
        ax.set_yticks(range(k), task.classes)
        ax.set(xlabel="predicted class", ylabel="true class", title="Confusion (test, row shares)")
        save(fig, "confusion")
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(y, p, s=3, alpha=0.3)
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "--", color="grey", label="perfect")
        ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (test)")
        ax.legend(loc="upper left")
        save(fig, "predicted_vs_actual")
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.hist(y - p, bins=60)
        ax.set(xlabel="actual - predicted", ylabel="rows", title="Residuals (test)")
        save(fig, "residuals")
    _importance_png(plt, save, importance)
    return pngs


def plot_pngs(y: np.ndarray, p: np.ndarray, importance: dict[str, float]) -> dict[str, bytes]:
    """ROC, precision-recall, calibration and feature-importance plots as PNG bytes."""
    plt, pngs, save = _png_saver()

    fpr, tpr, _ = skm.roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, label=f"model (AUC {skm.roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="baseline")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    save(fig, "roc")

    prec, rec, _ = skm.precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(rec, prec, label=f"model (AP {skm.average_precision_score(y, p):.3f})")
    ax.axhline(float(np.mean(y)), ls="--", color="grey", label="baseline")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    ax.legend(loc="upper right")
    save(fig, "pr")

    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(mean_pred, frac_pos, "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title="Calibration (test)")
    ax.legend(loc="upper left")
    save(fig, "calibration")
    _importance_png(plt, save, importance)
    return pngs


METRICS_SHOWN = (
    ("ROC-AUC", "roc_auc"),
    ("PR-AUC", "pr_auc"),
    ("log loss", "log_loss"),
    ("Brier", "brier"),
    ("precision", "precision"),
    ("recall", "recall"),
)


METRICS_SHOWN_BY_KIND = {
    "regression": (("RMSE", "rmse"), ("MAE", "mae"), ("R^2", "r2"), ("mean loss (objective)", "mean_loss")),
    "multiclass": (("macro ROC-AUC", "macro_roc_auc"), ("log loss", "log_loss"), ("accuracy", "accuracy")),
}


def kind_rows(test: KindMetrics) -> list[tuple[str, str]]:
    """(label, metric name) of each metric a class or number model's table shows, per-class recall last."""
    recalls = [(n, n) for n in test.metrics if n.startswith("recall[")]
    return [*METRICS_SHOWN_BY_KIND[test.kind], *recalls]


def metric_table(
    test: Metrics | KindMetrics,
    baseline: Metrics | KindMetrics,
    champion: Metrics | KindMetrics | None = None,
) -> list[tuple[str, float, float, float | None]]:
    """The comparison every report shows (console, model card, Prefect table): one row per metric with
    the model's, the constant baseline's and (if there is one) the champion's value on the same test
    window."""
    if isinstance(test, KindMetrics):
        return [
            (label, test.value(name), baseline.value(name),  # type: ignore[union-attr]
             champion.value(name) if isinstance(champion, KindMetrics) else None)
            for label, name in kind_rows(test)
        ]  # fmt: skip
    rows = []
    for label, attr in METRICS_SHOWN:
        if attr in ("precision", "recall"):
            label = f"{label} @ {test.threshold:.3f}"
        rows.append(
            (
                label,
                getattr(test, attr),
                getattr(baseline, attr),
                getattr(champion, attr) if champion is not None else None,
            )
        )
    return rows


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


class CandidateEvaluation(BaseModel):
    evaluation: Evaluation
    plot_keys: dict[str, str]


def evaluate_candidate(
    p: np.ndarray,
    y: np.ndarray,
    test_frame: pl.DataFrame,
    constant: np.ndarray,
    linear: np.ndarray,
    threshold: float,
    importance: dict[str, float],
    task: LearningTask,
    config: DatasetConfig,
    store: ArtifactStore,
    plot_prefix: str,
) -> CandidateEvaluation:
    """Test-window metrics (yes/no labels at the candidate's chosen ``threshold``), baselines (the
    ``constant`` model's and the ``linear`` one's predictions on the same rows), slices and plots
    (written under ``plot_prefix``) of a candidate from its predictions ``p`` on the test rows of
    ``test_frame`` (labels ``y``)."""
    if task.kind == "binary":
        evaluation = evaluate_predictions(
            test_frame, y, p, float(constant[0]), threshold, config.slices, config.time_column
        )
        pngs = plot_pngs(y, p, importance)
    else:
        evaluation = evaluate_kind(
            test_frame, y, p, constant, linear, task, config.time_column, config.slices
        )
        pngs = kind_plot_pngs(y, p, importance, task)
    keys = {}
    for name, png in pngs.items():
        keys[name] = f"{plot_prefix}/{name}.png"
        store.write_bytes(keys[name], png)
    return CandidateEvaluation(evaluation=evaluation, plot_keys=keys)


class ChampionEvaluation(BaseModel):
    version: int | None
    metrics: Metrics | KindMetrics | None
    note: str


def evaluate_champion(
    version: int | None,
    y: np.ndarray,
    p: np.ndarray | None,
    problem: str | None,
    threshold: float,
    task: LearningTask | None = None,
) -> ChampionEvaluation:
    """The current champion's metrics on a candidate's test window, from its predictions there (made
    with its own saved transform); ``problem``: why it could not score them."""
    if version is None:
        return ChampionEvaluation(version=None, metrics=None, note="no champion yet")
    if problem or p is None:
        return ChampionEvaluation(version=version, metrics=None, note=f"champion v{version} {problem}")
    task = task or LearningTask()
    return ChampionEvaluation(
        version=version,
        metrics=binary_metrics(y, p, threshold)
        if task.kind == "binary"
        else kind_metrics(task, y, p, seed=4),
        note=f"champion v{version} scored on the same test window",
    )


class PairedAucDifference(BaseModel):
    """ROC-AUC of two models scored on the same labelled rows, and the difference's standard error.
    For classes and numbers (``metric`` a loss's name): ``auc_a`` / ``auc_b`` are the mean losses and
    ``gain`` the relative reduction ``1 - b / a`` (``weighted_paired_loss_difference``)."""

    rows: int
    auc_a: float
    auc_b: float
    gain: float  # auc_b - auc_a
    se: float
    se_a: float  # of auc_a alone
    se_b: float
    metric: str = "ROC-AUC"


def paired_auc_difference(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> PairedAucDifference:
    """DeLong's test for two correlated ROC-AUCs (the fast midrank form of Sun & Xu, 2014): both models
    scored the same rows, so the variance of the difference uses their covariance, which is what makes a
    paired comparison far more sensitive than comparing two separate samples."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 rows of each class, got {m} positive and {n} negative")
    preds = np.vstack([np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float)])
    pos, neg = preds[:, y], preds[:, ~y]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.hstack([pos, neg]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.cov(v01) / m + np.cov(v10) / n
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    return PairedAucDifference(
        rows=int(len(y)),
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        gain=float(aucs[1] - aucs[0]),
        se=var**0.5,
        se_a=max(float(cov[0, 0]), 0.0) ** 0.5,
        se_b=max(float(cov[1, 1]), 0.0) ** 0.5,
    )


def _weighted_placements(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per positive, the weighted share of negatives it outranks (ties half); per negative, the
    weighted share of positives that outrank it (DeLong's placements, with row weights)."""
    values, index = np.unique(s, return_inverse=True)
    neg_w = np.bincount(index[~y], w[~y], minlength=len(values))
    pos_w = np.bincount(index[y], w[y], minlength=len(values))
    below = np.cumsum(neg_w) - neg_w
    above = pos_w.sum() - np.cumsum(pos_w)
    v10 = (below[index[y]] + 0.5 * neg_w[index[y]]) / neg_w.sum()
    v01 = (above[index[~y]] + 0.5 * pos_w[index[~y]]) / pos_w.sum()
    return v10, v01


def weighted_paired_auc_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, weights: np.ndarray
) -> PairedAucDifference:
    """``paired_auc_difference`` with a weight per row (inverse labelling propensities): the ROC-AUCs
    of the population the weights stand for, and the difference's standard error from the weighted
    placements (equal weights give DeLong's test exactly). ``rows`` is the effective number of rows,
    ``(sum w)^2 / sum w^2``: what the evidence is worth once the weights are uneven."""
    y = np.asarray(y).astype(bool)
    w = np.asarray(weights, dtype=float)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 rows of each class, got {m} positive and {n} negative")
    wp, wn = w[y] / w[y].sum(), w[~y] / w[~y].sum()
    a10, a01 = _weighted_placements(np.asarray(p_a, dtype=float), y, w)
    b10, b01 = _weighted_placements(np.asarray(p_b, dtype=float), y, w)
    auc_a, auc_b = float(wp @ a10), float(wp @ b10)

    def var(d10: np.ndarray, d01: np.ndarray, centre: float) -> float:
        return float(
            m / (m - 1) * np.sum(wp**2 * (d10 - centre) ** 2)
            + n / (n - 1) * np.sum(wn**2 * (d01 - centre) ** 2)
        )

    gain = auc_b - auc_a
    return PairedAucDifference(
        rows=int(round(w.sum() ** 2 / np.sum(w**2))),
        auc_a=auc_a,
        auc_b=auc_b,
        gain=gain,
        se=max(var(b10 - a10, b01 - a01, gain), 0.0) ** 0.5,
        se_a=max(var(a10, a01, auc_a), 0.0) ** 0.5,
        se_b=max(var(b10, b01, auc_b), 0.0) ** 0.5,
    )


def weighted_paired_loss_difference(
    loss_a: np.ndarray, loss_b: np.ndarray, w: np.ndarray, metric: str
) -> PairedAucDifference:
    """Two models' per-row losses on the same rows (each row weighted by ``w``): the relative reduction
    of the weighted mean loss from ``a`` to ``b`` and its delta-method standard error. The estimate is
    a smooth function of two weighted means, so it is asymptotically linear: the canary's time-uniform
    bound (``tasks.decisions.canary_radius``) applies to it as to DeLong's difference."""
    w = np.asarray(w, dtype=np.float64) / np.mean(w)
    n = len(w)
    a, b = float(np.sum(w * loss_a) / n), float(np.sum(w * loss_b) / n)
    ratio = b / a if a > 0 else float("inf")
    influence = w * (loss_b - ratio * loss_a) / a if a > 0 else np.zeros(n)
    se = float(np.sqrt(np.sum(influence**2)) / n)
    return PairedAucDifference(
        rows=n, auc_a=a, auc_b=b, gain=1.0 - ratio, se=se,
        se_a=float(np.sqrt(np.sum((w * loss_a - a) ** 2)) / n),
        se_b=float(np.sqrt(np.sum((w * loss_b - b) ** 2)) / n), metric=metric,
    )  # fmt: skip


def combine_days(daily: list[PairedAucDifference]) -> tuple[float, float]:
    """The gain over days and its standard error, days as random effects (DerSimonian-Laird): when
    the models' relative quality differs from day to day, that spread widens the interval, so one
    good day cannot carry a challenger that is no better on average."""
    gains = np.array([d.gain for d in daily])
    var = np.array([max(d.se, 1e-6) ** 2 for d in daily])
    w = 1 / var
    fixed = float(np.sum(w * gains) / np.sum(w))
    q = float(np.sum(w * (gains - fixed) ** 2))
    tau2 = (
        max(0.0, (q - (len(daily) - 1)) / (np.sum(w) - np.sum(w**2) / np.sum(w))) if len(daily) > 1 else 0.0
    )
    w_star = 1 / (var + tau2)
    return float(np.sum(w_star * gains) / np.sum(w_star)), float(np.sum(w_star) ** -0.5)


def auc_standard_error(y: np.ndarray, p: np.ndarray) -> float:
    """DeLong's standard error of one model's ROC-AUC on these rows (the one-model case of
    ``paired_auc_difference``)."""
    return paired_auc_difference(y, p, np.zeros(len(p))).se_a


def hanley_mcneil_se(auc: float, positives: int, negatives: int) -> float:
    """The standard error of a ROC-AUC measured on ``positives`` and ``negatives`` rows, from the AUC
    alone (Hanley & McNeil, 1982): for a held-out AUC whose rows are no longer at hand."""
    if positives < 1 or negatives < 1:
        return float("inf")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return float(max(var, 0.0) ** 0.5)


def expected_auc(p: np.ndarray) -> float:
    """The ROC-AUC expected when each row's label is drawn from its probability (pairs weighted by the
    chance that one is positive and the other negative; ties count half), in O(n log n): the centre
    the sequential degradation check compares the realised ROC-AUC with."""
    p = np.sort(np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0))
    neg = 1.0 - p
    _, start = np.unique(p, return_index=True)
    pos_g, neg_g = np.add.reduceat(p, start), np.add.reduceat(neg, start)
    within = 0.5 * (pos_g * neg_g - np.add.reduceat(p * neg, start))  # pairs i != j in a tie group
    numerator = float(np.sum(pos_g * (np.cumsum(neg_g) - neg_g)) + within.sum())
    denominator = float(p.sum() * neg.sum() - np.sum(p * neg))
    return numerator / denominator if denominator > 0 else float("nan")


def day_to_day_spread(y: np.ndarray, p: np.ndarray, day: np.ndarray) -> float:
    """The standard deviation, between days, of (realised - expected) ROC-AUC beyond each day's own
    sampling noise: DerSimonian-Laird's between-study variance (days as studies), taken at its upper 95%
    confidence bound for a variance with (days - 1) degrees of freedom, so a short test window does not
    understate it; 0 when the days agree as well as independent labels would."""
    from scipy.stats import chi2

    gaps, variances = [], []
    for d in np.unique(day):
        on = day == d
        positives = int(y[on].sum())
        if positives < 5 or on.sum() - positives < 5:
            continue
        gaps.append(skm.roc_auc_score(y[on], p[on]) - expected_auc(p[on]))
        variances.append(max(auc_standard_error(y[on], p[on]), 1e-4) ** 2)
    if len(gaps) < 3:
        return 0.0
    g, w = np.array(gaps), 1 / np.array(variances)
    centre = np.sum(w * g) / np.sum(w)
    q = float(np.sum(w * (g - centre) ** 2))
    tau2 = max(0.0, (q - (len(g) - 1)) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    dof = len(g) - 1
    return float((tau2 * dof / chi2.ppf(0.05, dof)) ** 0.5)
