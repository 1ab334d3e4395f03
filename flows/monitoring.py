"""The monitoring flow: what did the service see since last time, and is the champion still right?

    python flows/monitoring.py
    prefect deployment run 'monitor/local'

Reads the prediction log since its watermark, one date partition per mapped step (threads, or Dask
workers with the dask engine), profiles the window there (whylogs, merged per day),
compares it with the champion's reference profile (drift per input and of the prediction), checks
data quality, measures live performance from feedback (the verdicts are ``tasks.decisions``'
``decide_drift`` and ``decide_degradation``), and emits Prefect events for what it finds:
``driftloop.drift.detected``, ``driftloop.performance.degraded``, ``driftloop.performance.estimated_drop``,
``driftloop.data_quality.failed`` (findings, for people and notifications), and when any of drift,
degradation or an estimated drop calls for it, one ``driftloop.retrain.needed`` carrying every reason:
the event the retrain automation reacts to, so one finding or three start one retrain.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.schemas import MonitorParams
from flows.steps.command_line import run_from_command_line
from flows.steps.engine import EngineTaskRunner
from flows.steps.events import emit_model_event
from flows.steps.monitoring import judge_window, plan_monitoring_window, profile_log_partition
from flows.steps.runtime import FLOW_GUARDS, flow_context, model_context, publish, run_name
from tasks.core.context import RunContext
from tasks.model.evaluate import png_data_uri
from tasks.monitoring.drift import drift_png
from tasks.monitoring.history import history_page, history_png, page_key, record_window
from tasks.monitoring.status import keep_last_report, last_verdict
from tasks.monitoring.window import MonitorReport, advance_watermark
from tasks.registry.versions import Registry, registered_models
from tasks.serving.watcher import health_key


def serving_degraded(model_name: str, ctx: RunContext) -> str | None:
    """The model's service said it answers with a fallback (a champion that cannot be served): raise
    ``driftloop.serving.degraded`` every run until it says otherwise, so the notification automation
    tells a person. Returns the reason (None: serving as the registry says)."""
    health = ctx.store.read_json(health_key(model_name)) if ctx.store.exists(health_key(model_name)) else {}
    reason = (health or {}).get("degraded")
    if reason:
        emit_model_event(
            "driftloop.serving.degraded",
            model_name,
            {"reason": reason, "since": health.get("at"), "host": health.get("host")},
            target=ctx.target,
        )
    return reason


@flow(
    name="monitor",
    **FLOW_GUARDS,
    flow_run_name=run_name("monitor"),
    persist_result=True,
    task_runner=EngineTaskRunner(),
)
def monitor(params: MonitorParams = MonitorParams()) -> MonitorReport:
    """Judge the predictions logged since the last run against the champion's reference: drift, data
    quality, live performance; emit an event for each finding. Runs hourly and when asked."""
    logger = get_run_logger()
    ctx = flow_context()
    model_name = ctx.model_name(params.model_name)
    if not Registry(ctx.store, model_name).versions():  # the hourly schedule may run before training
        report = MonitorReport(
            model_name=model_name,
            champion=None,
            rows=0,
            window=None,
            note=f"{model_name!r} has no champion yet: it was never registered in {ctx.store.uri} "
            f"(registered: {registered_models(ctx.store) or 'none'}); run the training flow first",
        )
    else:
        ctx = model_context(ctx, model_name)  # the model's own config, from its registry entry
        plan = plan_monitoring_window(model_name, ctx)
        # each date partition of the log read and profiled by a mapped step (threads, or Dask workers)
        partitions = plan.window.partitions if plan.window else []
        parts = profile_log_partition.map(
            partitions, unmapped(plan), unmapped(model_name), unmapped(ctx)
        ).result()
        report = judge_window(model_name, plan, parts, ctx)
    fallback = serving_degraded(model_name, ctx)
    if fallback:
        logger.warning("the %s service is degraded: %s", model_name, fallback)
    if report.note:
        logger.info(report.note)
        publish(
            create_markdown_artifact,
            key=f"{model_name}-monitoring".replace("_", "-"),
            markdown=f"# Monitoring {model_name}\n\n{report.note}\n\n{last_verdict(ctx.store, model_name)}",
            description="monitoring summary",
        )
        return report
    payload = {"version": report.champion, "window": list(report.window or ()), "rows": report.rows}
    findings = (  # (event, whether it was found, what it carries), one event per finding
        ("driftloop.drift.detected", report.drift_detected,
         {"drifted": report.drifted, "reason": report.drift_reason}),
        ("driftloop.performance.degraded", report.degraded, {"evidence": report.degraded}),
        ("driftloop.performance.estimated_drop", report.estimated_drop, {"evidence": report.estimated_drop}),
        ("driftloop.retrain.needed", report.retrain,
         {"reasons": report.retrain, "summary": ", ".join(report.retrain), "reason": report.retrain_reason}),
        ("driftloop.data_quality.failed", report.quality_problems, {"problems": report.quality_problems}),
    )  # fmt: skip
    for event, found, carries in findings:
        if found:
            emit_model_event(event, model_name, {**payload, **carries}, target=ctx.target)
    _publish(report)
    now = datetime.now(timezone.utc)
    keep_last_report(ctx.store, report, now)  # `driftloop status` reads it
    _publish_history(report, ctx, now)
    if report.through is not None:  # last: a failed run judges its window again
        advance_watermark(ctx.store, model_name, report.through)
    logger.info(
        "monitored %d predictions of %s: drift %s (%s), quality problems %d, degraded %s",
        report.rows,
        model_name,
        report.drift_detected,
        ", ".join(report.drifted) or "none",
        len(report.quality_problems),
        report.degraded or "no",
    )
    return report


def _publish_history(report: MonitorReport, ctx: RunContext, now: datetime) -> None:
    """The window joins the model's history; the history drawn as an artifact and a page in the store."""
    champion = Registry(ctx.store, report.model_name).get(report.champion) if report.champion else None
    windows = record_window(ctx.store, report, champion.metrics.get("roc_auc") if champion else None, now)
    picture = png_data_uri(history_png(report.model_name, windows))
    page = page_key(report.model_name)
    ctx.store.write_bytes(page, history_page(report.model_name, windows, picture, now).encode())
    publish(
        create_markdown_artifact,
        key=f"{report.model_name}-monitoring-history".replace("_", "-"),
        description="monitoring over time: drift per input, live ROC-AUC with its interval, labels",
        markdown=f"# {report.model_name}: monitoring over time\n\n"
        f"{len(windows)} judged windows; the page with every window's figures: `{ctx.store.uri}/{page}`\n\n"
        f"![drift per input over time, live ROC-AUC with its interval, label coverage]({picture})\n",
    )


def _publish(report: MonitorReport) -> None:
    key = report.model_name.replace("_", "-")
    publish(
        create_table_artifact,
        key=f"{key}-drift",
        description="drift per column vs the champion's reference",
        table=[d.model_dump() for d in report.drift],
    )

    def estimated(p) -> str:  # noqa: ANN001
        e = p.estimated
        return "n/a" if e is None else f"{e.roc_auc:.3f} ({e.low:.3f} .. {e.high:.3f})"

    perf = "\n".join(
        f"| v{p.model_version} | {p.predictions} | {p.labels} | {estimated(p)} | "
        f"{'n/a' if p.roc_auc is None else f'{p.roc_auc:.3f} ± {1.96 * (p.roc_auc_se or 0):.3f}'} | "
        f"{p.mean_prediction:.3f} |"
        for p in report.performance
    )
    md = (
        f"# Monitoring {report.model_name} (champion v{report.champion})\n\n"
        f"- window: {report.window[0]} .. {report.window[1]}, {report.rows} predictions\n"
        f"- drift that needs action: **{'DETECTED' if report.drift_detected else 'none'}** "
        f"({report.drift_reason})\n"
        f"- inputs that moved: {', '.join(report.drifted) or 'none'}\n"
        f"- data quality: {'; '.join(report.quality_problems) or 'ok'}\n"
        f"- performance: {'; '.join(report.degraded) or 'no degradation found'}\n"
        f"- estimated before labels: {'; '.join(report.estimated_drop) or 'no estimated drop'}\n"
        f"- retrain: **{', '.join(report.retrain) or 'not needed'}**\n\n"
        "| version | predictions | labels | estimated ROC-AUC before labels (95% band) | live ROC-AUC "
        "(95%) | mean prediction |\n|---|---|---|---|---|---|\n"
        f"{perf}\n\n"
        f"![drift]({png_data_uri(drift_png(report.model_name, report.drift))})\n"
    )
    publish(create_markdown_artifact, key=f"{key}-monitoring", markdown=md, description="monitoring summary")


if __name__ == "__main__":
    run_from_command_line(
        monitor,
        MonitorParams,
        show=lambda report: print(report.model_dump_json(indent=2, exclude={"files", "drift"})),
    )
