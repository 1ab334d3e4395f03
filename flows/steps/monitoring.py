"""Prefect steps of the monitoring stage: the reference profile, judging a window, lineage.

Each step is a named Prefect task over ``tasks.monitoring``; what the numbers mean (drift or not,
degraded or not) is decided by ``tasks.decisions``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
from pydantic import BaseModel

from flows.steps.runtime import cached_task, io_task
from tasks.core.config import DatasetConfig
from tasks.core.context import RunContext
from tasks.core.logs import FEEDBACK, FEEDBACK_COLUMNS, PREDICTION_COLUMNS, PREDICTIONS, read_log
from tasks.core.profile import load_profile
from tasks.data.snapshot import SnapshotManifest
from tasks.decisions import (
    DegradationVerdict,
    DriftVerdict,
    EstimatedDropVerdict,
    HeldOutAuc,
    decide_degradation,
    decide_drift,
    decide_estimated_drop,
    decide_retrain_needed,
)
from tasks.model.evaluate import hanley_mcneil_se
from tasks.model.features import FittedTransform
from tasks.model.held_out import (
    HeldOutPart,
    merged_profile,
    reference_inputs,
    reference_sample,
    reference_spacing,
)
from tasks.model.train import PreparedTraining, TrainedModel
from tasks.monitoring.drift import (
    DriftReference,
    calibrate_reference,
    data_quality,
    drift_scores,
    input_importance,
    refused_at_serving,
)
from tasks.monitoring.lineage import request_lineage, version_lineage
from tasks.monitoring.loss_performance import HeldOutLoss, live_loss_performance, loss_degradation_checks
from tasks.monitoring.performance import CalibratedVersion, degradation_checks, live_performance
from tasks.monitoring.window import (
    MonitorReport,
    WindowPart,
    WindowPlan,
    merge_parts,
    plan_window,
    profile_partition,
    read_window,
    refused_in,
    store_daily,
)
from tasks.registry.versions import ModelVersion, Registry


@cached_task(name="profile-reference")
def profile_reference(
    trained: TrainedModel,
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    parts: list[HeldOutPart],
    ctx: RunContext,
) -> dict[str, str]:
    """The drift reference: a whylogs profile of the held-out rows' raw inputs and the model's
    predictions on them (rows it did not train on; the scored parts' profiles merged), calibrated
    against random held-out windows, with what the model learned from each column. Returns registry
    file name -> store key."""
    store, config = ctx.store, ctx.config
    start = prepared.split.train_end
    every = reference_spacing(manifest, prepared, config)  # evenly spaced beyond it
    inputs = reference_inputs(prepared.transform, config)
    time_col = config.time_column
    held = reference_sample(
        store, manifest, parts, start, every, [*inputs, *([time_col] if time_col else [])], prepared.task
    )
    window = (str(held[time_col].min()), str(held[time_col].max())) if time_col else ("held-out rows", "")
    profile, reference = calibrate_reference(
        held.select(*inputs, "prediction"),
        window,
        store.scan_parquet(manifest.part_keys).select(inputs),  # every row (streamed), for coverage
        config,
        input_importance(prepared.transform.spec, trained.importance),
        seed=config.training.seed,
        view=merged_profile(parts),
    )
    keys = {
        "reference_profile.bin": f"{trained.files_prefix}/reference_profile.bin",
        "drift_reference.json": f"{trained.files_prefix}/drift_reference.json",
    }
    store.write_bytes(keys["reference_profile.bin"], profile)
    store.write_bytes(keys["drift_reference.json"], reference.model_dump_json().encode())
    return keys


class MonitorPlan(BaseModel):
    """The champion a monitoring run judges, and the window of the log it reads (none: no champion)."""

    champion: int | None
    transform: FittedTransform | None = None  # the champion's own, read once for every partition
    window: WindowPlan | None = None


@io_task(name="plan-window")
def plan_monitoring_window(model_name: str, ctx: RunContext) -> MonitorPlan:
    """The serving champion and the unjudged part of its prediction log, as files by date partition."""
    champion = Registry(ctx.store, model_name).alias_doc().aliases.get("champion")
    if champion is None:
        return MonitorPlan(champion=None)
    registry = Registry(ctx.store, model_name)
    return MonitorPlan(
        champion=champion,
        transform=registry.load_transform(registry.get(champion)),
        window=plan_window(ctx.store, model_name, ctx.settings.logs.lateness_seconds),
    )


@io_task(name="profile-log-partition")
def profile_log_partition(keys: list[str], plan: MonitorPlan, model_name: str, ctx: RunContext) -> WindowPart:
    """One date partition of the window read and profiled where this runs (a thread, or a Dask worker
    with the dask engine): whylogs profiles per day, null and unseen-level counts; no raw rows return."""
    frame = read_window(ctx.store, model_name, plan.window, keys)
    return profile_partition(frame, plan.transform, ctx.config.time_column)


@io_task(name="judge-window")
def judge_window(
    model_name: str, plan: MonitorPlan, parts: list[WindowPart], ctx: RunContext
) -> MonitorReport:
    """Everything monitoring concludes about the unprocessed part of the prediction log, from its
    partitions' profiles and counts."""
    store, config = ctx.store, ctx.config
    registry = Registry(store, model_name)
    if plan.champion is None:
        return MonitorReport(
            model_name=model_name,
            champion=None,
            rows=0,
            window=None,
            note=f"{model_name!r} has no champion yet (run the training flow); nothing to monitor",
        )
    champion = registry.get(plan.champion)
    window = merge_parts(parts)
    report = MonitorReport(model_name=model_name, champion=champion.version, rows=0, window=None)
    if window.rows == 0:
        report.note = "no new predictions since the last run; nothing to judge"
        return report
    report.rows = window.rows
    report.window = (str(window.ts_min), str(window.ts_max))
    mon = config.monitoring
    if window.rows < mon.min_rows:
        report.note = (
            f"only {window.rows} new predictions (monitoring.min_rows={mon.min_rows}); "
            "they stay unprocessed and count towards the next run"
        )
        return report
    report.through = plan.window.end
    reference = load_profile(registry.read_file(champion, "reference_profile.bin"))
    whole = store_daily(store, model_name, window)
    if "drift_reference.json" in champion.files:
        drift_reference = DriftReference.model_validate_json(
            registry.read_file(champion, "drift_reference.json")
        )
        report.drift = drift_scores(whole, drift_reference, window.rows, mon)
        drift_verdict = decide_drift(report.drift, mon)
        report.drifted, report.drift_detected, report.drift_reason = (
            drift_verdict.drifted,
            drift_verdict.detected,
            drift_verdict.reason,
        )
    else:
        report.drift_reason = (
            f"champion v{champion.version} was registered before drift references were "
            "saved with each version: retrain it to judge drift; performance is judged below"
        )
        drift_verdict = DriftVerdict(
            outcome="no drift", drifted=[], actionable=[], reason=report.drift_reason
        )
    report.quality_problems = data_quality(window, plan.transform, reference, mon)
    report.quality_problems += refused_at_serving(
        refused_in(store, model_name, plan.window.start, plan.window.end), window.rows, mon
    )
    # only the date partitions the performance window can reach are read (the log may be long)
    recent = (datetime.now(timezone.utc) - timedelta(days=mon.performance_window_days + 1)).date()
    event_time = [config.time_column] if config.time_column else []  # outcomes cluster by the event's day
    task = plan.transform.task
    outputs = ["output"] if task.kind != "binary" else []
    predictions = read_log(
        store, PREDICTIONS, model_name, [*PREDICTION_COLUMNS, *outputs, *event_time], since=recent
    )
    feedback = read_log(store, FEEDBACK, model_name, FEEDBACK_COLUMNS, since=recent)
    serving = {v: registry.get(v) for v in set(registry.alias_doc().aliases.values())}
    if task.kind != "binary":
        degradation, estimated = judge_losses(report, predictions, feedback, serving, registry, config)
    else:
        degradation, estimated = judge_roc_auc(report, predictions, feedback, serving, config)
    needed = decide_retrain_needed(drift_verdict, degradation, estimated)
    report.retrain, report.retrain_reason = needed.kinds, needed.reason
    return report


def judge_roc_auc(
    report: MonitorReport,
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    serving: dict[int, ModelVersion],
    config: DatasetConfig,
) -> tuple[DegradationVerdict, EstimatedDropVerdict]:
    """A yes/no model's live performance (ROC-AUC, with CBPE before labels), and whether it degraded."""
    mon = config.monitoring
    calibrated = {
        v: CalibratedVersion(threshold=mv.threshold, day_sd=mv.metrics.get("cbpe_day_sd") or 0.0)
        for v, mv in serving.items()
        if "calibration_slope" in mv.metrics
    }
    report.performance = live_performance(
        predictions,
        feedback,
        mon.min_labels,
        window_days=mon.performance_window_days,
        calibrated=calibrated,
        day_column=config.time_column,
    )
    held_out = {v: held_out_auc(mv) for v, mv in serving.items()}  # a retired version's past is not news
    expectations = {v: calibrated.get(v) or ref for v, ref in held_out.items() if v in calibrated or ref}
    degradation = decide_degradation(
        degradation_checks(
            predictions, feedback, expectations, mon.performance_window_days, config.time_column
        ),
        mon.max_auc_drop,
        mon.degradation_alpha,
        mon.degradation_horizon_days,
        mon.degradation_planned_labels,
    )
    report.degraded = degradation.evidence
    serving_now = [p for p in report.performance if p.model_version in serving]
    estimated = decide_estimated_drop(serving_now, held_out, mon.max_auc_drop)
    report.estimated_drop = estimated.evidence
    return degradation, estimated


def judge_losses(
    report: MonitorReport,
    predictions: pl.DataFrame,
    feedback: pl.DataFrame,
    serving: dict[int, ModelVersion],
    registry: Registry,
    config: DatasetConfig,
) -> tuple[DegradationVerdict, EstimatedDropVerdict]:
    """A class or number model's live performance (its metrics and mean loss per version, each with its
    own classes), and whether its loss rose beyond the held-out one (``tasks.monitoring.loss_performance``).
    There is no estimate before labels for these kinds: said in the verdict."""
    mon = config.monitoring
    tasks = {v: registry.load_transform(mv).task for v, mv in serving.items()}
    report.performance = live_loss_performance(
        predictions, feedback, tasks, mon.min_labels, window_days=mon.performance_window_days
    )
    expected = {
        v: HeldOutLoss(loss=mv.metrics["loss"], se=mv.metrics.get("loss_se", 0.0))
        for v, mv in serving.items()
        if "loss" in mv.metrics
    }
    checks = loss_degradation_checks(
        predictions, feedback, expected, tasks, mon.performance_window_days, config.time_column
    )
    degradation = decide_degradation(
        checks,
        mon.max_loss_increase,
        mon.degradation_alpha,
        mon.degradation_horizon_days,
        mon.degradation_planned_labels,
    )
    report.degraded = degradation.evidence
    estimated = EstimatedDropVerdict(
        outcome="ok", evidence=[], reason="no estimate before labels for classes and numbers: labels decide"
    )
    return degradation, estimated


def held_out_auc(mv: ModelVersion) -> HeldOutAuc | None:
    """What a version's evaluation measured on its test window, with its standard error (from the AUC,
    the test rows and their positive rate; versions registered before ``test_rows`` was recorded get
    none, so any drop of theirs counts as precise)."""
    m = mv.metrics
    if m.get("roc_auc") is None:
        return None
    rows, rate = m.get("test_rows"), m.get("positive_rate")
    se = 0.0
    if rows and rate is not None:
        positives = round(rows * rate)
        se = hanley_mcneil_se(m["roc_auc"], positives, round(rows) - positives)
    return HeldOutAuc(roc_auc=m["roc_auc"], se=se)


@io_task(name="trace-lineage")
def trace_lineage(
    model_name: str, request_id: str | None, version: int | None, ctx: RunContext
) -> dict[str, Any]:
    """A prediction's or a version's way back to the data (exactly one of ``request_id``, ``version``)."""
    registry = Registry(ctx.store, model_name)
    if request_id:
        return request_lineage(ctx.store, registry, request_id)
    return version_lineage(ctx.store, registry, version)
