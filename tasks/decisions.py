"""Every decision driftloop takes on its own, side by side: pure functions returning outcome + reason.

- ``decide_promotion``: what a freshly trained model becomes: a first one champion if it beats its
  baselines (``decide_first_model``), a later one challenger if it passes ``compare_on_holdout`` (the
  holdout gate), never a direct replacement;
- ``decide_retrain_start``: whether a retrain may start now (the cooldown);
- ``decide_canary``: promote the challenger, drop it, or wait for more live evidence;
- ``decide_drift``: whether a monitoring window has drifted from the champion's reference;
- ``decide_degradation``: whether a version's live performance fell below what was expected of its rows
  (sequential, with a false-alarm rate per 28 days of checks);
- ``decide_estimated_drop``: whether, before labels, its calibrated scores promise less than its test;
- ``decide_retrain_needed``: the one "retrain needed" answer with every reason.

They read only their arguments (metrics, statistics, thresholds from settings or the dataset config),
so each is unit-tested on controlled inputs in ``tests/model/test_decisions.py`` and its kin, and the
flows only apply what they return.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl
from pydantic import AliasChoices, BaseModel, Field

from tasks.core.config import MonitoringConfig
from tasks.core.settings import GateSettings, RetrainSettings
from tasks.core.target import LearningTask
from tasks.model.calibrate import ThresholdChoice
from tasks.model.evaluate import ChampionEvaluation, combine_days, paired_auc_difference
from tasks.model.kind_metrics import paired_loss_gain
from tasks.monitoring.drift import ColumnDrift
from tasks.monitoring.performance import CanaryEvidence, DegradationCheck, HeldOutAuc, LivePerformance


class Decision(BaseModel):
    """An outcome and the reason for it, in words a person reads in an artifact or a notification."""

    outcome: str
    reason: str


# --- promotion gate (training, retraining) ---------------------------------------------------------
class GainInterval(BaseModel):
    """A candidate against another model (or a baseline) on the same test rows, with the gain's
    one-sided bounds at the gate's ``alpha``. Yes/no: ROC-AUC, DeLong's paired difference. Classes and
    numbers: the objective's mean loss, the gain its relative reduction (paired bootstrap)."""

    against: str  # "champion v3", "logistic regression", "majority class", "training mean"
    metric: str = "ROC-AUC"  # or the loss's name ("log loss", "squared error", ...)
    rows: int
    positives: int | None = None  # yes/no only
    score: float = Field(validation_alias=AliasChoices("score", "auc"))  # the candidate's
    other_score: float = Field(validation_alias=AliasChoices("other_score", "other_auc"))
    gain: float
    low: float
    high: float

    @property
    def is_loss(self) -> bool:
        return self.metric != "ROC-AUC"


def auc_gain_interval(
    y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, against: str, alpha: float
) -> GainInterval | None:
    """The candidate's gain over ``p_old`` with one-sided ``alpha`` bounds; None with fewer than two
    rows of each class (no evidence either way)."""
    from scipy.stats import norm

    y = np.asarray(y).astype(int)
    positives = int(y.sum())
    if positives < 2 or len(y) - positives < 2:
        return None
    d = paired_auc_difference(y, p_old, p_new)
    z = float(norm.ppf(1 - alpha))
    return GainInterval(
        against=against,
        rows=len(y),
        positives=positives,
        score=d.auc_b,
        other_score=d.auc_a,
        gain=d.gain,
        low=d.gain - z * d.se,
        high=d.gain + z * d.se,
    )


def loss_gain_interval(
    task: LearningTask, y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, against: str, alpha: float
) -> GainInterval | None:
    """For classes and numbers: the candidate's relative reduction of the objective's mean loss against
    ``p_old`` on the same rows, with paired-bootstrap one-sided ``alpha`` bounds; None with fewer than
    two rows (or rows the other model cannot be scored on)."""
    p_old = np.asarray(p_old, dtype=np.float64)
    if not np.isfinite(p_old).all():
        return None
    g = paired_loss_gain(task, y, p_new, p_old, alpha)
    if g is None:
        return None
    return GainInterval(
        against=against, metric=task.loss_name, rows=g.rows, score=g.loss_new, other_score=g.loss_old,
        gain=g.gain, low=g.low, high=g.high,
    )  # fmt: skip


def _describe(g: GainInterval) -> str:
    if g.is_loss:
        return (
            f"mean {g.metric} {g.score:.4g} vs {g.against} {g.other_score:.4g}: {g.gain:+.1%} lower "
            f"(one-sided bounds {g.low:+.1%} .. {g.high:+.1%}; {g.rows} rows, paired bootstrap)"
        )
    return (
        f"ROC-AUC {g.score:.4f} vs {g.against} {g.other_score:.4f}: gain {g.gain:+.4f} "
        f"(one-sided bounds {g.low:+.4f} .. {g.high:+.4f}; {g.positives} positives / "
        f"{g.rows - (g.positives or 0)} negatives)"
    )


class HoldoutComparison(BaseModel):
    """A candidate against the champion on the same test rows, with uncertainty; ``passed`` is the
    gate's outcome and ``reason`` says why. ``metric``: what ``champion_auc`` / ``candidate_auc`` hold
    (ROC-AUC, or the objective's mean loss, whose gain is the relative reduction)."""

    rows: int
    positives: int | None
    champion_version: int
    candidate_version: int | None  # None: not registered yet (the training run's own gate)
    metric: str = "ROC-AUC"
    champion_auc: float
    candidate_auc: float
    gain_mean: float
    gain_low: float
    gain_high: float
    slices_worse: list[str]
    passed: bool
    reason: str


def slices_clearly_worse(
    y: np.ndarray,
    p_new: np.ndarray,
    p_old: np.ndarray,
    slices: pl.DataFrame,
    tolerance: float,
    alpha: float,
    min_class_rows: int,
) -> list[str]:
    """Slices (one value of a slice column) where the candidate's ROC-AUC is below the champion's by
    more than ``tolerance`` beyond doubt: the drop's lower bound, Bonferroni-corrected over every slice
    judged, exceeds it. Slices with fewer than ``min_class_rows`` rows of either class are not judged:
    their interval would be too wide to fail anything, and that is said in the reason instead."""
    from scipy.stats import norm

    judged: list[tuple[str, np.ndarray]] = []
    y = np.asarray(y).astype(int)
    for col in slices.columns:
        values = slices[col].cast(pl.String).fill_null("<missing>").to_numpy()
        for value in np.unique(values):
            mask = values == value
            positives = int(y[mask].sum())
            if min(positives, int(mask.sum()) - positives) >= min_class_rows:
                judged.append((f"{col}={value}", mask))
    if not judged:
        return []
    z = float(norm.ppf(1 - alpha / len(judged)))
    worse = []
    for name, mask in judged:
        d = paired_auc_difference(y[mask], p_old[mask], p_new[mask])
        drop_low = -d.gain - z * d.se
        if drop_low > tolerance:
            worse.append(f"{name}: ROC-AUC {-d.gain:.3f} lower (at least {drop_low:.3f})")
    return worse


def compare_on_holdout(
    y: np.ndarray,
    p_new: np.ndarray,
    p_old: np.ndarray,
    slices: pl.DataFrame,
    champion_version: int,
    candidate_version: int | None,
    gate: GateSettings,
    task: LearningTask | None = None,
) -> HoldoutComparison:
    """The gate every later model passes before it may go out as a canary: on the same test rows, the
    gain's one-sided lower bound clears the non-inferiority margin ``gate.min_gain_lower`` and (yes/no)
    no slice is clearly worse. Yes/no: the ROC-AUC gain (DeLong, paired); classes and numbers: the
    relative reduction of the objective's mean loss (paired bootstrap), so the margin is a share of the
    loss. Evidence is what the rows hold, no fixed row minimum (a small test set gives a wide interval,
    which an equal model does not clear)."""
    task = task or LearningTask()
    if task.kind != "binary":
        return _compare_losses(task, y, p_new, p_old, champion_version, candidate_version, gate)
    y = np.asarray(y).astype(int)
    positives = int(y.sum())
    g = auc_gain_interval(y, p_new, p_old, f"champion v{champion_version}", gate.alpha)
    base = dict(
        rows=len(y), positives=positives, champion_version=champion_version,
        candidate_version=candidate_version,
    )  # fmt: skip
    if g is None:
        return HoldoutComparison(
            **base, champion_auc=float("nan"), candidate_auc=float("nan"), gain_mean=float("nan"),
            gain_low=float("nan"), gain_high=float("nan"), slices_worse=[], passed=False,
            reason=f"fails: the test window holds {positives} positive(s) and {len(y) - positives} "
            "negative(s), no evidence either way; train on a wider window",
        )  # fmt: skip
    worse = slices_clearly_worse(
        y, p_new, p_old, slices, gate.slice_tolerance, gate.alpha, gate.min_slice_class_rows
    )
    passed = g.low > gate.min_gain_lower and not worse
    interval = f"{_describe(g)}, non-inferiority margin {gate.min_gain_lower:+.4f}"
    if passed:
        reason = f"passes: {interval}; no slice clearly worse by more than {gate.slice_tolerance}"
    elif worse:
        reason = f"fails: slices clearly worse ({'; '.join(worse[:5])}); {interval}"
    else:
        reason = f"fails: not shown at least as good: {interval}"
    return HoldoutComparison(
        **base, champion_auc=g.other_score, candidate_auc=g.score, gain_mean=g.gain, gain_low=g.low,
        gain_high=g.high, slices_worse=worse, passed=passed, reason=reason,
    )  # fmt: skip


def _compare_losses(
    task: LearningTask,
    y: np.ndarray,
    p_new: np.ndarray,
    p_old: np.ndarray,
    champion_version: int,
    candidate_version: int | None,
    gate: GateSettings,
) -> HoldoutComparison:
    """``compare_on_holdout`` for classes and numbers (slices are not judged for these kinds yet: the
    reason says so)."""
    g = loss_gain_interval(task, y, p_new, p_old, f"champion v{champion_version}", gate.alpha)
    base = dict(
        rows=len(y), positives=None, champion_version=champion_version, candidate_version=candidate_version,
        metric=task.loss_name, slices_worse=[],
    )  # fmt: skip
    if g is None:
        return HoldoutComparison(
            **base, champion_auc=float("nan"), candidate_auc=float("nan"), gain_mean=float("nan"),
            gain_low=float("nan"), gain_high=float("nan"), passed=False,
            reason=f"fails: {len(y)} test row(s), no evidence either way; train on a wider window",
        )  # fmt: skip
    passed = g.low > gate.min_gain_lower
    interval = f"{_describe(g)}, non-inferiority margin {gate.min_gain_lower:+.1%} of the loss"
    reason = (
        f"passes: {interval} (slices not judged for {task.kind} targets)"
        if passed
        else f"fails: not shown at least as good: {interval}"
    )
    return HoldoutComparison(
        **base, champion_auc=g.other_score, candidate_auc=g.score, gain_mean=g.gain, gain_low=g.low,
        gain_high=g.high, passed=passed, reason=reason,
    )  # fmt: skip


class GateEvidence(BaseModel):
    """What the promotion gate reads off the test rows: the candidate against its baselines (majority
    class, logistic regression) and, when one scored them, against the champion; and how many test rows
    its threshold labels positive."""

    baselines: list[GainInterval | None]
    comparison: HoldoutComparison | None
    test_flagged: int
    test_rows: int


class PromotionDecision(Decision):
    # champion: a first model that beat its baselines; challenger: a later model that passed the gate,
    # put out as a canary (never a direct replacement); rejected: no alias, never served;
    # candidate: registered for the caller's own purpose; reproduced: rebuilt a version registered
    # before, so nothing changes
    outcome: Literal["champion", "challenger", "rejected", "candidate", "reproduced"]


def decide_first_model(baselines: list[GainInterval | None], labels_anyone: str | None) -> PromotionDecision:
    """The first model of a name serves only if it is significantly better than chance (the majority
    class) and not significantly worse than a regularised logistic regression trained in the same run
    on the same rows: else a simpler model would serve better, and that is the reason given."""
    if labels_anyone:
        return PromotionDecision(outcome="rejected", reason=labels_anyone)
    majority, linear = baselines
    if majority is None or linear is None:
        return PromotionDecision(
            outcome="rejected",
            reason="the test window holds fewer than two rows of each class: no evidence the model is "
            "better than chance; train on a wider window",
        )
    chance = "chance" if majority.against == "majority class" else f"the {majority.against}"
    if majority.low <= 0:
        return PromotionDecision(
            outcome="rejected", reason=f"not shown better than {chance}: {_describe(majority)}"
        )
    if linear.high < 0:
        return PromotionDecision(
            outcome="rejected",
            reason=f"a {linear.against} does significantly better: {_describe(linear)}; widen the "
            "search (training.n_trials, search_space) or check the features",
        )
    return PromotionDecision(
        outcome="champion",
        reason=f"first model of this name: better than {chance} ({_describe(majority)}) and not worse "
        f"than a {linear.against} ({_describe(linear)})",
    )


def decide_promotion(
    champion: ChampionEvaluation,
    comparison: HoldoutComparison | None,
    baselines: list[GainInterval | None],
    labels_anyone: str | None,
    running_challenger: int | None,
) -> PromotionDecision:
    """What a freshly trained model becomes. The first of its name: champion if it beats its baselines
    (``decide_first_model``). A later one never replaces the champion directly: if it passes the
    holdout gate (``compare_on_holdout``) it becomes the challenger and a canary decides on live traffic
    (``decide_canary``); otherwise it is rejected. ``labels_anyone``: why its threshold labels no one
    positive (or None)."""
    if champion.version is None:
        return decide_first_model(baselines, labels_anyone)
    if labels_anyone:
        return PromotionDecision(outcome="rejected", reason=labels_anyone)
    if champion.metrics is None or comparison is None:
        return PromotionDecision(
            outcome="rejected",
            reason=f"{champion.note}: no evidence it is as good; promote it by hand (promote flow) if "
            "intended",
        )
    if not comparison.passed:
        return PromotionDecision(outcome="rejected", reason=f"holdout gate {comparison.reason}")
    if running_challenger is not None:
        return PromotionDecision(
            outcome="candidate",
            reason=f"holdout gate {comparison.reason}; but the canary of v{running_challenger} is "
            "running: it is decided first. Registered without an alias; start its canary by hand "
            "(promote flow, alias challenger) after that",
        )
    return PromotionDecision(
        outcome="challenger", reason=f"holdout gate {comparison.reason}: a canary decides on live traffic"
    )


def decide_labels_anyone(threshold: ThresholdChoice | None, test_flagged: int, test_rows: int) -> str | None:
    """Why a yes/no model's labels are useless, or None: no threshold meets the config's rule on
    validation, or at its threshold it labels no test row positive. (Classes and numbers have no
    threshold: None.)"""
    if threshold is None:
        return None
    if threshold.problem:
        return f"threshold rule {threshold.rule!r}: {threshold.problem}"
    if test_flagged == 0:
        return (
            f"at its threshold {threshold.threshold:.4f} ({threshold.rule}) it labels none of the "
            f"{test_rows} test rows positive; check the features or the threshold rule"
        )
    return None


def decide_registration(
    gate: PromotionDecision, register_as: Literal["gate", "candidate"]
) -> PromotionDecision:
    """What the new version becomes: the gate's outcome, unless the caller asked for a plain candidate."""
    if register_as != "candidate":
        return gate
    return PromotionDecision(
        outcome="candidate",
        reason=f"registered without an alias; the promotion gate would say: {gate.reason}",
    )


def decide_reproduced(
    version: int, registered_before: bool, carried_out: bool, outcome_then: str | None
) -> PromotionDecision | None:
    """A run that rebuilt (from cache) a version registered before, whose decision was carried out then,
    changes nothing: ``reproduced``. None when the version is new (or its decision is still owed)."""
    if not (registered_before and carried_out):
        return None
    return PromotionDecision(
        outcome="reproduced",
        reason=(
            f"v{version} was registered before from the same data, code and settings "
            f"({outcome_then or 'no decision recorded'}); nothing changes"
        ),
    )


class RetrainStart(Decision):
    outcome: Literal["start", "wait"]


def decide_retrain_start(
    model_name: str,
    last_started: datetime | None,
    last_reason: str | None,
    now: datetime,
    cooldown_minutes: float,
    ignore_cooldown: bool,
) -> RetrainStart:
    """At most one retrain per model in the cooldown period, however many events ask for one."""
    if last_started is None or ignore_cooldown:
        why = (
            "asked to ignore the cooldown" if last_started is not None else "no retrain of it has run before"
        )
        return RetrainStart(outcome="start", reason=f"{model_name}: {why}")
    if now - last_started < timedelta(minutes=cooldown_minutes):
        return RetrainStart(
            outcome="wait",
            reason=(
                f"a retrain of {model_name} started at {last_started.isoformat()} ({last_reason}); "
                f"the cooldown of {cooldown_minutes:g} min (DRIFTLOOP_RETRAIN__COOLDOWN_MINUTES) "
                "has not passed"
            ),
        )
    return RetrainStart(
        outcome="start",
        reason=f"{model_name}: the last retrain started at "
        f"{last_started.isoformat()}, more than {cooldown_minutes:g} min ago",
    )


def decide_retrain_claim(
    model_name: str,
    slot: Literal["free", "taken", "not_needed"],
    last_started: datetime | None,
    last_reason: str | None,
    now: datetime,
    cooldown_minutes: float,
    ignore_cooldown: bool,
    limit_name: str,
) -> RetrainStart:
    """Whether this run may retrain, given what the cooldown's concurrency slot said: ``free`` (this
    run took it), ``taken`` (another retrain holds it) or ``not_needed`` (no cooldown applies)."""
    if slot == "not_needed":
        why = "asked to ignore the cooldown" if ignore_cooldown else "no cooldown is set"
        return RetrainStart(outcome="start", reason=f"{model_name}: {why}")
    if slot == "free":
        return RetrainStart(outcome="start", reason=f"{model_name}: the cooldown slot was free")
    told = decide_retrain_start(model_name, last_started, last_reason, now, cooldown_minutes, False)
    return RetrainStart(
        outcome="wait",
        reason=(
            told.reason
            if told.outcome == "wait"
            else f"another retrain of {model_name} took the slot a moment ago"
        )
        + f" (Prefect concurrency limit {limit_name!r}; reset it in the UI to retrain now)",
    )


def decide_retrain_during_canary(model_name: str, challenger: int | None) -> RetrainStart:
    """A running canary is decided first: a retrain now would replace its challenger and restart its
    clock, so a stream of drift events could keep any canary from ever finishing."""
    if challenger is None:
        return RetrainStart(outcome="start", reason=f"{model_name}: no canary is running")
    return RetrainStart(
        outcome="wait",
        reason=(
            f"a canary of {model_name} v{challenger} is running; it is decided first (the hourly "
            "canary-decision flow promotes or stops it). Retrain after that, or stop it now with the "
            "rollback or promote flow"
        ),
    )


# --- canary --------------------------------------------------------------------------------------
class CanaryVerdict(Decision):
    outcome: Literal["promote", "drop", "wait"]


def canary_radius(rows: int, alpha: float, planned_rows: int) -> float:
    """How many standard errors the canary's gain must clear, on ``rows`` paired labelled rows, so that
    the chance an equally good challenger is ever promoted stays at ``alpha`` however often the canary
    is looked at (hourly, any number of times, as labels arrive).

    A time-uniform asymptotic confidence sequence (the normal-mixture boundary of Howard et al. 2021,
    in the asymptotic form of Waudby-Smith et al. 2024): the gain estimate is asymptotically linear
    (DeLong's decomposition), so its running standardized sum stays inside
    ``sqrt(2 (t r + 1) / (t r) * log(sqrt(t r + 1) / alpha))`` standard errors for all ``t`` at once.
    ``r`` tunes where the bound is tightest: near ``planned_rows`` (the labels a canary usually
    gathers); it is valid at every other size too, only wider. Checked by simulation on the hourly
    schedule in ``bench/canary_power.py``."""
    import math

    t = max(int(rows), 1)
    r = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / planned_rows
    return math.sqrt(2 * (t * r + 1) / (t * r) * math.log(math.sqrt(t * r + 1) / alpha))


def decide_canary(evidence: CanaryEvidence, policy: RetrainSettings) -> CanaryVerdict:
    """Promote, drop or wait, on both models scored on the same labelled live rows (DeLong's paired
    test of the ROC-AUC gain; for classes and numbers, of the relative reduction of the mean loss,
    the margins then being shares of the loss; each row weighted by its inverse labelling propensity
    so feedback that depends on the answer does not favour either model; answers that never get an
    outcome make it wait and say so). Promote when the gain's lower bound clears ``canary_margin``; stop early
    when its upper bound is below ``-canary_stop_margin`` (the challenger is significantly worse); with
    too few labels per arm, or no clear result, wait, until ``canary_max_hours``: then the champion
    stays. The bounds are a time-uniform confidence sequence (``canary_radius``): an equally good
    challenger is promoted with probability at most ``canary_alpha`` however many times it is judged."""
    e = evidence
    have = f"{e.challenger_labels} challenger / {e.champion_labels} champion labels after {e.hours:.1f} h"
    expired = e.hours >= policy.canary_max_hours
    if e.unlabelled:  # selective feedback: the labelled rows cannot stand for the rest
        rates = ", ".join(f"{g} {r:.0%}" for g, r in sorted(e.labelling.items()))
        why = (
            f"outcomes never come for rows {'; '.join(e.unlabelled)} (labelled so far: {rates}): a "
            "comparison on the labelled rows would favour the model that did not answer them. Report "
            "outcomes for a random share of those rows too (any share lets them be weighted)"
        )
        if expired:
            return CanaryVerdict(outcome="drop", reason=f"{policy.canary_max_hours:g} h passed; {why}")
        return CanaryVerdict(outcome="wait", reason=f"labels are selective: {why}")
    if min(e.champion_labels, e.challenger_labels) < policy.canary_min_labels or e.paired is None:
        if expired:
            return CanaryVerdict(
                outcome="drop",
                reason=f"{policy.canary_max_hours:g} h passed without enough "
                f"evidence ({have}; {policy.canary_min_labels} per arm needed): the champion stays",
            )
        return CanaryVerdict(
            outcome="wait",
            reason=f"not enough evidence yet: {have}; {policy.canary_min_labels} per arm needed",
        )
    p = e.paired
    z = canary_radius(p.rows, policy.canary_alpha, policy.canary_planned_labels)
    high = p.gain + z * p.se
    # promotion: the gain over days (random effects), so a good day does not carry an average one
    gain, se = combine_days(e.daily) if len(e.daily) > 1 else (p.gain, p.se)
    low = gain - z * se
    if p.metric != "ROC-AUC":  # a loss: the gain is its relative reduction
        verdict = (
            f"live {p.metric} on the same {p.rows} labelled rows: challenger v{e.challenger_version} "
            f"{p.auc_b:.4g} vs champion v{e.champion_version} {p.auc_a:.4g}, {p.gain:+.2%} lower (upper "
            f"bound {high:+.2%}; over {len(e.daily)} day(s) {gain:+.2%}, lower bound {low:+.2%}; {z:.2f} "
            f"standard errors: false-promotion rate {policy.canary_alpha:g} however often it is judged); "
            f"{have}"
        )
    else:
        verdict = (
            f"live ROC-AUC on the same {p.rows} labelled rows: challenger v{e.challenger_version} "
            f"{p.auc_b:.4f} vs champion v{e.champion_version} {p.auc_a:.4f}, gain {p.gain:+.4f} (upper "
            f"bound {high:+.4f}; over {len(e.daily)} day(s) {gain:+.4f}, lower bound {low:+.4f}; {z:.2f} "
            f"standard errors: false-promotion rate {policy.canary_alpha:g} however often it is judged); "
            f"{have}"
        )
    if high < -policy.canary_stop_margin:
        return CanaryVerdict(outcome="drop", reason=f"significantly worse, stopped early: {verdict}")
    if low > policy.canary_margin and e.hours >= policy.canary_min_hours:
        return CanaryVerdict(
            outcome="promote", reason=f"significantly better than +{policy.canary_margin:g}: {verdict}"
        )
    if expired:
        return CanaryVerdict(
            outcome="drop",
            reason=f"not shown better within {policy.canary_max_hours:g} h, the champion stays: {verdict}",
        )
    if low > policy.canary_margin:
        return CanaryVerdict(
            outcome="wait", reason=f"better so far, judged after {policy.canary_min_hours:g} h: {verdict}"
        )
    return CanaryVerdict(outcome="wait", reason=f"no significant difference yet: {verdict}")


# --- monitoring verdicts -------------------------------------------------------------------------
class DriftVerdict(Decision):
    outcome: Literal["drift", "no drift"]
    drifted: list[str]  # groups whose columns drifted, most drifted first (reported)
    actionable: list[str]  # the subset that starts a retrain

    @property
    def detected(self) -> bool:
        return self.outcome == "drift"


def decide_drift(scores: list[ColumnDrift], config: MonitoringConfig) -> DriftVerdict:
    """Drift of a window, judged by calibrated effect sizes. A group of related columns (one join's)
    drifted when any of its columns' PSI is above its calibrated threshold; every such group is reported.
    Drift starts a retrain only where it takes the model outside what it learned: a drifted group the
    model uses (at least ``min_importance`` of its gain) with at least ``min_novelty`` of the window
    beyond what training saw. Drift within the training's range (a season the model was trained on, a
    carrier's share moving) is for live performance to judge, which it does with labels."""
    groups: dict[str, list[ColumnDrift]] = {}
    for d in scores:
        groups.setdefault(d.group, []).append(d)
    drifted, actionable, notes = [], [], []
    for name, members in sorted(groups.items(), key=lambda kv: -max(d.ratio for d in kv[1])):
        hit = [d for d in members if d.drifted]
        if not hit:
            continue
        top = max(hit, key=lambda d: d.ratio)
        label = name if name == top.column else f"{name} ({top.column})"
        drifted.append(label)
        importance = sum(d.importance for d in members)
        novel = max(d.novelty for d in members)
        if importance >= config.min_importance and novel >= config.min_novelty:
            actionable.append(label)
            notes.append(
                f"{label}: PSI {top.psi:.3f} (threshold {top.threshold:.3f}), {novel:.0%} outside "
                f"training, {importance:.0%} of the model's gain"
            )
    if actionable:
        return DriftVerdict(
            outcome="drift",
            drifted=drifted,
            actionable=actionable,
            reason="outside what the model learned: " + "; ".join(notes),
        )
    reason = (
        f"{len(drifted)} group(s) drifted ({', '.join(drifted[:6])}) within what the model was trained "
        "on or in columns it hardly uses: reported, live performance decides"
        if drifted
        else "no column beyond its calibrated threshold"
    )
    return DriftVerdict(outcome="no drift", drifted=drifted, actionable=[], reason=reason)


class DegradationVerdict(Decision):
    outcome: Literal["degraded", "ok"]
    evidence: list[str]


def decide_degradation(
    checks: list[DegradationCheck],
    max_drop: float,
    alpha: float,
    horizon_days: float,
    planned_labels: int,
) -> DegradationVerdict:
    """A version is degraded when, on the labelled predictions since some midnight of the window, its ROC-AUC
    (classes and numbers: its mean loss, relatively) is, day by day, more than ``max_drop`` (the config's
    ``max_auc_drop``, or ``max_loss_increase`` for a loss) below what was expected of those very rows (its
    calibrated probabilities' promise, ``DegradationCheck``) and the drop clears a time-uniform bound: the
    chance of any false "degraded" within ``horizon_days`` of checks, however often they run, is at most
    ``alpha`` (one test per daily start, ``alpha`` shared among the ``horizon_days`` starts; each test's
    bound is ``canary_radius``'s confidence sequence on its effective labels, the days' spread counted as
    a random effect). A window of cases the model finds harder lowers the expectation with the realised
    value, so case mix alone is not degradation; and a drift that ended leaves the starts after it clean.
    Checked by simulation in ``bench/degradation_alarms.py`` (losses: ``bench/decisions_by_kind.py``)."""
    per_start = alpha / max(1.0, horizon_days)
    evidence: dict[int, str] = {}
    judged = {c.model_version for c in checks}
    for c in sorted(checks, key=lambda c: c.since):
        drop = -c.gap
        radius = canary_radius(max(1, round(c.effective_labels)), per_start, planned_labels)
        if c.model_version in evidence or drop <= max_drop or drop <= radius * c.se:
            continue
        if c.metric != "ROC-AUC":  # a loss: the drop is its relative increase
            evidence[c.model_version] = (
                f"v{c.model_version}: live {c.metric} {c.realised:.4g} on {c.labels} labels over {c.days} "
                f"day(s) since {c.since[:10]} vs {c.expected:.4g} held-out: {drop:.1%} more day by day "
                f"(more than {max_drop:.0%} and beyond the time-uniform bound {radius * c.se:.1%}: "
                f"false-alarm rate {alpha:g} per {horizon_days:g} days of checks)"
            )
            continue
        evidence[c.model_version] = (
            f"v{c.model_version}: live ROC-AUC {c.realised:.3f} on {c.labels} labels over {c.days} "
            f"day(s) since {c.since[:10]} vs {c.expected:.3f} expected of those rows ({c.expected_from}): "
            f"{drop:.3f} lower day by day (more than {max_drop} and beyond the time-uniform bound "
            f"{radius * c.se:.3f}: false-alarm rate {alpha:g} per {horizon_days:g} days of checks)"
        )
    if evidence:
        found = list(evidence.values())
        return DegradationVerdict(outcome="degraded", evidence=found, reason="; ".join(found))
    return DegradationVerdict(
        outcome="ok",
        evidence=[],
        reason=f"{len(judged)} version(s) with enough labels, none significantly more than {max_drop} "
        "below what was expected of its rows",
    )


class EstimatedDropVerdict(Decision):
    outcome: Literal["estimated drop", "ok"]
    evidence: list[str]


def decide_estimated_drop(
    performance: list[LivePerformance], held_out: dict[int, HeldOutAuc | None], max_auc_drop: float
) -> EstimatedDropVerdict:
    """Before any label: a version whose calibrated probabilities promise, for this window's
    predictions, a ROC-AUC more than ``max_auc_drop`` below its held-out figure, with even the top of
    the estimate's band below held-out minus the margin. The inputs moved towards cases the model is
    less sure of (covariate shift); retraining on them is the remedy, and this is known hours or days
    before the labels that would show it."""
    evidence = []
    for perf in performance:
        est, ref = perf.estimated, held_out.get(perf.model_version)
        if est is None or ref is None:
            continue
        if ref.roc_auc - est.roc_auc > max_auc_drop and est.high < ref.roc_auc - max_auc_drop:
            evidence.append(
                f"v{perf.model_version}: estimated ROC-AUC {est.roc_auc:.3f} (band {est.low:.3f} .. "
                f"{est.high:.3f}) on {est.rows} predictions vs held-out {ref.roc_auc:.3f}: the inputs "
                "moved towards cases the model is less sure of (covariate shift), before any label"
            )
    if evidence:
        return EstimatedDropVerdict(outcome="estimated drop", evidence=evidence, reason="; ".join(evidence))
    return EstimatedDropVerdict(outcome="ok", evidence=[], reason="no estimated drop")


class RetrainNeeded(Decision):
    outcome: Literal["retrain", "no retrain"]
    kinds: list[str]  # drift, degradation, estimated drop


def decide_retrain_needed(
    drift: DriftVerdict, degradation: DegradationVerdict, estimated: EstimatedDropVerdict
) -> RetrainNeeded:
    """One answer to "does this model need retraining", with every reason at once: one event, one
    retrain run, whose reason names all that was found."""
    found = [
        ("drift", drift.reason if drift.detected else None),
        ("degradation", degradation.reason if degradation.outcome == "degraded" else None),
        ("estimated drop", estimated.reason if estimated.outcome == "estimated drop" else None),
    ]
    kinds = [k for k, why in found if why]
    if not kinds:
        return RetrainNeeded(outcome="no retrain", kinds=[], reason="nothing found that a retrain would fix")
    return RetrainNeeded(
        outcome="retrain", kinds=kinds, reason="; ".join(f"{k}: {why}" for k, why in found if why)
    )
