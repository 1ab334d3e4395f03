"""The monitoring verdicts and the retrain cooldown, on controlled inputs (the promotion gate, the
retrain gate and the canary verdict have their own tests beside this one)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tasks.core.config import MonitoringConfig
from tasks.decisions import decide_degradation, decide_drift, decide_retrain_start
from tasks.monitoring.drift import ColumnDrift
from tasks.monitoring.performance import LivePerformance


def _drift(column: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(
        column=column,
        algorithm="ks",
        pvalue=0.001 if drifted else 0.5,
        statistic=0.1,
        threshold=0.05,
        drifted=drifted,
    )


def test_drift_needs_a_share_of_inputs_or_the_prediction():
    config = MonitoringConfig(drift_share=0.5)
    calm = decide_drift(
        [_drift("a", True), _drift("b", False), _drift("c", False), _drift("prediction", False)], config
    )
    assert (
        calm.outcome == "no drift"
        and not calm.detected
        and calm.drifted == ["a"]
        and "1 of 3 inputs" in calm.reason
    )
    broad = decide_drift(
        [_drift("a", True), _drift("b", True), _drift("c", False), _drift("prediction", False)], config
    )
    assert broad.detected and broad.drifted == ["a", "b"]
    output = decide_drift([_drift("a", False), _drift("b", False), _drift("prediction", True)], config)
    assert output.detected and "prediction drifted" in output.reason
    assert not decide_drift([], config).detected


def _perf(version: int, auc: float | None, labels: int = 500) -> LivePerformance:
    return LivePerformance(
        model_version=version,
        predictions=labels,
        labels=labels,
        roc_auc=auc,
        log_loss=None,
        mean_prediction=0.3,
        positive_rate=0.2,
    )


def test_degradation_compares_live_with_test_auc_per_version():
    verdict = decide_degradation(
        [_perf(1, 0.70), _perf(2, 0.60), _perf(3, None)], {1: 0.72, 2: 0.71, 3: 0.9}, 0.05
    )
    assert (
        verdict.outcome == "degraded" and len(verdict.evidence) == 1 and verdict.evidence[0].startswith("v2:")
    )
    fine = decide_degradation([_perf(1, 0.70)], {1: 0.72}, 0.05)
    assert fine.outcome == "ok" and fine.evidence == [] and "none more than 0.05" in fine.reason
    assert (
        decide_degradation([_perf(1, 0.50)], {1: None}, 0.05).outcome == "ok"
    )  # no test AUC: nothing to compare


def test_retrain_waits_for_the_cooldown():
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert decide_retrain_start("m", None, None, now, 60, False).outcome == "start"
    recent = decide_retrain_start("m", now - timedelta(minutes=10), "drift", now, 60, False)
    assert recent.outcome == "wait" and "cooldown of 60 min" in recent.reason and "(drift)" in recent.reason
    assert decide_retrain_start("m", now - timedelta(minutes=10), "drift", now, 60, True).outcome == "start"
    assert decide_retrain_start("m", now - timedelta(minutes=61), "drift", now, 60, False).outcome == "start"
