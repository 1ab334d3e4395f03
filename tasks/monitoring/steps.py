"""Prefect steps of the monitoring stage: the reference profile, judging a window, lineage.

Each step is a named Prefect task over ``tasks.monitoring``; what the numbers mean (drift or not,
degraded or not) is decided by ``tasks.decisions``.
"""

from __future__ import annotations

from typing import Any

from tasks.core.context import RunContext
from tasks.data.snapshot import SnapshotManifest, load_snapshot
from tasks.decisions import HeldOutAuc, decide_degradation, decide_drift
from tasks.model.evaluate import hanley_mcneil_se
from tasks.model.train import PreparedTraining, TrainedModel, load_candidate, load_matrix, predict
from tasks.monitoring.drift import data_quality, drift_scores
from tasks.monitoring.lineage import request_lineage, version_lineage
from tasks.monitoring.performance import live_performance
from tasks.monitoring.profile import load_profile, reference_profile_bytes
from tasks.monitoring.window import MonitorReport, profile_and_store_daily, unprocessed_files
from tasks.orchestration import cached_task, io_task
from tasks.registry.versions import ModelVersion, Registry
from tasks.serving.logs import FEEDBACK_COLUMNS, PREDICTION_COLUMNS, read_log


@cached_task(name="profile-reference")
def profile_reference(
    trained: TrainedModel, manifest: SnapshotManifest, prepared: PreparedTraining, ctx: RunContext
) -> str:
    """Profile the training rows' raw inputs and the model's predictions; return the profile's key."""
    store = ctx.store
    X, _ = load_matrix(store, manifest, prepared.transform, ctx.config.target.name)
    end = prepared.split.train_end
    inputs = load_snapshot(manifest, store).slice(0, end).select(prepared.transform.spec.input_columns)
    data = reference_profile_bytes(
        inputs, predict(load_candidate(store, trained), X[:end]), ctx.config.time.column
    )
    key = f"{trained.files_prefix}/reference_profile.bin"
    store.write_bytes(key, data)
    return key


@io_task(name="judge-window")
def judge_window(model_name: str, ctx: RunContext) -> MonitorReport:
    """Everything monitoring concludes about the unprocessed part of the prediction log."""
    store, config = ctx.store, ctx.config
    registry = Registry(store, model_name)
    champion_version = registry.alias_doc().aliases.get("champion")
    if champion_version is None:
        return MonitorReport(
            model_name=model_name,
            champion=None,
            files=[],
            rows=0,
            window=None,
            note=f"{model_name!r} has no champion yet (run the training flow); nothing to monitor",
        )
    champion = registry.get(champion_version)
    files = unprocessed_files(store, model_name)
    report = MonitorReport(model_name=model_name, champion=champion.version, files=files, rows=0, window=None)
    if not files:
        report.note = "no new predictions since the last run; nothing to judge"
        return report
    frame = store.scan_parquet(files).collect()
    report.rows = frame.height
    report.window = (str(frame["ts"].min()), str(frame["ts"].max()))
    mon = config.monitoring
    if frame.height < mon.min_rows:
        report.note = (
            f"only {frame.height} new predictions (monitoring.min_rows={mon.min_rows}); "
            "they stay unprocessed and count towards the next run"
        )
        report.files = []
        return report
    transform = registry.load_transform(champion)
    reference = load_profile(registry.read_file(champion, "reference_profile.bin"))
    window = profile_and_store_daily(
        store, model_name, frame, transform.spec.input_columns, config.time.column
    )
    report.drift = drift_scores(window, reference, mon)
    drift = decide_drift(report.drift, mon)
    report.drifted, report.drift_detected = drift.drifted, drift.detected
    report.quality_problems = data_quality(frame, transform, reference, mon)
    report.performance = live_performance(
        read_log(store, "predictions", PREDICTION_COLUMNS),
        read_log(store, "feedback", FEEDBACK_COLUMNS),
        mon.min_labels,
        window_days=mon.performance_window_days,
    )
    held_out = {p.model_version: held_out_auc(registry.get(p.model_version)) for p in report.performance}
    report.degraded = decide_degradation(
        report.performance, held_out, mon.max_auc_drop, mon.degradation_alpha
    ).evidence
    return report


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
