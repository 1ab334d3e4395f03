"""The canary decision: promote the challenger or drop it, on live labelled evidence.

    python flows/canary.py
    prefect deployment run 'canary-decision/local'

Compares live ROC-AUC of the challenger and the champion over the predictions each arm answered
that have feedback. With enough labels on both arms: promote if the challenger is at least
``canary_margin`` better, else drop it. Before that: stop the canary at once if the challenger is
already clearly worse (by ``canary_stop_margin``), otherwise wait.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.lifecycle import move_champion
from flows.schemas import CanaryDecision
from tasks.core.errors import BadInput
from tasks.events import emit_model_event
from tasks.monitoring.window import LivePerformance, live_performance
from tasks.orchestration import io_task, publish
from tasks.registry.versions import Registry
from tasks.serving.watcher import FEEDBACK_COLUMNS, PREDICTION_COLUMNS, read_log
from tasks.core.settings import Settings
from tasks.core.store import open_store

EARLY_LABELS = 50


class CanaryParams(BaseModel):
    model_name: str | None = Field(None, description="registry name (default: the dataset config's)")


def decide_canary(champion: LivePerformance | None, challenger: LivePerformance | None, min_labels: int,
                  margin: float, stop_margin: float) -> tuple[str, str]:
    if challenger is None or champion is None:
        return "wait", "no labelled live traffic on both arms yet"
    have = f"{challenger.labels} challenger / {champion.labels} champion labels"
    if challenger.roc_auc is None or champion.roc_auc is None:
        return "wait", f"{have}; fewer than {EARLY_LABELS} on an arm"
    gain = challenger.roc_auc - champion.roc_auc
    verdict = (f"live ROC-AUC challenger v{challenger.model_version} {challenger.roc_auc:.4f} vs champion "
               f"v{champion.model_version} {champion.roc_auc:.4f} (gain {gain:+.4f}; {have})")
    if gain < -stop_margin:
        return "drop", f"clearly worse, stopped early: {verdict}"
    if min(challenger.labels, champion.labels) < min_labels:
        return "wait", f"not enough evidence yet (need {min_labels} labels per arm): {verdict}"
    if gain >= margin:
        return "promote", f"better by at least {margin:+.4f}: {verdict}"
    return "drop", f"not better by {margin:+.4f}: {verdict}"


@io_task(name="apply-canary-decision")
def apply_canary_decision(model_name: str, outcome: str, version: int, reason: str, settings: Settings) -> None:
    registry = Registry(open_store(settings), model_name)
    if outcome == "promote":
        move_champion.fn(model_name, version, f"canary: {reason}", "canary-flow", "driftloop.model.promoted")
    elif outcome == "drop":
        registry.set_alias("challenger", None, reason=f"canary stopped: {reason}", actor="canary-flow")
        emit_model_event("driftloop.model.canary.stopped", model_name, {"version": version, "reason": reason},
                         target=settings.target)


@flow(name="canary-decision", persist_result=True)
def canary_decision(params: CanaryParams = CanaryParams()) -> CanaryDecision:
    settings = Settings()
    model_name = settings.model_name(params.model_name)
    store = open_store(settings)
    registry = Registry(store, model_name)
    aliases = registry.alias_doc().aliases
    if "challenger" not in aliases or "champion" not in aliases:
        raise BadInput(f"model {model_name!r} has no canary running (aliases: {aliases or 'none'}); "
                       "a retrain that passes its gate starts one")
    # both arms judged on the same period: traffic since this canary started
    started = max((h.at for h in registry.alias_doc().history
                   if h.alias == "challenger" and h.version == aliases["challenger"]), default=None)
    predictions = read_log(store, "predictions", PREDICTION_COLUMNS)
    if started and predictions.height:
        predictions = predictions.filter(pl.col("ts") >= datetime.fromisoformat(started))
    perf = {p.model_version: p for p in live_performance(predictions, read_log(store, "feedback", FEEDBACK_COLUMNS), EARLY_LABELS)}
    champion, challenger = perf.get(aliases["champion"]), perf.get(aliases["challenger"])
    r = settings.retrain
    outcome, reason = decide_canary(champion, challenger, r.canary_min_labels, r.canary_margin, r.canary_stop_margin)
    apply_canary_decision(model_name, outcome, aliases["challenger"], reason, settings)
    get_run_logger().info("canary of %s v%d: %s (%s)", model_name, aliases["challenger"], outcome, reason)
    publish(create_markdown_artifact, key=f"{model_name}-canary".replace("_", "-"), description="canary decision",
            markdown=f"# Canary of {model_name} v{aliases['challenger']}: {outcome}\n\n{reason}\n")
    return CanaryDecision(model_name=model_name, outcome=outcome, reason=reason, champion=champion, challenger=challenger)


if __name__ == "__main__":
    from pydantic_settings import CliApp

    print(canary_decision(CliApp.run(CanaryParams)).model_dump_json(indent=2))
