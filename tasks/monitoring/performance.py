"""Live performance: logged predictions joined with the outcomes callers reported, per model version."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn import metrics as skm

from tasks.core.logs import outcome_per_request
from tasks.model.evaluate import PairedAucDifference, auc_standard_error, paired_auc_difference


def _both_classes_twice(y: np.ndarray) -> bool:
    """DeLong's standard error needs two rows of each class (one positive has no variance to measure):
    fewer is "not enough labels yet", never an error that stops the monitor or the canary."""
    positives = int(np.sum(y == 1))
    return positives >= 2 and len(y) - positives >= 2


class LivePerformance(BaseModel):
    model_version: int
    predictions: int
    labels: int
    roc_auc: float | None
    log_loss: float | None
    mean_prediction: float
    positive_rate: float | None
    roc_auc_se: float | None = None  # DeLong's standard error of roc_auc
    window: tuple[str, str] | None = None  # first and last prediction time judged


def live_performance(
    predictions: pl.DataFrame, feedback: pl.DataFrame, min_labels: int, window_days: float | None = None
) -> list[LivePerformance]:
    """Per model version: predictions joined with their observed outcomes (``outcome_per_request``);
    a request id logged twice counts once. With ``window_days``, only predictions made in the last
    ``window_days`` before the newest one count: performance now, not averaged over the whole log."""
    if predictions.height == 0:
        return []
    if window_days is not None and "ts" in predictions.columns:
        newest = predictions["ts"].max()
        predictions = predictions.filter(pl.col("ts") > newest - timedelta(days=window_days))
    columns = ["request_id", "model_version", "probability", *(["ts"] if "ts" in predictions.columns else [])]
    labelled = predictions.select(columns).unique("request_id", keep="first", maintain_order=True)
    if feedback.height:
        outcomes = outcome_per_request(feedback).collect()
        labelled = labelled.join(outcomes, on="request_id", how="left")
    else:
        labelled = labelled.with_columns(pl.lit(None, dtype=pl.Int8).alias("outcome"))
    out = []
    for (version,), part in labelled.partition_by(["model_version"], as_dict=True).items():
        known = part.filter(pl.col("outcome").is_not_null())
        y, p = known["outcome"].to_numpy(), np.clip(known["probability"].to_numpy(), 1e-7, 1 - 1e-7)
        enough = known.height >= min_labels and _both_classes_twice(y)
        span = (str(part["ts"].min()), str(part["ts"].max())) if "ts" in part.columns else None
        out.append(
            LivePerformance(
                model_version=int(version),
                predictions=part.height,
                labels=known.height,
                roc_auc=float(skm.roc_auc_score(y, p)) if enough else None,
                log_loss=float(skm.log_loss(y, p, labels=[0, 1])) if enough else None,
                mean_prediction=float(part["probability"].mean()),
                positive_rate=float(y.mean()) if known.height else None,
                roc_auc_se=auc_standard_error(y, p) if enough else None,
                window=span,
            )
        )
    return sorted(out, key=lambda r: r.model_version)


def _shadow_as_paired(labelled: pl.DataFrame) -> pl.DataFrame:
    """One spelling for "the other model's score on this row": a canary's paired score, or in shadow
    mode the challenger's shadow score (the champion answered)."""
    columns = {"paired_version": pl.Int64, "paired_probability": pl.Float64, "shadow_version": pl.Int64,
               "shadow_probability": pl.Float64}  # fmt: skip
    labelled = labelled.with_columns(
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in columns.items()
        if name not in labelled.columns
    )
    shadowed = pl.col("shadow_version").is_not_null() & pl.col("paired_version").is_null()
    return labelled.with_columns(
        pl.when(shadowed)
        .then(pl.col("shadow_version"))
        .otherwise(pl.col("paired_version"))
        .alias("paired_version"),
        pl.when(shadowed)
        .then(pl.col("shadow_probability"))
        .otherwise(pl.col("paired_probability"))
        .alias("paired_probability"),
        shadowed.alias("shadowed"),
    )


class CanaryEvidence(BaseModel):
    """What a canary has shown so far: labelled rows per arm, and both models compared on the same
    labelled rows (each row is scored by both during a canary; one answers, the other is logged)."""

    champion_version: int
    challenger_version: int
    champion_labels: int  # labelled rows the champion answered since the canary started
    challenger_labels: int
    hours: float  # since the canary started
    paired: PairedAucDifference | None  # champion = a, challenger = b; None: too few paired labels
    daily: list[PairedAucDifference] = []  # the same per 24 h since the canary's first request


def canary_evidence(
    predictions: pl.DataFrame, feedback: pl.DataFrame, champion: int, challenger: int, hours: float
) -> CanaryEvidence:
    """Evidence from the prediction log since the canary started (``predictions``) and the feedback."""
    empty = CanaryEvidence(
        champion_version=champion,
        challenger_version=challenger,
        champion_labels=0,
        challenger_labels=0,
        hours=hours,
        paired=None,
    )
    if predictions.height == 0 or feedback.height == 0:
        return empty
    outcomes = outcome_per_request(feedback).collect()
    labelled = _shadow_as_paired(
        predictions.unique("request_id", keep="first", maintain_order=True)
        .join(outcomes, on="request_id", how="inner")
        .filter(pl.col("outcome").is_not_null())
    )
    counts = dict(labelled.group_by("model_version").len().iter_rows())
    # in shadow mode the challenger answers no one but scores every row: those rows are its evidence
    shadowed = labelled.filter(pl.col("shadowed") & (pl.col("paired_version") == challenger)).height
    evidence = empty.model_copy(
        update={
            "champion_labels": int(counts.get(champion, 0)),
            "challenger_labels": int(counts.get(challenger, 0)) + shadowed,
        }
    )
    both = labelled.filter(
        ((pl.col("model_version") == champion) & (pl.col("paired_version") == challenger))
        | ((pl.col("model_version") == challenger) & (pl.col("paired_version") == champion))
    ).filter(pl.col("paired_probability").is_not_null())
    on_champion = both["model_version"] == champion
    p_champion = np.where(on_champion, both["probability"], both["paired_probability"])
    p_challenger = np.where(on_champion, both["paired_probability"], both["probability"])
    y = both["outcome"].to_numpy()
    if not _both_classes_twice(y):
        return evidence
    daily = []
    if "ts" in both.columns:
        day = ((both["ts"] - both["ts"].min()).dt.total_seconds() // 86_400).to_numpy()
        for d in np.unique(day):
            on = day == d
            if _both_classes_twice(y[on]):
                daily.append(paired_auc_difference(y[on], p_champion[on], p_challenger[on]))
    return evidence.model_copy(
        update={"paired": paired_auc_difference(y, p_champion, p_challenger), "daily": daily}
    )
