"""A person's approval before an automatic decision takes effect, asked in the Prefect UI.

Where a model's config asks for it (``approval`` in the dataset config, read from the registry like
every setting that acts on the model), the flow pauses with a form: approve or reject, a reason, a
name. The answer comes back through the Prefect API (the UI's "Resume" button, or
``prefect.flow_runs.resume_flow_run(id, run_input={...})``). No answer within the config's
``timeout_minutes`` keeps the champion: Prefect then ends the paused run as Failed ("paused and
never resumed"), after this step has recorded the timeout. Every question and answer goes to the
model's decision log (``driftloop history MODEL``).
"""

from __future__ import annotations

from typing import Literal

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from tasks.core.context import RunContext
from tasks.core.errors import BadInput
from tasks.registry.decision_log import DecisionRecord, now_iso, record_decision


class ApprovalTimedOut(BadInput):
    """Nobody answered the approval form in time: nothing moved."""


class Approval(RunInput):
    """The form a person fills in."""

    approve: bool = Field(False, description="approve (checked) or reject (unchecked)")
    reason: str = Field(..., min_length=3, max_length=500, description="why: kept in the model's history")
    approver: str = Field(..., min_length=1, max_length=100, description="who decides")


class ApprovalAnswer(BaseModel):
    outcome: Literal["approved", "rejected", "timed-out"]
    reason: str
    by: str


def ask_for_approval(
    ctx: RunContext, model_name: str, version: int, question: str, evidence: dict
) -> ApprovalAnswer:
    """Pause this flow run until a person answers ``question`` about ``version`` (or the config's
    timeout passes); record the question and the answer; return the answer."""
    timeout = ctx.config.approval.timeout_minutes * 60
    store, log = ctx.store, get_run_logger()

    def record(outcome: str, reason: str, by: str) -> None:
        rec = DecisionRecord(
            at=now_iso(),
            kind="approval",
            version=version,
            outcome=outcome,
            reason=reason,
            decided_by=by,
            evidence=evidence,
        )
        record_decision(store, model_name, rec)

    record("asked", question, "driftloop")
    log.info(
        "waiting up to %d min for a person to approve %s v%d: %s",
        timeout // 60,
        model_name,
        version,
        question,
    )
    form = Approval.with_initial_data(description=f"**{model_name} v{version}**: {question}")
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout, key=f"approve-{model_name}-v{version}")
    except FlowPauseTimeout:
        why = f"no answer within {timeout // 60} min: the champion is kept"
        record("timed-out", why, "timeout")
        log.warning("%s v%d: %s", model_name, version, why)
        return ApprovalAnswer(outcome="timed-out", reason=why, by="timeout")
    outcome = "approved" if answer.approve else "rejected"
    record(outcome, answer.reason, answer.approver)
    log.info("%s v%d %s by %s: %s", model_name, version, outcome, answer.approver, answer.reason)
    return ApprovalAnswer(outcome=outcome, reason=answer.reason, by=answer.approver)
