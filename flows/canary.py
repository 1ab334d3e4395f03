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
both. The rule is ``tasks.decisions.decide_canary``. Each verdict goes to the model's decision log;
where the model's config asks (``approval.canary_promotion``), a promotion waits for a person's answer
in the Prefect UI (``flows.steps.approval``).
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.schemas import CanaryDecision, CanaryParams
from flows.steps.approval import ApprovalTimedOut, ask_for_approval
from flows.steps.command_line import run_from_command_line
from flows.steps.registry import apply_canary_decision
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name
from tasks.core.logs import CANARY_COLUMNS, FEEDBACK, FEEDBACK_COLUMNS, PREDICTIONS, read_log
from tasks.decisions import CanaryVerdict, decide_canary
from tasks.monitoring.loss_performance import canary_loss_evidence, live_loss_performance
from tasks.monitoring.performance import CanaryEvidence, canary_evidence, live_performance
from tasks.registry.decision_log import DecisionRecord, now_iso, record_decision
from tasks.registry.versions import Registry


def evidence_summary(evidence: CanaryEvidence) -> dict:
    """What a canary verdict rested on, small enough for the decision log and the approval form."""
    paired = evidence.paired
    return {
        "hours": round(evidence.hours, 2),
        "champion_labels": evidence.champion_labels,
        "challenger_labels": evidence.challenger_labels,
        **(
            {"paired_rows": paired.rows, "champion_auc": paired.auc_a, "challenger_auc": paired.auc_b}
            | {"gain": paired.gain, "gain_se": paired.se, "metric": paired.metric}
            if paired
            else {}
        ),
    }


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
    registry = Registry(store, model_name)
    tasks = {v: registry.load_transform(registry.get(v)).task for v in (champion_v, challenger_v)}
    task = tasks[champion_v]  # a model name has one target: both arms answer the same kind
    outputs = ["output", "paired_output", "shadow_output"] if task.kind != "binary" else []
    columns = [*CANARY_COLUMNS, *outputs]
    predictions = read_log(store, PREDICTIONS, model_name, columns, since=started.date())
    if predictions.height:
        predictions = predictions.filter(pl.col("ts") >= started)
    feedback = read_log(store, FEEDBACK, model_name, FEEDBACK_COLUMNS, since=started.date())
    hours = (datetime.now(timezone.utc) - started).total_seconds() / 3600
    if task.kind == "binary":
        evidence = canary_evidence(predictions, feedback, champion_v, challenger_v, hours)
        live = live_performance(predictions, feedback, min_labels=50)
    else:  # classes and numbers: the paired comparison of the models' losses on the same rows
        evidence = canary_loss_evidence(predictions, feedback, champion_v, challenger_v, hours, task)
        live = live_loss_performance(predictions, feedback, tasks, min_labels=50)
    verdict = decide_canary(evidence, ctx.settings.retrain)
    perf = {p.model_version: p for p in live}
    summary = evidence_summary(evidence)
    record_decision(
        store,
        model_name,
        DecisionRecord(
            at=now_iso(),
            kind="canary",
            version=challenger_v,
            outcome=verdict.outcome,
            reason=verdict.reason,
            decided_by="canary-flow",
            evidence=summary,
        ),
    )
    actor = "canary-flow"
    if verdict.outcome == "promote" and ctx.config.approval.canary_promotion:
        question = f"promote the challenger over champion v{champion_v}? The canary says: {verdict.reason}"
        answer = ask_for_approval(ctx, model_name, challenger_v, question, summary)
        if answer.outcome == "timed-out":
            raise ApprovalTimedOut(
                f"{model_name} v{challenger_v}: {answer.reason}; the canary goes on and the next decision "
                "asks again"
            )
        if answer.outcome == "rejected":
            verdict = CanaryVerdict(outcome="drop", reason=f"rejected by {answer.by}: {answer.reason}")
        else:
            verdict = CanaryVerdict(
                outcome="promote", reason=f"{verdict.reason}; approved by {answer.by}: {answer.reason}"
            )
        actor = answer.by
    apply_canary_decision(model_name, verdict.outcome, challenger_v, verdict.reason, ctx, actor)
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
