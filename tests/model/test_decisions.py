"""The monitoring verdicts and the retrain cooldown, on controlled inputs (the promotion gate, the
retrain gate and the canary verdict have their own tests beside this one)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tasks.core.config import MonitoringConfig
from tasks.decisions import (
    DegradationVerdict,
    DriftVerdict,
    EstimatedDropVerdict,
    HeldOutAuc,
    canary_radius,
    decide_degradation,
    decide_drift,
    decide_estimated_drop,
    decide_retrain_during_canary,
    decide_retrain_needed,
    decide_retrain_start,
)
from tasks.monitoring.drift import ColumnDrift
from tasks.monitoring.estimate import EstimatedPerformance
from tasks.monitoring.performance import DegradationCheck, LivePerformance


def _drift(
    column: str, psi: float, group: str | None = None, importance: float = 0.1, novelty: float = 0.0
) -> ColumnDrift:
    return ColumnDrift(
        column=column,
        group=group or column,
        psi=psi,
        threshold=0.05,
        drifted=psi > 0.05,
        importance=importance,
        novelty=novelty,
    )


def test_drift_is_reported_by_group_and_acted_on_only_outside_what_the_model_learned():
    config = MonitoringConfig(min_importance=0.05, min_novelty=0.05)
    calm = decide_drift([_drift("a", 0.01), _drift("prediction", 0.02)], config)
    assert calm.outcome == "no drift" and calm.drifted == [] and "no column" in calm.reason
    # a season the model was trained on: drifted, reported, not acted on
    season = decide_drift(
        [_drift("temp", 0.9, "weather"), _drift("dewp", 0.4, "weather"), _drift("carrier", 0.2)], config
    )
    assert not season.detected and season.drifted == ["weather (temp)", "carrier"]
    assert "live performance decides" in season.reason
    # one join's columns count once; the most drifted names the group
    dest = decide_drift(
        [
            _drift("dest_lat", 0.3, "dest", 0.02, 0.2),
            _drift("dest", 0.6, "dest", 0.04, 0.2),
            _drift("dest_tz", 0.2, "dest", 0.0, 0.2),
        ],
        config,
    )
    assert (
        dest.detected
        and dest.drifted == dest.actionable == ["dest"]
        and "20% outside training" in dest.reason
    )
    # novel values in a column the model hardly uses: reported only
    unused = decide_drift([_drift("plane_year", 2.0, importance=0.001, novelty=0.5)], config)
    assert not unused.detected and unused.drifted == ["plane_year"]
    # novelty below the minimum: reported only
    assert not decide_drift([_drift("temp", 2.0, novelty=0.01)], config).detected


def _perf(version: int, auc: float | None, labels: int = 500, se: float | None = 0.01) -> LivePerformance:
    return LivePerformance(
        model_version=version,
        predictions=labels,
        labels=labels,
        roc_auc=auc,
        log_loss=None,
        mean_prediction=0.3,
        positive_rate=0.2,
        roc_auc_se=se if auc is not None else None,
    )


def _check(
    version: int, realised: float, expected: float, labels: int = 2000, se: float = 0.01, since="2013-09-01"
):
    return DegradationCheck(
        model_version=version, since=since, days=3, labels=labels, realised=realised, expected=expected,
        expected_from="calibration", gap=realised - expected, se=se, se_sampling=se,
    )  # fmt: skip


def test_degradation_needs_a_drop_that_is_large_and_beyond_the_time_uniform_bound():
    # 28 daily starts share alpha 0.05: at 2000 labels the bound is ~3.9 standard errors
    radius = canary_radius(2000, 0.05 / 28, 2000)
    assert 3.5 < radius < 4.5
    verdict = decide_degradation(
        [_check(1, 0.70, 0.72), _check(2, 0.60, 0.71), _check(2, 0.58, 0.71, since="2013-09-02")],
        0.02, 0.05, 28, 2000,
    )  # fmt: skip
    assert verdict.outcome == "degraded" and len(verdict.evidence) == 1  # one line per version
    assert verdict.evidence[0].startswith("v2:") and "since 2013-09-01" in verdict.evidence[0]
    small = decide_degradation([_check(1, 0.69, 0.72)], 0.02, 0.05, 28, 2000)
    assert small.outcome == "ok"  # 0.03 lower is 3 standard errors: inside the bound
    noisy = decide_degradation([_check(2, 0.60, 0.71, labels=80, se=0.06)], 0.02, 0.05, 28, 2000)
    assert noisy.outcome == "ok" and "none significantly" in noisy.reason
    assert decide_degradation([], 0.02, 0.05, 28, 2000).outcome == "ok"


def _estimated(version: int, auc: float, low: float, high: float) -> LivePerformance:
    est = EstimatedPerformance(
        rows=5000,
        roc_auc=auc,
        low=low,
        high=high,
        positive_rate=0.2,
        precision=0.4,
        recall=0.6,
        threshold=0.3,
    )
    return _perf(version, None).model_copy(update={"estimated": est})


def test_an_estimated_drop_is_known_before_labels_and_needs_its_band_clear_of_held_out():
    held = {1: HeldOutAuc(roc_auc=0.72, se=0.005), 2: HeldOutAuc(roc_auc=0.72, se=0.005)}
    found = decide_estimated_drop(
        [_estimated(1, 0.66, 0.65, 0.67), _estimated(2, 0.69, 0.66, 0.71)], held, 0.02
    )
    assert (
        found.outcome == "estimated drop" and len(found.evidence) == 1 and found.evidence[0].startswith("v1:")
    )
    assert "covariate shift" in found.evidence[0]
    assert decide_estimated_drop([_perf(1, 0.6)], held, 0.02).outcome == "ok"  # no estimate: nothing said


def test_one_retrain_needed_answer_carries_every_reason():
    drift = DriftVerdict(outcome="drift", drifted=["weather"], actionable=["weather"], reason="weather moved")
    calm = DriftVerdict(outcome="no drift", drifted=[], actionable=[], reason="none")
    degraded = DegradationVerdict(outcome="degraded", evidence=["v1: worse"], reason="v1: worse")
    fine = DegradationVerdict(outcome="ok", evidence=[], reason="fine")
    dropped = EstimatedDropVerdict(outcome="estimated drop", evidence=["v1: harder"], reason="v1: harder")
    none = EstimatedDropVerdict(outcome="ok", evidence=[], reason="no estimated drop")
    both = decide_retrain_needed(drift, degraded, none)
    assert both.outcome == "retrain" and both.kinds == ["drift", "degradation"]
    assert both.reason == "drift: weather moved; degradation: v1: worse"
    assert decide_retrain_needed(calm, fine, dropped).kinds == ["estimated drop"]
    assert decide_retrain_needed(calm, fine, none).outcome == "no retrain"


def test_standard_errors_of_an_auc_agree():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from tasks.model.evaluate import auc_standard_error, hanley_mcneil_se

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 20_000)
    p = 0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.3, len(y))
    auc = roc_auc_score(y, p)
    boot = np.std([roc_auc_score(y[i], p[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(100))])
    delong, hanley = auc_standard_error(y, p), hanley_mcneil_se(auc, int(y.sum()), int(len(y) - y.sum()))
    assert 0.8 < delong / boot < 1.25 and 0.8 < hanley / boot < 1.25


def test_retrain_waits_for_the_cooldown():
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert decide_retrain_start("m", None, None, now, 60, False).outcome == "start"
    recent = decide_retrain_start("m", now - timedelta(minutes=10), "drift", now, 60, False)
    assert recent.outcome == "wait" and "cooldown of 60 min" in recent.reason and "(drift)" in recent.reason
    assert decide_retrain_start("m", now - timedelta(minutes=10), "drift", now, 60, True).outcome == "start"
    assert decide_retrain_start("m", now - timedelta(minutes=61), "drift", now, 60, False).outcome == "start"


def test_a_retrain_waits_while_a_canary_runs():
    assert decide_retrain_during_canary("m", None).outcome == "start"
    running = decide_retrain_during_canary("m", 4)
    assert running.outcome == "wait" and "canary of m v4 is running" in running.reason


def test_the_chance_bound_caps_a_no_drift_windows_false_alarms_at_alpha():
    """A/A: the reference and the window are both samples of one population (a numeric column, a
    categorical one with a rare level, each with an empty null bucket); the window's rows x PSI against
    the reference exceeds ``chance_bound`` about ``alpha`` of the time, at the smallest window
    monitoring judges and at a large one, against a small reference and a large one. (Without the
    reference's own sampling error in the bound, a 5,000-row window against a 2,000-row reference
    exceeded it in 34-72% of these windows instead of 1%.)"""
    import numpy as np

    from tasks.monitoring.drift import ColumnReference, chance_bound, psi

    rng = np.random.default_rng(5)
    alpha, draws = 1e-2, 10_000
    populations = {
        "x": ("numeric", [0.0, *[0.1] * 10]),
        "c": ("categorical", [0.0, 0.7, 0.25, 0.045, 0.005]),
    }
    for total in (2_000, 100_000):  # a small reference (Caravan's) and a large one
        for column, (kind, probs) in populations.items():
            references = rng.multinomial(total, probs, size=draws).astype(float)
            for rows in (200, 5_000):
                windows = rng.multinomial(rows, probs, size=draws)
                exceeded = [
                    psi(r, w) * rows
                    > chance_bound(
                        ColumnReference(column=column, group=column, kind=kind, counts=list(r)), alpha, rows
                    )
                    for r, w in zip(references, windows)
                ]
                rate = float(np.mean(exceeded))
                assert alpha / 4 <= rate <= 2 * alpha, (column, total, rows, rate)  # not lax, not blunt
