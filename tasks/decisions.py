"""Every decision driftloop takes on its own, side by side: pure functions returning outcome + reason.

- ``decide_promotion``: what a freshly trained model becomes (the training flow's gate);
- ``compare_on_holdout``: whether a retrained model may go out as a canary (the retrain gate);
- ``decide_retrain_start``: whether a retrain may start now (the cooldown);
- ``decide_canary``: promote the challenger, drop it, or wait for more live evidence;
- ``decide_drift``: whether a monitoring window has drifted from the champion's reference;
- ``decide_degradation``: whether a version's live performance fell below what its test promised.

They read only their arguments (metrics, statistics, thresholds from settings or the dataset config),
so each is unit-tested on controlled inputs in ``tests/model/test_decisions.py`` and its kin, and the
flows only apply what they return.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from tasks.core.config import MonitoringConfig
from tasks.core.settings import GateSettings, RetrainSettings
from tasks.model.evaluate import ChampionEvaluation, Metrics, combine_days
from tasks.monitoring.drift import ColumnDrift
from tasks.monitoring.performance import CanaryEvidence, LivePerformance


class Decision(BaseModel):
    """An outcome and the reason for it, in words a person reads in an artifact or a notification."""

    outcome: str
    reason: str


# --- promotion gate (training) -------------------------------------------------------------------
class PromotionDecision(Decision):
    # champion / rejected: the gate; candidate: registered for the caller's own gate (retrain);
    # reproduced: the run rebuilt a version registered before, so nothing changes
    outcome: Literal["champion", "rejected", "candidate", "reproduced"]


def decide_promotion(
    candidate: Metrics, champion: ChampionEvaluation, gate: GateSettings
) -> PromotionDecision:
    """A first model becomes champion (something has to serve). A later one becomes champion only if it
    beats the champion's ROC-AUC on the same test window by the margin, with enough test rows to believe
    it; otherwise it is rejected: registered with no alias, never served. (A retrained model takes the
    retrain gate and a canary instead, see ``compare_on_holdout`` and ``decide_canary``.)"""
    if champion.version is None:
        return PromotionDecision(outcome="champion", reason="first model of this name: it becomes champion")
    if champion.metrics is None:
        return PromotionDecision(
            outcome="rejected",
            reason=f"{champion.note}: no evidence it is better; promote it by hand (promote flow) "
            "if intended",
        )
    if candidate.rows < gate.min_test_rows:
        return PromotionDecision(
            outcome="rejected",
            reason=f"only {candidate.rows} test rows (gate needs {gate.min_test_rows}); not enough evidence",
        )
    gain = candidate.roc_auc - champion.metrics.roc_auc
    verdict = (
        f"ROC-AUC {candidate.roc_auc:.4f} vs champion v{champion.version} {champion.metrics.roc_auc:.4f}"
        f" (gain {gain:+.4f}, margin {gate.min_auc_gain})"
    )
    if gain >= gate.min_auc_gain:
        return PromotionDecision(outcome="champion", reason=f"beats the champion: {verdict}")
    return PromotionDecision(
        outcome="rejected", reason=f"does not beat the champion by the margin: {verdict}"
    )


def decide_registration(
    gate: PromotionDecision, register_as: Literal["gate", "candidate"]
) -> PromotionDecision:
    """What the new version becomes: the gate's outcome, unless the caller (retraining, with its own
    gate and a canary) asked for a plain candidate."""
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


# --- retrain gate --------------------------------------------------------------------------------
class HoldoutComparison(BaseModel):
    """A retrained model against the champion on the same recent holdout, with uncertainty; ``passed``
    is the gate's outcome and ``reason`` says why."""

    rows: int
    champion_version: int
    candidate_version: int
    champion_auc: float
    candidate_auc: float
    gain_mean: float
    gain_low: float
    gain_high: float
    slices_worse: list[str]
    passed: bool
    reason: str


def bootstrap_auc_gain(
    y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, samples: int, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and 95% percentile interval of AUC(new) - AUC(old) over paired bootstrap resamples."""
    rng = np.random.default_rng(seed)
    gains = []
    n = len(y)
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        gains.append(roc_auc_score(y[idx], p_new[idx]) - roc_auc_score(y[idx], p_old[idx]))
    g = np.array(gains)
    return float(g.mean()), float(np.percentile(g, 2.5)), float(np.percentile(g, 97.5))


def compare_on_holdout(
    y: np.ndarray,
    p_new: np.ndarray,
    p_old: np.ndarray,
    slices: pl.DataFrame,
    champion_version: int,
    candidate_version: int,
    settings: RetrainSettings,
    min_slice_rows: int = 200,
) -> HoldoutComparison:
    """The retrain gate: a retrained model (``p_new``) against the champion (``p_old``) on the same recent
    holdout. Pass when the gain's interval clears the non-inferiority margin and no slice gets clearly
    worse."""
    mean, low, high = bootstrap_auc_gain(y, p_new, p_old, settings.bootstrap_samples)
    worse = []
    for col in slices.columns:
        values = slices[col].cast(pl.String).fill_null("<missing>").to_numpy()
        for value in np.unique(values):
            mask = values == value
            if mask.sum() < min_slice_rows or len(np.unique(y[mask])) < 2:
                continue
            drop = roc_auc_score(y[mask], p_old[mask]) - roc_auc_score(y[mask], p_new[mask])
            if drop > settings.slice_tolerance:
                worse.append(f"{col}={value}: ROC-AUC {drop:.3f} lower")
    passed = low > settings.min_gain_lower and not worse
    interval = (
        f"ROC-AUC gain {mean:+.4f} (95% interval {low:+.4f} .. {high:+.4f}, "
        f"margin {settings.min_gain_lower:+.4f})"
    )
    if passed:
        reason = f"passes: {interval}, no slice worse by more than {settings.slice_tolerance}"
    elif worse:
        reason = f"fails: slices got worse ({'; '.join(worse[:5])}); {interval}"
    else:
        reason = f"fails: {interval}"
    return HoldoutComparison(
        rows=len(y),
        champion_version=champion_version,
        candidate_version=candidate_version,
        champion_auc=float(roc_auc_score(y, p_old)),
        candidate_auc=float(roc_auc_score(y, p_new)),
        gain_mean=mean,
        gain_low=low,
        gain_high=high,
        slices_worse=worse,
        passed=passed,
        reason=reason,
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
    test of the ROC-AUC gain). Promote when the gain's lower bound clears ``canary_margin``; stop early
    when its upper bound is below ``-canary_stop_margin`` (the challenger is significantly worse); with
    too few labels per arm, or no clear result, wait, until ``canary_max_hours``: then the champion
    stays. The bounds are a time-uniform confidence sequence (``canary_radius``): an equally good
    challenger is promoted with probability at most ``canary_alpha`` however many times it is judged."""
    e = evidence
    have = f"{e.challenger_labels} challenger / {e.champion_labels} champion labels after {e.hours:.1f} h"
    expired = e.hours >= policy.canary_max_hours
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
    verdict = (
        f"live ROC-AUC on the same {p.rows} labelled rows: challenger v{e.challenger_version} {p.auc_b:.4f}"
        f" vs champion v{e.champion_version} {p.auc_a:.4f}, gain {p.gain:+.4f} (upper bound {high:+.4f}; "
        f"over {len(e.daily)} day(s) {gain:+.4f}, lower bound {low:+.4f}; {z:.2f} standard errors: "
        f"false-promotion rate {policy.canary_alpha:g} however often it is judged); {have}"
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


class HeldOutAuc(BaseModel):
    """What a version's evaluation measured on its held-out test window."""

    roc_auc: float
    se: float


def decide_degradation(
    performance: list[LivePerformance],
    held_out: dict[int, HeldOutAuc | None],
    max_auc_drop: float,
    alpha: float,
) -> DegradationVerdict:
    """A version is degraded when its live ROC-AUC (over the recent window) is more than ``max_auc_drop``
    below what its held-out test measured, and the drop is significant at ``alpha`` (one-sided) given
    the uncertainty of both numbers: a small or noisy dip is reported, not acted on."""
    from scipy.stats import norm

    z_needed = float(norm.ppf(1 - alpha))
    evidence, judged = [], 0
    for perf in performance:
        ref = held_out.get(perf.model_version)
        if perf.roc_auc is None or ref is None:
            continue
        judged += 1
        drop = ref.roc_auc - perf.roc_auc
        se = ((perf.roc_auc_se or 0.0) ** 2 + ref.se**2) ** 0.5
        z = drop / se if se > 0 else (float("inf") if drop > 0 else 0.0)
        if drop > max_auc_drop and z >= z_needed:
            evidence.append(
                f"v{perf.model_version}: live ROC-AUC {perf.roc_auc:.3f} on {perf.labels} labels vs held-out "
                f"{ref.roc_auc:.3f}: {drop:.3f} lower "
                f"(z={z:.1f}; needs > {max_auc_drop} and z >= {z_needed:.2f})"
            )
    if evidence:
        return DegradationVerdict(outcome="degraded", evidence=evidence, reason="; ".join(evidence))
    return DegradationVerdict(
        outcome="ok",
        evidence=[],
        reason=(
            f"{judged} version(s) with enough labels, none significantly more than {max_auc_drop} "
            "below its held-out ROC-AUC"
        ),
    )
