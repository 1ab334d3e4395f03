"""The retrain flow: fresh data in, a challenger out, and only if it is at least as good.

Started by a Prefect automation when monitoring emits ``driftloop.retrain.needed`` (drift, degradation
or an estimated drop, every reason in one event; see prefect.yaml), or by hand:

    python flows/retrain.py --reason "new data"
    prefect deployment run 'retrain/local'

1. wait while a canary runs (it is decided first), then claim the model's retrain slot: at most one
   retrain per cooldown period, however many events arrive (a Prefect concurrency limit per model, so
   two triggers at once start one);
2. train through the spine on the raw zone plus the service's predictions that have feedback; the
   training run's own promotion gate compares it with the champion on the same recent test rows
   (``tasks.decisions.compare_on_holdout``: DeLong's paired interval on the ROC-AUC gain against a
   non-inferiority margin, no slice clearly worse);
3. pass: it becomes the challenger and a canary starts (``driftloop.model.canary.started``), which
   decides on live traffic; fail: the reason is recorded as an artifact and a
   ``driftloop.retrain.rejected`` event.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.schemas import RetrainParams, RetrainResult, TrainingParams
from flows.steps.command_line import run_from_command_line
from flows.steps.events import emit_model_event
from flows.steps.registry import claim_retrain
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name
from flows.training import training
from tasks.core.errors import BadInput
from tasks.decisions import decide_retrain_during_canary
from tasks.registry.versions import Registry


@flow(name="retrain", **FLOW_GUARDS, flow_run_name=run_name("retrain"), persist_result=True)
def retrain(params: RetrainParams = RetrainParams()) -> RetrainResult:
    """Train a challenger on fresh data plus labelled predictions and start a canary if it passes the
    holdout gate. Runs on a drift or degradation event (automation), at most once per cooldown."""
    logger = get_run_logger()
    if params.model_name is not None and not params.model_name.strip():
        raise BadInput(
            "the triggering event carried no model_name in its payload (the automation passes "
            "event.payload.model_name); emit events with flows.steps.events.emit_model_event, or pass "
            "model_name"
        )
    ctx = flow_context(params.model_name, needs="config")  # the model's own config, from the registry
    model_name = ctx.config.model_name
    registry = Registry(ctx.store, model_name)
    if "champion" not in registry.alias_doc().aliases:
        raise BadInput(
            f"model {model_name!r} has no champion to retrain against; run the training flow first"
        )
    canary = decide_retrain_during_canary(model_name, registry.alias_doc().aliases.get("challenger"))
    refused = canary.reason if canary.outcome == "wait" else None
    refused = refused or claim_retrain(model_name, params.reason, params.ignore_cooldown, ctx)
    if refused:
        logger.info("not retraining: %s", refused)
        publish(
            create_markdown_artifact,
            key=f"{model_name}-retrain".replace("_", "-"),
            markdown=f"# Retrain of {model_name} skipped\n\n{refused}",
            description="retrain outcome",
        )
        return RetrainResult(model_name=model_name, status="skipped", reason=refused)

    summary = training(
        TrainingParams(
            model_name=model_name,
            config_from_registry=True,
            include_feedback=True,
            reason=f"retrain ({params.reason})",
            # all data there is
            window_end=datetime.max.replace(tzinfo=timezone.utc) if ctx.config.time_column else None,
        )
    )
    if summary.decision == "reproduced":  # the training run's own check (tasks.decisions.decide_reproduced)
        reason = (
            f"training reproduced v{summary.version} ({summary.reason}): nothing new to put out as a canary"
        )
        logger.info("retrain of %s: %s", model_name, reason)
        return RetrainResult(model_name=model_name, status="skipped", reason=reason, version=summary.version)
    comparison = summary.comparison
    status = "canary" if summary.decision == "challenger" else "rejected"
    if status == "rejected":
        emit_model_event(
            "driftloop.retrain.rejected",
            model_name,
            {"version": summary.version, "reason": summary.reason, "trigger": params.reason},
            target=ctx.target,
        )
    holdout = (
        f"- holdout: {comparison.rows} most recent rows ({comparison.positives} positives); champion "
        f"v{comparison.champion_version} ROC-AUC {comparison.champion_auc:.4f}, new "
        f"{comparison.candidate_auc:.4f}\n"
        if comparison
        else ""
    )
    publish(
        create_markdown_artifact,
        key=f"{model_name}-retrain".replace("_", "-"),
        description="retrain outcome",
        markdown=(
            f"# Retrain of {model_name}: {status}\n\n- trigger: {params.reason}\n- new version: "
            f"v{summary.version} (snapshot `{summary.snapshot_id}`, {summary.snapshot_rows} rows)\n"
            f"{holdout}- gate: {summary.reason}\n"
        ),
    )
    logger.info("retrain of %s: v%d %s (%s)", model_name, summary.version, status, summary.reason)
    return RetrainResult(
        model_name=model_name,
        status=status,
        reason=summary.reason,
        version=summary.version,
        comparison=comparison,
    )


if __name__ == "__main__":
    run_from_command_line(retrain, RetrainParams)
