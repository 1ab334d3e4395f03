"""The canary decision: promote the challenger or drop it, on live labelled evidence.

    python flows/canary.py
    prefect deployment run 'canary-decision/local'

Compares live ROC-AUC of the challenger and the champion over the predictions each arm answered
since the canary started that have feedback. With enough labels on both arms: promote if the
challenger is at least ``canary_margin`` better, else drop it. Before that: stop the canary at once
if the challenger is already clearly worse (by ``canary_stop_margin``), otherwise wait. The rule is
``tasks.decisions.decide_canary``.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.schemas import CanaryDecision, CanaryParams
from tasks.core.errors import BadInput
from tasks.decisions import EARLY_LABELS, decide_canary
from tasks.monitoring.performance import live_performance
from tasks.orchestration import publish, run_context
from tasks.registry.steps import apply_canary_decision
from tasks.registry.versions import Registry
from tasks.serving.logs import FEEDBACK_COLUMNS, PREDICTION_COLUMNS, read_log


@flow(name="canary-decision", persist_result=True)
def canary_decision(params: CanaryParams = CanaryParams()) -> CanaryDecision:
    ctx = run_context()
    model_name = ctx.model_name(params.model_name)
    store = ctx.store
    doc = Registry(store, model_name).alias_doc()
    aliases = doc.aliases
    if "challenger" not in aliases or "champion" not in aliases:
        raise BadInput(
            f"model {model_name!r} has no canary running (aliases: {aliases or 'none'}); "
            "a retrain that passes its gate starts one"
        )
    # both arms judged on the same period: traffic since this canary started
    started = doc.alias_set_at("challenger")
    predictions = read_log(store, "predictions", PREDICTION_COLUMNS)
    if started and predictions.height:
        predictions = predictions.filter(pl.col("ts") >= datetime.fromisoformat(started))
    feedback = read_log(store, "feedback", FEEDBACK_COLUMNS)
    perf = {p.model_version: p for p in live_performance(predictions, feedback, EARLY_LABELS)}
    champion, challenger = perf.get(aliases["champion"]), perf.get(aliases["challenger"])
    r = ctx.settings.retrain
    verdict = decide_canary(champion, challenger, r.canary_min_labels, r.canary_margin, r.canary_stop_margin)
    apply_canary_decision(model_name, verdict.outcome, aliases["challenger"], verdict.reason, ctx)
    get_run_logger().info(
        "canary of %s v%d: %s (%s)", model_name, aliases["challenger"], verdict.outcome, verdict.reason
    )
    publish(
        create_markdown_artifact,
        key=f"{model_name}-canary".replace("_", "-"),
        description="canary decision",
        markdown=f"# Canary of {model_name} v{aliases['challenger']}: {verdict.outcome}\n\n"
        f"{verdict.reason}\n",
    )
    return CanaryDecision(
        model_name=model_name,
        outcome=verdict.outcome,
        reason=verdict.reason,
        champion=champion,
        challenger=challenger,
    )


if __name__ == "__main__":
    from pydantic_settings import CliApp

    print(canary_decision(CliApp.run(CanaryParams)).model_dump_json(indent=2))
