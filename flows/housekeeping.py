"""Housekeeping: close the task runs a crashed flow run left behind.

    python flows/housekeeping.py                    # sweep the last day
    python flows/housekeeping.py --flow-run-id ID   # one ended flow run
    prefect deployment run 'close-crashed-runs/local'

When a flow run's process dies at once (``kill -9``, the OOM killer, an ECS task stopped), the worker
marks the flow run Crashed, but the task runs that were running in it had nobody left to finish them:
they stay Running forever, in the UI and for anything counting running work. This flow sets each
task run still pending or running inside a flow run that has ended to Crashed, with a message naming
that flow run. An automation starts it on every ``prefect.flow-run.Crashed`` event (prefect.yaml), and
an hourly schedule sweeps up anything an event missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

from flows.schemas import HousekeepingParams
from flows.steps.command_line import run_from_command_line
from flows.steps.runtime import FLOW_GUARDS

ENDED = [StateType.CRASHED, StateType.FAILED, StateType.CANCELLED, StateType.COMPLETED]
UNFINISHED = [StateType.RUNNING, StateType.PENDING]


def close_orphaned_task_runs(flow_run_id: UUID | None, since: datetime) -> list[str]:
    """Crash the unfinished task runs of ended flow runs (one flow run, or every one started since
    ``since``); returns the task run names closed."""
    closed: list[str] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run_id]) if flow_run_id else None,
                start_time=None if flow_run_id else FlowRunFilterStartTime(after_=since),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ENDED)),
            ),
            limit=200,  # the API's most per page; a sweep runs hourly, so a page is plenty
        )
        for run in runs:
            orphans = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))
                ),
            )
            for task_run in orphans:
                state = run.state.name if run.state else "ended"
                client.set_task_run_state(
                    task_run.id,
                    Crashed(
                        message=f"its flow run {run.name!r} ended {state} while this task was "
                        f"{task_run.state.name if task_run.state else 'running'} (its process died); "
                        "closed by close-crashed-runs"
                    ),
                    force=True,
                )
                closed.append(f"{run.name}/{task_run.name}")
    return closed


def _run_name() -> str:
    return f"close-crashed-runs-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


@flow(name="close-crashed-runs", **FLOW_GUARDS, flow_run_name=_run_name)
def close_crashed_runs(params: HousekeepingParams = HousekeepingParams()) -> list[str]:
    """End the task runs a crashed flow run left Running. Runs on every ``prefect.flow-run.Crashed``
    event and hourly as a sweep."""
    flow_run_id = UUID(params.flow_run_id.removeprefix("prefect.flow-run.")) if params.flow_run_id else None
    since = datetime.now(timezone.utc) - timedelta(hours=params.lookback_hours)
    closed = close_orphaned_task_runs(flow_run_id, since)
    get_run_logger().info(
        "closed %d task runs of ended flow runs%s", len(closed), f": {', '.join(closed)}" if closed else ""
    )
    return closed


if __name__ == "__main__":
    run_from_command_line(close_crashed_runs, HousekeepingParams)
