"""The monitoring flow: what did the service see since last time, and is the champion still right?

    python flows/monitoring.py
    prefect deployment run 'monitor/local'

Reads the prediction log since its watermark, profiles the window (whylogs, merged per day),
compares it with the champion's reference profile (drift per input and of the prediction), checks
data quality, measures live performance from feedback, and emits Prefect events for what it finds:
``driftloop.drift.detected``, ``driftloop.performance.degraded``, ``driftloop.data_quality.failed``.
"""

from __future__ import annotations

import io
import math

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from tasks.events import emit_model_event
from tasks.model.evaluate import png_data_uri
from tasks.monitoring.window import (
    MonitorReport,
    data_quality,
    drift_scores,
    live_performance,
    mark_processed,
    profile_and_store_daily,
    unprocessed_files,
)
from tasks.orchestration import io_task, publish
from tasks.monitoring.profile import load_profile
from tasks.registry.versions import Registry
from tasks.serving.watcher import FEEDBACK_COLUMNS, PREDICTION_COLUMNS, read_log
from tasks.core.settings import Settings
from tasks.core.store import open_store


class MonitorParams(BaseModel):
    model_name: str | None = Field(None, description="registry name (default: the dataset config's)")


@io_task(name="judge-window")
def judge_window(model_name: str, settings: Settings) -> MonitorReport:
    """Everything monitoring concludes about the unprocessed part of the prediction log."""
    store = open_store(settings)
    config = settings.load_dataset()
    registry = Registry(store, model_name)
    champion_version = registry.alias_doc().aliases.get("champion")
    if champion_version is None:
        return MonitorReport(model_name=model_name, champion=None, files=[], rows=0, window=None,
                             note=f"{model_name!r} has no champion yet (run the training flow); nothing to monitor")
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
        report.note = (f"only {frame.height} new predictions (monitoring.min_rows={mon.min_rows}); "
                       "they stay unprocessed and count towards the next run")
        report.files = []
        return report
    transform = registry.load_transform(champion)
    inputs = transform.spec.input_columns
    reference = load_profile(registry.read_file(champion, "reference_profile.bin"))
    window = profile_and_store_daily(store, model_name, frame, inputs, config.time.column)
    report.drift = drift_scores(window, reference, mon)
    report.drifted = [d.column for d in report.drift if d.drifted]
    features = [d for d in report.drift if d.column != "prediction"]
    share = sum(d.drifted for d in features) / max(len(features), 1)
    report.drift_detected = share >= mon.drift_share or "prediction" in report.drifted
    report.quality_problems = data_quality(frame, transform, reference, mon)
    report.performance = live_performance(read_log(store, "predictions", PREDICTION_COLUMNS),
                                          read_log(store, "feedback", FEEDBACK_COLUMNS), mon.min_labels)
    for perf in report.performance:
        expected = registry.get(perf.model_version).metrics.get("roc_auc")
        if perf.roc_auc is not None and expected is not None and perf.roc_auc < expected - mon.max_auc_drop:
            report.degraded.append(f"v{perf.model_version}: live ROC-AUC {perf.roc_auc:.3f} on {perf.labels} labels, "
                                   f"test ROC-AUC {expected:.3f}")
    return report


def drift_png(report: MonitorReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report.drift, key=lambda d: d.pvalue)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.25 * len(rows))))
    ax.barh([d.column for d in rows][::-1], [min(-math.log10(max(d.pvalue, 1e-300)), 50) for d in rows][::-1],
            color=["tab:red" if d.drifted else "tab:green" for d in rows][::-1])
    ax.axvline(-math.log10(rows[0].threshold if rows else 0.05), ls="--", color="grey")
    ax.set(xlabel="-log10 p-value (right of the line: drifted)", title=f"{report.model_name}: drift vs reference")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


@flow(name="monitor", persist_result=True)
def monitor(params: MonitorParams = MonitorParams()) -> MonitorReport:
    logger = get_run_logger()
    settings = Settings()
    model_name = settings.model_name(params.model_name)
    report = judge_window(model_name, settings)
    if report.note:
        logger.info(report.note)
        publish(create_markdown_artifact, key=f"{model_name}-monitoring".replace("_", "-"),
                markdown=f"# Monitoring {model_name}\n\n{report.note}", description="monitoring summary")
        return report
    payload = {"version": report.champion, "window": list(report.window or ()), "rows": report.rows}
    if report.drift_detected:
        emit_model_event("driftloop.drift.detected", model_name, {**payload, "drifted": report.drifted},
                         target=settings.target)
    if report.degraded:
        emit_model_event("driftloop.performance.degraded", model_name, {**payload, "evidence": report.degraded},
                         target=settings.target)
    if report.quality_problems:
        emit_model_event("driftloop.data_quality.failed", model_name, {**payload, "problems": report.quality_problems},
                         target=settings.target)
    _publish(report)
    mark_processed(open_store(settings), model_name, report.files)  # last: a failed run reprocesses its window
    logger.info("monitored %d predictions of %s: drift %s (%s), quality problems %d, degraded %s", report.rows,
                model_name, report.drift_detected, ", ".join(report.drifted) or "none", len(report.quality_problems),
                report.degraded or "no")
    return report


def _publish(report: MonitorReport) -> None:
    key = report.model_name.replace("_", "-")
    publish(create_table_artifact, key=f"{key}-drift", description="drift per column vs the champion's reference",
            table=[d.model_dump() for d in report.drift])
    perf = "\n".join(f"| v{p.model_version} | {p.predictions} | {p.labels} | "
                     f"{'n/a' if p.roc_auc is None else f'{p.roc_auc:.3f}'} | {p.mean_prediction:.3f} |"
                     for p in report.performance)
    md = (f"# Monitoring {report.model_name} (champion v{report.champion})\n\n"
          f"- window: {report.window[0]} .. {report.window[1]}, {report.rows} predictions\n"
          f"- drift: **{'DETECTED' if report.drift_detected else 'none'}** — drifted: {', '.join(report.drifted) or 'none'}\n"
          f"- data quality: {'; '.join(report.quality_problems) or 'ok'}\n"
          f"- performance: {'; '.join(report.degraded) or 'no degradation found'}\n\n"
          f"| version | predictions | labels | live ROC-AUC | mean prediction |\n|---|---|---|---|---|\n{perf}\n\n"
          f"![drift]({png_data_uri(drift_png(report))})\n")
    publish(create_markdown_artifact, key=f"{key}-monitoring", markdown=md, description="monitoring summary")


if __name__ == "__main__":
    from pydantic_settings import CliApp

    print(monitor(CliApp.run(MonitorParams)).model_dump_json(indent=2, exclude={"files", "drift"}))
