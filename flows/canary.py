"""The canary decision: promote the challenger or drop it, on live labelled evidence.

    python flows/canary.py
    prefect deployment run 'canary-decision/local'

During a canary the service scores every request with both models (one answers, the other's score is
logged), so this compares the challenger and the champion on the same labelled rows since the canary
started: DeLong's paired test of the ROC-AUC gain. It stops early when the challenger is
significantly worse; promotes, from ``canary_min_hours`` on, when its gain over days (random effects)
is significantly above ``canary_margin``; waits otherwise, and after ``canary_max_hours`` keeps the
champion. The false-promotion rate is ``canary_alpha`` however often it
runs (a time-uniform confidence sequence, ``tasks.decisions.canary_radius``): hourly, on demand, or
both. The rule is ``tasks.decisions.decide_canary``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.schemas import CanaryDecision, CanaryParams
from flows.steps.command_line import run_from_command_line
from flows.steps.registry import apply_canary_decision
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name
from tasks.core.logs import CANARY_COLUMNS, FEEDBACK, FEEDBACK_COLUMNS, PREDICTIONS, read_log
from tasks.decisions import decide_canary
from tasks.monitoring.performance import canary_evidence, live_performance
from tasks.registry.versions import Registry


@flow(name="canary-decision", **FLOW_GUARDS, flow_run_name=run_name("canary-decision"), persist_result=True)
def canary_decision(params: CanaryParams = CanaryParams()) -> CanaryDecision:
    """Promote, drop or keep waiting on the model's canary, from the labelled traffic since it started.
    Runs hourly (a quiet ``no-canary`` when none is on) and when asked."""
    ctx = flow_context(params.model_name, needs="config")  # the model's own config, from the registry
    model_name = ctx.config.model_name
    store = ctx.store
    doc = Registry(store, model_name).alias_doc()
    aliases = doc.aliases
    if "challenger" not in aliases or "champion" not in aliases:
        # the hourly schedule runs whether or not a canary is on: nothing to decide is not a failure
        reason = (
            f"model {model_name!r} has no canary running (aliases: {aliases or 'none'}); "
            "a retrain that passes its gate starts one"
        )
        get_run_logger().info(reason)
        return CanaryDecision(
            model_name=model_name, outcome="no-canary", reason=reason, champion=None, challenger=None
        )
    champion_v, challenger_v = aliases["champion"], aliases["challenger"]
    # both arms judged on the same period: traffic since this canary started
    started = datetime.fromisoformat(doc.alias_set_at("challenger") or datetime.now(timezone.utc).isoformat())
    predictions = read_log(store, PREDICTIONS, model_name, CANARY_COLUMNS, since=started.date())
    if predictions.height:
        predictions = predictions.filter(pl.col("ts") >= started)
    feedback = read_log(store, FEEDBACK, model_name, FEEDBACK_COLUMNS, since=started.date())
    hours = (datetime.now(timezone.utc) - started).total_seconds() / 3600
    evidence = canary_evidence(predictions, feedback, champion_v, challenger_v, hours)
    verdict = decide_canary(evidence, ctx.settings.retrain)
    perf = {p.model_version: p for p in live_performance(predictions, feedback, min_labels=50)}
    apply_canary_decision(model_name, verdict.outcome, challenger_v, verdict.reason, ctx)
    get_run_logger().info(
        "canary of %s v%d: %s (%s)", model_name, challenger_v, verdict.outcome, verdict.reason
    )
    publish(
        create_markdown_artifact,
        key=f"{model_name}-canary".replace("_", "-"),
        description="canary decision",
        markdown=f"# Canary of {model_name} v{challenger_v}: {verdict.outcome}\n\n{verdict.reason}\n",
    )
    return CanaryDecision(
        model_name=model_name,
        outcome=verdict.outcome,
        reason=verdict.reason,
        champion=perf.get(champion_v),
        challenger=perf.get(challenger_v),
        evidence=evidence,
    )


if __name__ == "__main__":
    run_from_command_line(canary_decision, CanaryParams)
