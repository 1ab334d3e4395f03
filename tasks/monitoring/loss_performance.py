"""Live performance of class and number models through their per-row losses, and the day-by-day
degradation checks on them.

Yes/no models are judged by ROC-AUC against what their calibrated probabilities promise
(``tasks.monitoring.performance``). A regression or multiclass model is judged by the loss it was
trained to lower (``LearningTask.row_loss``: squared error, log loss, ...) on the labelled predictions,
against its mean loss on its held-out test rows: the relative increase ``mean(live) / held-out - 1``,
day by day (outcomes cluster by day), its standard error from the rows' spread and the held-out figure's
own, so ``decide_degradation`` applies the same time-uniform bound as for ROC-AUC. A version's outputs
are read back from the log's ``output`` column (every class's probability, or the value) and its
outcomes from the feedback log (the observed number, or the class's name, coded by the version's own
classes).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.logs import outcome_per_request
from tasks.core.target import LearningTask
from tasks.model.evaluate import weighted_paired_loss_difference
from tasks.model.kind_metrics import kind_metrics
from tasks.monitoring.performance import (
    CanaryEvidence,
    DayGap,
    DegradationCheck,
    LivePerformance,
    combine_gaps,
    event_day,
    paired_rows,
)


class HeldOutLoss(BaseModel):
    """A version's mean loss on its held-out test rows and that figure's standard error."""

    loss: float
    se: float


def labelled_rows(
    predictions: pl.DataFrame, feedback: pl.DataFrame, task: LearningTask, labelled: bool = False
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The labelled predictions (each request once) with their outcomes as LightGBM reads them (a
    class's code, or the number) and the model's outputs (rows x classes, or one value per row).
    ``labelled``: ``predictions`` carry their ``outcome`` already (``feedback`` unused)."""
    logged = predictions.unique("request_id", keep="first", maintain_order=True)
    if labelled:
        rows = logged
    elif feedback.height == 0 or logged.height == 0:
        return logged.head(0), np.array([]), np.array([])
    else:
        rows = logged.join(outcome_per_request(feedback).collect(), on="request_id", how="inner")
    rows = rows.filter(pl.col("outcome").is_not_null() & pl.col("output").is_not_null())
    if task.kind == "multiclass":
        code = (
            pl.col("outcome")
            .cast(pl.String)
            .replace_strict(task.classes, list(range(len(task.classes))), default=None, return_dtype=pl.Int64)
        )
        rows = rows.with_columns(code.alias("__y")).filter(pl.col("__y").is_not_null())
        output = np.asarray(rows["output"].to_list(), dtype=np.float64).reshape(rows.height, -1)
    else:
        rows = rows.with_columns(pl.col("outcome").cast(pl.Float64).alias("__y"))
        output = np.asarray(rows["output"].list.first().to_numpy(), dtype=np.float64)
    return rows, rows["__y"].to_numpy().astype(np.float64), output


def live_loss_performance(
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    tasks: dict[int, LearningTask],
    min_labels: int,
    window_days: float | None = None,
) -> list[LivePerformance]:
    """Per version (``tasks``: each version's own target task): predictions, labels, the kind's metrics
    (RMSE, MAE, R^2 / macro ROC-AUC, log loss, accuracy) and the mean loss with its standard error, once
    ``min_labels`` outcomes came in."""
    if predictions.height == 0:
        return []
    if window_days is not None and "ts" in predictions.columns:
        newest = predictions["ts"].max()
        predictions = predictions.filter(pl.col("ts") > newest - timedelta(days=window_days))
    out = []
    for (version,), part in predictions.partition_by(["model_version"], as_dict=True).items():
        task = tasks.get(int(version))
        if task is None:
            continue
        rows, y, output = labelled_rows(part, feedback, task)
        enough = len(y) >= max(2, min_labels)
        losses = task.row_loss(y, output) if enough else np.array([])
        measured = kind_metrics(task, y, output, seed=int(version)) if enough else None
        answered = part["output"].drop_nulls()
        mean_prediction = (
            float(np.mean(answered.list.first().to_numpy())) if task.kind == "regression" and answered.len()
            else float(part["probability"].mean() or 0.0)
        )  # fmt: skip
        out.append(
            LivePerformance(
                model_version=int(version),
                predictions=part.unique("request_id").height,
                labels=len(y),
                roc_auc=None,
                log_loss=None,
                mean_prediction=mean_prediction,
                positive_rate=None,
                window=(str(part["ts"].min()), str(part["ts"].max())) if "ts" in part.columns else None,
                kind=task.kind,
                metrics={k: v.value for k, v in measured.metrics.items()} if measured else {},
                intervals={k: (v.low, v.high) for k, v in measured.metrics.items()} if measured else {},
                loss=float(np.mean(losses)) if enough else None,
                loss_se=float(np.std(losses, ddof=1) / np.sqrt(len(losses))) if enough else None,
            )
        )
    return sorted(out, key=lambda r: r.model_version)


def loss_degradation_checks(
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    expectations: dict[int, HeldOutLoss],
    tasks: dict[int, LearningTask],
    window_days: float,
    day_column: str | None = None,
) -> list[DegradationCheck]:
    """As ``degradation_checks``: one check per version and per UTC midnight of the last
    ``window_days``, on the labelled predictions from that midnight on, judged day by day (the events'
    days); here each day's figure is its mean loss relative to the held-out one."""
    if predictions.height == 0 or feedback.height == 0 or "ts" not in predictions.columns:
        return []
    newest = predictions["ts"].max()
    first = (newest - timedelta(days=window_days)).replace(hour=0, minute=0, second=0, microsecond=0)
    recent = predictions.filter(pl.col("ts") >= first).with_columns(
        event_day(predictions, day_column).alias("__day")
    )
    out = []
    for version, held_out in expectations.items():
        task = tasks.get(version)
        mine = recent.filter(pl.col("model_version") == version)
        if task is None or mine.height == 0:
            continue
        rows, y, output = labelled_rows(mine, feedback, task)
        if len(y) == 0:
            continue
        rows = rows.with_columns(pl.Series("__loss", task.row_loss(y, output)))
        for start in sorted(rows["ts"].dt.date().unique().to_list()):
            check = _loss_check_since(
                rows.filter(pl.col("ts").dt.date() >= start), str(start), version, held_out, task
            )
            if check is not None:
                out.append(check)
    return out


def _loss_check_since(
    rows: pl.DataFrame, start: str, version: int, held_out: HeldOutLoss, task: LearningTask
) -> DegradationCheck | None:
    """One start's check: each day's mean loss over the held-out one (as minus the ratio, so that a
    gap below zero means worse, as for ROC-AUC), the days combined (no between-day spread is known for
    losses yet: days count as independent)."""
    base, base_se = held_out.loss, held_out.se
    if base <= 0:
        return None
    gaps = []
    for (day,), part in sorted(rows.partition_by(["__day"], as_dict=True).items()):
        losses = part["__loss"].to_numpy()
        if len(losses) < 2:
            continue
        ratio = float(np.mean(losses)) / base
        se = float(np.std(losses, ddof=1) / np.sqrt(len(losses))) / base
        se = (se**2 + (ratio * base_se / base) ** 2) ** 0.5  # the held-out figure is an estimate too
        gaps.append(DayGap(day=str(day), labels=len(losses), realised=-ratio, expected=-1.0, se=se))
    if not gaps:
        return None
    gap, se = combine_gaps(gaps, 0.0)
    labels = sum(g.labels for g in gaps)
    return DegradationCheck(
        model_version=version, since=start, days=len(gaps), labels=labels,
        realised=sum(-g.realised * g.labels for g in gaps) / labels * base, expected=base,
        expected_from="held-out", gap=gap, se=se, se_sampling=se, metric=f"mean {task.loss_name}",
    )  # fmt: skip


def canary_loss_evidence(
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    champion: int,
    challenger: int,
    hours: float,
    task: LearningTask,
) -> CanaryEvidence:
    """``canary_evidence`` for classes and numbers: both models' losses on the same labelled rows (the
    answering arm's ``output`` and the other arm's ``paired_output``, or in shadow mode the challenger's
    ``shadow_output``), each row weighted by its inverse labelling propensity (``labelling_weights``:
    groups are the answering version and its chosen class; a number's answers form one group per
    version), compared as the relative reduction of the weighted mean loss, overall and per 24 h."""
    empty = CanaryEvidence(
        champion_version=champion, challenger_version=challenger, champion_labels=0, challenger_labels=0,
        hours=hours, paired=None,
    )  # fmt: skip
    if predictions.height == 0 or feedback.height == 0:
        return empty
    evidence, both = paired_rows(predictions, feedback, empty, "paired_output", "shadow_output")
    both = both.filter(pl.col("output").is_not_null())
    rows, y, answered = labelled_rows(both, pl.DataFrame(), task, labelled=True)
    if len(y) < 2:
        return evidence
    other = _outputs(rows["paired_output"], task)
    on_champion = (rows["model_version"] == champion).to_numpy()
    pick = on_champion[:, None] if answered.ndim == 2 else on_champion
    loss_champion = task.row_loss(y, np.where(pick, answered, other))
    loss_challenger = task.row_loss(y, np.where(pick, other, answered))
    w = rows["__weight"].to_numpy()
    metric = f"mean {task.loss_name}"
    daily = []
    if "ts" in rows.columns:
        day = ((rows["ts"] - rows["ts"].min()).dt.total_seconds() // 86_400).to_numpy()
        for d in np.unique(day):
            on = day == d
            if on.sum() >= 2:
                daily.append(
                    weighted_paired_loss_difference(loss_champion[on], loss_challenger[on], w[on], metric)
                )
    paired = weighted_paired_loss_difference(loss_champion, loss_challenger, w, metric)
    return evidence.model_copy(update={"paired": paired, "daily": daily})


def _outputs(column: pl.Series, task: LearningTask) -> np.ndarray:
    """A log's list column of outputs as rows x classes (classes) or one value per row (numbers)."""
    if task.kind == "multiclass":
        return np.asarray(column.to_list(), dtype=np.float64).reshape(len(column), -1)
    return np.asarray(column.list.first().to_numpy(), dtype=np.float64)
