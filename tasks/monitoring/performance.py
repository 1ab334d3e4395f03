"""Live performance: logged predictions joined with the outcomes callers reported, per model version."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn import metrics as skm

from tasks.core.logs import outcome_per_request
from tasks.model.evaluate import PairedAucDifference, auc_standard_error, paired_auc_difference
from tasks.monitoring.estimate import EstimatedPerformance, estimate_performance, expected_auc


def _both_classes_twice(y: np.ndarray) -> bool:
    """DeLong's standard error needs two rows of each class (one positive has no variance to measure):
    fewer is "not enough labels yet", never an error that stops the monitor or the canary."""
    positives = int(np.sum(y == 1))
    return positives >= 2 and len(y) - positives >= 2


class HeldOutAuc(BaseModel):
    """What a version's evaluation measured on its held-out test window."""

    roc_auc: float
    se: float


class CalibratedVersion(BaseModel):
    """What CBPE needs of a version trained with calibration: its label threshold and how far a day's
    ROC-AUC strays from its expectation beyond sampling noise (measured on its test window)."""

    threshold: float
    day_sd: float = 0.0


def _days(frame: pl.DataFrame) -> int:
    return frame["ts"].dt.date().n_unique() if "ts" in frame.columns and frame.height else 1


def _estimate(part: pl.DataFrame, version: CalibratedVersion | None) -> EstimatedPerformance | None:
    if version is None:
        return None
    return estimate_performance(
        part["probability"].to_numpy(), version.threshold, version.day_sd, _days(part)
    )


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
    # CBPE: what the version's calibrated probabilities promise for every prediction of the window
    # (labelled or not), with the band the realised value falls in if calibration holds
    estimated: EstimatedPerformance | None = None


def with_outcomes(predictions: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """Each request once (the first time it was logged) with its observed outcome (null: none yet)."""
    columns = ["request_id", "model_version", "probability", *(["ts"] if "ts" in predictions.columns else [])]
    labelled = predictions.select(columns).unique("request_id", keep="first", maintain_order=True)
    if feedback.height:
        return labelled.join(outcome_per_request(feedback).collect(), on="request_id", how="left")
    return labelled.with_columns(pl.lit(None, dtype=pl.Int8).alias("outcome"))


def live_performance(
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    min_labels: int,
    window_days: float | None = None,
    calibrated: dict[int, CalibratedVersion] | None = None,
) -> list[LivePerformance]:
    """Per model version: predictions joined with their observed outcomes (``outcome_per_request``);
    a request id logged twice counts once. With ``window_days``, only predictions made in the last
    ``window_days`` before the newest one count: performance now, not averaged over the whole log.
    ``calibrated``: the calibrated versions (threshold, between-day spread); they get a CBPE estimate."""
    if predictions.height == 0:
        return []
    if window_days is not None and "ts" in predictions.columns:
        newest = predictions["ts"].max()
        predictions = predictions.filter(pl.col("ts") > newest - timedelta(days=window_days))
    labelled = with_outcomes(predictions, feedback)
    calibrated = calibrated or {}
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
                estimated=_estimate(part, calibrated.get(int(version))),
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


class DayGap(BaseModel):
    """One day's labelled predictions of a version: realised ROC-AUC minus the one expected of them."""

    day: str
    labels: int
    realised: float
    expected: float
    se: float  # of realised - expected (DeLong's, plus the held-out figure's for uncalibrated versions)


class DegradationCheck(BaseModel):
    """A version's labelled predictions made since ``since`` (a UTC midnight), judged day by day: each
    day's ROC-AUC against the one expected of that day's rows (``expected_from``: the version's
    calibrated probabilities on those very rows, so a case mix the model finds harder lowers the
    expectation too; for versions trained before calibration, its held-out ROC-AUC), the days' gaps
    combined with the between-day spread measured at training as a random effect. Judging within days
    matters: outcomes that come in days (a storm delays everyone) make a pooled ROC-AUC fall short of
    its expectation with nothing wrong with the model."""

    model_version: int
    since: str
    days: int
    labels: int
    realised: float  # labels-weighted over the days (shown)
    expected: float
    expected_from: str  # "calibration" or "held-out"
    gap: float  # combined realised - expected (negative: worse than expected)
    se: float  # of gap
    se_sampling: float  # of gap from the labels alone (no between-day spread)

    @property
    def effective_labels(self) -> float:
        """The labels' worth of evidence once days count as a random effect (Kish's design effect):
        when the between-day spread dominates, a million labels over two days are worth few."""
        return self.labels * (self.se_sampling / self.se) ** 2 if self.se > 0 else float(self.labels)


def combine_gaps(gaps: list[DayGap], day_sd: float) -> tuple[float, float]:
    """The days' gaps combined with a known between-day spread (random effects): mean and its se."""
    w = np.array([1 / (g.se**2 + day_sd**2) for g in gaps])
    mean = float(np.sum(w * np.array([g.realised - g.expected for g in gaps])) / w.sum())
    return mean, float(w.sum() ** -0.5)


def degradation_checks(
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    expectations: dict[int, HeldOutAuc | CalibratedVersion],
    window_days: float,
) -> list[DegradationCheck]:
    """One check per version and per UTC midnight within the last ``window_days``: its labelled
    predictions from that midnight on, day by day. Fixed daily starts (not the sliding window's edge)
    keep the number of separate tests one per day, whatever the schedule, so ``decide_degradation`` can
    share its error rate among them; each start's rows only grow as labels arrive, which its
    time-uniform bound allows however often it is looked at. ``expectations``: per version,
    ``CalibratedVersion`` (expectations from its probabilities, its between-day spread) or, for versions
    trained before calibration, its held-out ROC-AUC."""
    if predictions.height == 0 or feedback.height == 0 or "ts" not in predictions.columns:
        return []
    newest = predictions["ts"].max()
    first = (newest - timedelta(days=window_days)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = with_outcomes(predictions.filter(pl.col("ts") >= first), feedback).filter(
        pl.col("outcome").is_not_null()
    )
    if rows.height == 0:
        return []
    rows = rows.with_columns(pl.col("ts").dt.date().alias("__day"))
    out = []
    for version, reference in expectations.items():
        calibrated = isinstance(reference, CalibratedVersion)
        gaps = []
        for (day,), part in sorted(rows.filter(pl.col("model_version") == version).partition_by(
            ["__day"], as_dict=True
        ).items()):  # fmt: skip
            y, p = part["outcome"].to_numpy(), part["probability"].to_numpy()
            if not _both_classes_twice(y):
                continue
            se = auc_standard_error(y, p)
            expected = expected_auc(p) if calibrated else reference.roc_auc
            se = se if calibrated else (se**2 + reference.se**2) ** 0.5
            gaps.append(DayGap(day=str(day), labels=len(y), realised=float(skm.roc_auc_score(y, p)),
                               expected=expected, se=se))  # fmt: skip
        day_sd = reference.day_sd if calibrated else 0.0
        for i in range(len(gaps)):
            since = gaps[i:]
            gap, se = combine_gaps(since, day_sd)
            labels = sum(g.labels for g in since)
            out.append(
                DegradationCheck(
                    model_version=version, since=since[0].day, days=len(since), labels=labels,
                    realised=sum(g.realised * g.labels for g in since) / labels,
                    expected=sum(g.expected * g.labels for g in since) / labels,
                    expected_from="calibration" if calibrated else "held-out", gap=gap, se=se,
                    se_sampling=combine_gaps(since, 0.0)[1],
                )
            )  # fmt: skip
    return out
