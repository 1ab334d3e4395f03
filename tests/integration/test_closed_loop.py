"""The closed loop on a real Prefect server and worker with the deployments and triggers from
prefect.yaml: monitoring sees drift -> event -> automation -> retrain run -> challenger (canary)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import SMALL
from tests.integration.test_monitoring import _log_window

pytestmark = pytest.mark.integration


def _retrain_runs(since: float, model_name: str = "flights-loop") -> list:
    import asyncio
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["local"])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(
                        after_=dt.datetime.fromtimestamp(since - 5, dt.timezone.utc)
                    )
                ),
            )

    runs = asyncio.run(read())
    return [r for r in runs if r.name and r.parameters.get("params", {}).get("model_name") == model_name]


def test_drift_starts_a_retrain_that_produces_a_challenger(prefect_worker, landed):
    from flows.monitoring import MonitorParams, monitor
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.registry.versions import Registry

    training(TrainingParams(**SMALL, model_name="flights-loop"))
    config = landed.load_dataset().model_copy(update={"model_name": "flights-loop"})
    _log_window(landed, config, "2013-07-01T00:00:00+00:00", "2013-08-01T00:00:00+00:00", unseen_share=0.0)

    emitted = time.time()
    report = monitor(MonitorParams(model_name="flights-loop"))
    assert report.drift_detected

    runs, started = [], None
    deadline = time.time() + 420
    while time.time() < deadline:
        runs = _retrain_runs(emitted)
        if runs and started is None and runs[0].start_time:
            started = runs[0].start_time.timestamp() - emitted
        if runs and all(r.state and r.state.is_final() for r in runs):
            break
        time.sleep(1)
    assert runs, "the automation did not start a retrain run"
    # summer flights against a model of January-February: outside what it learned (weather); its
    # ranking of these few days' flights is within what their days' spread allows: drift alone
    assert report.retrain == ["drift"], report.retrain_reason
    assert [r.parameters["params"]["reason"] for r in runs] == ["driftloop.retrain.needed: drift"]
    assert all(r.state.is_completed() for r in runs), [r.state.message for r in runs]
    print(f"drift event -> retrain run started in {started:.1f}s")
    assert started is not None and started < 30

    registry = Registry(open_store(landed), "flights-loop")
    doc = registry.alias_doc()
    results = [r.state.result(raise_on_failure=False) for r in runs]
    assert registry.versions() == [1, 2], results
    assert doc.aliases["champion"] == 1
    assert doc.aliases.get("challenger") == 2, doc.history[
        -1
    ]  # the retrained model passed its gate: a canary
    assert doc.history[-1].reason.startswith("retrain (driftloop.retrain.needed: drift): holdout gate passes")
    assert len(_retrain_runs(emitted)) == 1


def test_a_significant_performance_drop_starts_a_retrain_with_that_reason(prefect_worker, landed):
    """Outcomes that contradict the model on data it was trained on: no drift to act on, but live
    performance far below its held-out ROC-AUC -> performance.degraded -> the automation retrains."""
    from flows.monitoring import MonitorParams, monitor
    from flows.schemas import TrainingParams
    from flows.training import training

    training(TrainingParams(**SMALL, model_name="flights-decay"))
    config = landed.load_dataset().model_copy(update={"model_name": "flights-decay"})
    _log_window(
        landed, config, "2013-02-01T00:00:00+00:00", "2013-03-01T00:00:00+00:00", 0.0, invert_outcomes=True
    )
    emitted = time.time()
    report = monitor(MonitorParams(model_name="flights-decay"))
    assert not report.drift_detected and report.degraded, (report.drift_reason, report.degraded)
    runs, deadline = [], time.time() + 420
    while time.time() < deadline:
        runs = _retrain_runs(emitted, "flights-decay")
        if runs and all(r.state and r.state.is_final() for r in runs):
            break
        time.sleep(1)
    assert report.retrain == ["degradation"], report.retrain_reason
    assert [r.parameters["params"]["reason"] for r in runs] == ["driftloop.retrain.needed: degradation"]
    assert runs[0].state.is_completed(), runs[0].state.message


def test_the_deployments_on_the_server_carry_their_guard_rails(prefect_worker):
    """What `prefect deploy` registered from prefect.yaml: concurrency limits that queue, schedules."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read(name: str):
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    for name in ("retrain/local", "training/local", "monitor/local", "canary-decision/local"):
        deployment = asyncio.run(read(name))
        assert deployment.global_concurrency_limit and deployment.global_concurrency_limit.limit >= 1, name
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE", name
    # `prefect deploy` registered every */local deployment prefect.yaml declares (counted)
    from deployments import prefect_file

    async def local_deployments() -> set[str]:
        async with get_client() as client:
            found = await client.read_deployments()
            flows = {f.id: f.name for f in await client.read_flows()}
            return {f"{flows[d.flow_id]}/{d.name}" for d in found if d.name == "local"}

    declared = {f"{prefect_file.flow_name(d)}/local" for d in prefect_file.deployments("local")}
    assert len(declared) >= 12 and asyncio.run(local_deployments()) == declared
    canary = asyncio.run(read("canary-decision-every-model/local"))
    assert [s.schedule.cron for s in canary.schedules] == ["30 * * * *"]
    assert not asyncio.run(read("canary-decision/local")).schedules  # per model: started by the fleet run


def test_a_killed_flow_run_leaves_no_task_run_running(prefect_worker, landed):
    """kill -9 of a flow run's process mid-task: the worker marks the run Crashed, and the automation
    on prefect.flow-run.Crashed runs close-crashed-runs, which ends its orphaned task runs."""
    import psutil
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    def task_runs(client, run):
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))

    def process_of_run(run):
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("PREFECT__FLOW_RUN_ID") == str(run.id):
                    return proc
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return None

    def start_and_kill(client, attempt: int):
        """Start a long training, kill its process while a task runs; return the run and the task
        runs the server still shows Running right after the kill (the dead process cannot change
        them). Empty when the kill landed between two tasks."""
        params = {**SMALL, "n_trials": 60, "model_name": f"flights-crash-{attempt}"}
        run = run_deployment("training/local", parameters={"params": params}, timeout=0)
        deadline, victim = time.time() + 240, None
        while time.time() < deadline:
            running = [t for t in task_runs(client, run) if t.state and t.state.is_running()]
            victim = process_of_run(run) if running else None
            if victim is not None:
                break
            time.sleep(0.5)
        assert victim is not None, "the training run never had a running task"
        victim.kill()  # SIGKILL: no hook, no state change from inside
        time.sleep(0.2)
        return run, {t.id for t in task_runs(client, run) if t.state and t.state.is_running()}

    with get_client(sync_client=True) as client:
        for attempt in range(3):  # a kill between two tasks orphans nothing: try again
            run, orphans = start_and_kill(client, attempt)
            if orphans:
                break
        assert orphans, "three kills all landed between tasks"
        deadline = time.time() + 120
        while time.time() < deadline and not client.read_flow_run(run.id).state.is_crashed():
            time.sleep(1)
        assert client.read_flow_run(run.id).state.is_crashed()
        deadline = time.time() + 180
        while time.time() < deadline:
            left = [
                t
                for t in task_runs(client, run)
                if t.state and (t.state.is_running() or t.state.is_pending())
            ]
            if not left:
                break
            time.sleep(2)
        assert not left, [t.name for t in left]
        closed = {t.id: t for t in task_runs(client, run) if t.state.is_crashed()}
        assert orphans <= set(closed)  # every task the kill orphaned was ended by the automation
        assert all("close-crashed-runs" in t.state.message for t in closed.values())
