"""Every registered model on schedule: monitoring and canary decisions fanned out over the registry.

    python flows/fleet.py monitor          # the monitor flow once per registered model
    python flows/fleet.py canary-decision --models '["caravan-purchase"]'  # or those named
    prefect deployment run 'monitor-every-model/local'

The hourly schedules in ``prefect.yaml`` start these flows, not ``monitor`` and ``canary-decision``
themselves: a schedule's parameters are fixed when it is written, so a scheduled ``monitor`` would judge
one model forever. These read the registry when they run and call the per-model flow once for each
model there, as a subflow run named for the model (``monitor-<model>-<time>``), so a model registered
later is covered from its first hour on, without editing ``prefect.yaml``.

Why subflows and not one deployment per model: the registry is the one truth of which models exist;
deployments made from it would be a second list to keep in step (created on registration, deleted
on retirement), and a model registered while that sync is down would go unwatched. One model's
failure does not stop the others: each runs to its end, and the fleet run fails afterwards, naming the
models that failed. Compaction already covers every model in one run (``flows/compaction.py``).
"""

from __future__ import annotations

from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from flows.canary import canary_decision
from flows.monitoring import monitor
from flows.schemas import CanaryParams, FleetParams, MonitorParams
from flows.steps.command_line import run_subcommand_from_command_line
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish
from tasks.core.errors import BadInput
from tasks.registry.versions import registered_models


class ModelRun(BaseModel):
    """One model's run inside a fleet run."""

    model_name: str
    flow_run: str | None
    state: str
    summary: str


class FleetFailed(RuntimeError):
    """Some models' runs failed (the others ran to their end)."""


def _fleet_name(operation: str) -> Callable[[], str]:
    def name() -> str:
        from datetime import datetime, timezone

        return f"{operation}-every-model-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"

    return name


def _each_model(
    operation: str, params: FleetParams, run_one: Callable[[str], Any], summarise: Callable[[Any], str]
) -> list[ModelRun]:
    """``run_one(model)`` for every registered model (or those ``params`` names; a subflow returning
    its state), one after the other; a table artifact of what each did; fails at the end if any failed."""
    logger = get_run_logger()
    ctx = flow_context(None, needs="nothing")
    registered = registered_models(ctx.store)
    unknown = sorted(set(params.models or []) - set(registered))
    if unknown:
        raise BadInput(f"not registered in {ctx.store.uri}: {unknown} (registered: {registered or 'none'})")
    models = params.models or registered
    if not models:
        logger.info("no model is registered in %s yet: nothing to %s", ctx.store.uri, operation)
    runs = []
    for model_name in models:
        state = run_one(model_name)
        flow_run = getattr(state.state_details, "flow_run_id", None)
        if state.is_completed():
            summary = summarise(state.result())
        else:
            summary = state.message or state.name
        runs.append(
            ModelRun(
                model_name=model_name, flow_run=flow_run and str(flow_run), state=state.name, summary=summary
            )
        )
        logger.info("%s %s: %s (%s)", operation, model_name, state.name, summary)
    publish(
        create_table_artifact,
        key=f"{operation}-every-model",
        table=[r.model_dump() for r in runs],
        description=f"{operation} of every registered model",
    )
    failed = [r for r in runs if r.state != "Completed"]
    if failed:
        raise FleetFailed(
            f"{operation} failed for {len(failed)} of {len(runs)} model(s): "
            + "; ".join(f"{r.model_name}: {r.summary}" for r in failed)
            + " (the others ran; see each model's flow run)"
        )
    return runs


@flow(name="monitor-every-model", **FLOW_GUARDS, flow_run_name=_fleet_name("monitor"))
def monitor_every_model(params: FleetParams = FleetParams()) -> list[ModelRun]:
    """The monitor flow once for each registered model (the hourly schedule)."""
    return _each_model(
        "monitor",
        params,
        lambda m: monitor(MonitorParams(model_name=m), return_state=True),
        lambda report: (
            report.note
            or f"{report.rows} predictions; drift: {'yes' if report.drift_detected else 'no'}; "
            f"retrain: {', '.join(report.retrain) or 'no'}"
        ),
    )


@flow(name="canary-decision-every-model", **FLOW_GUARDS, flow_run_name=_fleet_name("canary-decision"))
def canary_decision_every_model(params: FleetParams = FleetParams()) -> list[ModelRun]:
    """The canary decision once for each registered model (the hourly schedule): a canary of any model
    is judged, and times out, on schedule."""
    return _each_model(
        "canary-decision",
        params,
        lambda m: canary_decision(CanaryParams(model_name=m), return_state=True),
        lambda decision: f"{decision.outcome}: {decision.reason}",
    )


if __name__ == "__main__":
    run_subcommand_from_command_line(
        {
            "monitor": (monitor_every_model, FleetParams),
            "canary-decision": (canary_decision_every_model, FleetParams),
        }
    )
