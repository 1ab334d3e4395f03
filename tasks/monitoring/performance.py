"""Live performance: logged predictions joined with the outcomes callers reported, per model version."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn import metrics as skm

from tasks.core.logs import outcome_per_request
from tasks.model.evaluate import PairedAucDifference, auc_standard_error, weighted_paired_auc_difference
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


def event_day(frame: pl.DataFrame, day_column: str | None = None) -> pl.Expr:
    """The day an outcome belongs to: the event's own day (the dataset's time column, logged with the
    inputs) when there is one, else the day the prediction was made. Outcomes cluster by the event's day
    (a storm delays that day's flights), whenever the predictions were asked for."""
    if day_column and day_column in frame.columns and frame.schema[day_column].is_temporal():
        return pl.col(day_column).dt.date()
    return pl.col("ts").dt.date()


def _days(frame: pl.DataFrame, day_column: str | None = None) -> int:
    if not frame.height or "ts" not in frame.columns:
        return 1
    return frame.select(event_day(frame, day_column).n_unique()).item()


def _estimate(
    part: pl.DataFrame, version: CalibratedVersion | None, day_column: str | None
) -> EstimatedPerformance | None:
    if version is None:
        return None
    days = _days(part, day_column)
    return estimate_performance(part["probability"].to_numpy(), version.threshold, version.day_sd, days)


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
    # classes and numbers (tasks.monitoring.loss_performance): the kind's metrics on the labelled rows
    # and the mean loss the version was trained to lower, with its standard error
    kind: str = "binary"
    metrics: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}  # 95% bootstrap interval of each of ``metrics``
    loss: float | None = None
    loss_se: float | None = None


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
    day_column: str | None = None,
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
                estimated=_estimate(part, calibrated.get(int(version)), day_column),
            )
        )
    return sorted(out, key=lambda r: r.model_version)


def _shadow_as_paired(
    labelled: pl.DataFrame, paired: str = "paired_probability", shadow: str = "shadow_probability"
) -> pl.DataFrame:
    """One spelling for "the other model's score on this row": a canary's paired score, or in shadow
    mode the challenger's shadow score (the champion answered). ``paired`` / ``shadow``: the columns
    holding them (a yes/no probability, or classes' and numbers' whole output)."""
    dtype = labelled.schema.get(paired) or labelled.schema.get(shadow) or pl.Float64
    columns = {"paired_version": pl.Int64, paired: dtype, "shadow_version": pl.Int64, shadow: dtype}
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
        pl.when(shadowed).then(pl.col(shadow)).otherwise(pl.col(paired)).alias(paired),
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
    # share of rows labelled so far per (answering version, answer): what the weights undo
    labelling: dict[str, float] = {}
    unlabelled: list[str] = []  # answers that never get an outcome: no weight can stand in for them


MIN_GROUP_ROWS = 50  # an answer group this large with no label at all is selective feedback


def labelling_weights(rows: pl.DataFrame) -> tuple[np.ndarray, dict[str, float], list[str]]:
    """Inverse labelling propensities for the labelled rows among ``rows`` (every logged row of the
    canary, ``outcome`` null when none came yet). Feedback often depends on what the service answered
    (callers report outcomes of the rows it flagged), and a paired comparison on such rows is biased
    towards the model that did not answer them: each labelled row stands for the rows of its group
    (answering version, answer) that got no label, weight = logged / labelled. Delays and a random
    share never labelled affect every group alike and leave the weights equal. Groups of at least
    ``MIN_GROUP_ROWS`` rows with no label at all cannot be stood in for: they are named."""
    group = pl.format("v{} answered {}", pl.col("model_version"), pl.col("label").fill_null(-1))
    counts = (
        rows.with_columns(group.alias("__group"))
        .group_by("__group")
        .agg(pl.len().alias("logged"), pl.col("outcome").is_not_null().sum().alias("labelled"))
    )
    rates = {g: lab / logged for g, logged, lab in counts.select("__group", "logged", "labelled").iter_rows()}
    unlabelled = sorted(
        f"{g} ({logged} rows)"
        for g, logged, lab in counts.select("__group", "logged", "labelled").iter_rows()
        if lab == 0 and logged >= MIN_GROUP_ROWS
    )
    labelled = rows.filter(pl.col("outcome").is_not_null()).with_columns(group.alias("__group"))
    weights = (
        1.0 / np.array([rates[g] for g in labelled["__group"].to_list()]) if labelled.height else np.array([])
    )
    return weights, rates, unlabelled


def paired_rows(
    predictions: pl.DataFrame, feedback: pl.DataFrame, empty: CanaryEvidence, paired: str, shadow: str
) -> tuple[CanaryEvidence, pl.DataFrame]:
    """The canary's labelled rows counted per arm (``empty``'s versions), with their labelling weights
    (``__weight``), and those of them both arms scored (the other arm's output in ``paired``; in shadow
    mode the challenger's, from ``shadow``)."""
    champion, challenger = empty.champion_version, empty.challenger_version
    logged = predictions.unique("request_id", keep="first", maintain_order=True)
    if "label" not in logged.columns:
        logged = logged.with_columns(pl.lit(None, dtype=pl.Int8).alias("label"))
    logged = logged.join(outcome_per_request(feedback).collect(), on="request_id", how="left")
    weights, rates, unlabelled = labelling_weights(logged)
    labelled = _shadow_as_paired(logged.filter(pl.col("outcome").is_not_null()), paired, shadow).with_columns(
        pl.Series("__weight", weights)
    )
    counts = dict(labelled.group_by("model_version").len().iter_rows())
    # in shadow mode the challenger answers no one but scores every row: those rows are its evidence
    shadowed = labelled.filter(pl.col("shadowed") & (pl.col("paired_version") == challenger)).height
    evidence = empty.model_copy(
        update={
            "champion_labels": int(counts.get(champion, 0)),
            "challenger_labels": int(counts.get(challenger, 0)) + shadowed,
            "labelling": rates,
            "unlabelled": unlabelled,
        }
    )
    both = labelled.filter(
        ((pl.col("model_version") == champion) & (pl.col("paired_version") == challenger))
        | ((pl.col("model_version") == challenger) & (pl.col("paired_version") == champion))
    ).filter(pl.col(paired).is_not_null())
    return evidence, both


def canary_evidence(
    predictions: pl.DataFrame, feedback: pl.DataFrame, champion: int, challenger: int, hours: float
) -> CanaryEvidence:
    """Evidence from the prediction log since the canary started (``predictions``) and the feedback:
    both models on the same labelled rows, each row weighted by its inverse labelling propensity
    (``labelling_weights``) so that feedback that depends on the answer does not favour either model."""
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
    evidence, both = paired_rows(predictions, feedback, empty, "paired_probability", "shadow_probability")
    on_champion = both["model_version"] == champion
    p_champion = np.where(on_champion, both["probability"], both["paired_probability"])
    p_challenger = np.where(on_champion, both["paired_probability"], both["probability"])
    y, w = both["outcome"].to_numpy(), both["__weight"].to_numpy()
    if not _both_classes_twice(y):
        return evidence
    daily = []
    if "ts" in both.columns:
        day = ((both["ts"] - both["ts"].min()).dt.total_seconds() // 86_400).to_numpy()
        for d in np.unique(day):
            on = day == d
            if _both_classes_twice(y[on]):
                daily.append(weighted_paired_auc_difference(y[on], p_champion[on], p_challenger[on], w[on]))
    return evidence.model_copy(
        update={"paired": weighted_paired_auc_difference(y, p_champion, p_challenger, w), "daily": daily}
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
    # what is judged: ROC-AUC (gap in AUC), or a mean loss (realised / expected are losses; the gap is
    # minus their ratio's excess over 1, so a drop is the relative increase of the loss)
    metric: str = "ROC-AUC"

    @property
    def effective_labels(self) -> float:
        """The labels' worth of evidence once days count as a random effect (Kish's design effect):
        when the between-day spread dominates, a million labels over two days are worth few."""
        return self.labels * (self.se_sampling / self.se) ** 2 if self.se > 0 else float(self.labels)


def combine_gaps(gaps: list[DayGap], day_sd: float) -> tuple[float, float]:
    """The days' gaps combined with a known between-day spread (random effects): mean and its se."""
    w = np.array([1 / (max(g.se, 1e-4) ** 2 + day_sd**2) for g in gaps])  # a tiny day can show se 0
    mean = float(np.sum(w * np.array([g.realised - g.expected for g in gaps])) / w.sum())
    return mean, float(w.sum() ** -0.5)


def degradation_checks(
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    expectations: dict[int, HeldOutAuc | CalibratedVersion],
    window_days: float,
    day_column: str | None = None,
) -> list[DegradationCheck]:
    """One check per version and per UTC midnight (of the predictions' own times) within the last
    ``window_days``: its labelled predictions from that midnight on, judged day by day. Fixed daily
    starts (not the sliding window's edge) keep the number of separate tests one per day, whatever the
    schedule, so ``decide_degradation`` can share its error rate among them; each start's rows only
    grow as labels arrive, which its time-uniform bound allows however often it is looked at. The days
    within a start are the events' days (``event_day``: ``day_column`` when the dataset has one).
    ``expectations``: per version, ``CalibratedVersion`` (expectations from its probabilities, its
    between-day spread) or, for versions trained before calibration, its held-out ROC-AUC."""
    if predictions.height == 0 or feedback.height == 0 or "ts" not in predictions.columns:
        return []
    newest = predictions["ts"].max()
    first = (newest - timedelta(days=window_days)).replace(hour=0, minute=0, second=0, microsecond=0)
    recent = predictions.filter(pl.col("ts") >= first)
    day = event_day(recent, day_column)
    rows = with_outcomes(recent, feedback).join(
        recent.select("request_id", day.alias("__day")).unique("request_id"), on="request_id"
    )
    rows = rows.filter(pl.col("outcome").is_not_null())
    starts = sorted(rows["ts"].dt.date().unique().to_list())
    out = []
    for version, reference in expectations.items():
        mine = rows.filter(pl.col("model_version") == version)
        for start in starts:
            check = _check_since(mine.filter(pl.col("ts").dt.date() >= start), str(start), version, reference)
            if check is not None:
                out.append(check)
    return out


def _check_since(
    rows: pl.DataFrame, start: str, version: int, reference: HeldOutAuc | CalibratedVersion
) -> DegradationCheck | None:
    """One start's check: its labelled rows judged day by day (the events' days), the gaps combined."""
    calibrated = isinstance(reference, CalibratedVersion)
    gaps = []
    for (day,), part in sorted(rows.partition_by(["__day"], as_dict=True).items()):
        y, p = part["outcome"].to_numpy(), part["probability"].to_numpy()
        if not _both_classes_twice(y):
            continue
        se = auc_standard_error(y, p)
        expected = expected_auc(p) if calibrated else reference.roc_auc
        se = se if calibrated else (se**2 + reference.se**2) ** 0.5
        realised = float(skm.roc_auc_score(y, p))
        gaps.append(DayGap(day=str(day), labels=len(y), realised=realised, expected=expected, se=se))
    if not gaps:
        return None
    gap, se = combine_gaps(gaps, reference.day_sd if calibrated else 0.0)
    labels = sum(g.labels for g in gaps)
    return DegradationCheck(
        model_version=version, since=start, days=len(gaps), labels=labels,
        realised=sum(g.realised * g.labels for g in gaps) / labels,
        expected=sum(g.expected * g.labels for g in gaps) / labels,
        expected_from="calibration" if calibrated else "held-out", gap=gap, se=se,
        se_sampling=combine_gaps(gaps, 0.0)[1],
    )  # fmt: skip
