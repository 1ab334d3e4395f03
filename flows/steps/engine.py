"""Where a flow's steps run: ``local`` (threads in the flow's own process) or ``dask`` (a cluster).

One setting decides (``DRIFTLOOP_ENGINE``, in a deployment: its ``env`` job variable). The flows
declare ``EngineTaskRunner``, which reads the settings of the process running the flow when the run
starts and delegates to Prefect's ``ThreadPoolTaskRunner`` or prefect-dask's ``DaskTaskRunner``: the
same flow code maps its steps (tuning trials, CV folds, partitions to score or profile) onto either.
On the dask engine the cluster is, by ``DaskSettings``: a running scheduler (``address``), a
``distributed.LocalCluster`` started for the run, or a Fargate cluster (dask-cloudprovider) started
for the run; clusters started for a run are closed with it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tasks.core.config import ConfigError
from tasks.core.settings import DaskSettings, Settings

LOCAL_THREADS = 2  # mapped steps at once on the local engine (this machine's cores)


class EngineUnavailable(ConfigError):
    """The configured engine cannot be reached or started; the message says what to change."""


def check_scheduler(address: str, timeout: float) -> None:
    """Fail fast, naming the address, when no Dask scheduler answers there (distributed alone would
    wait its own connect timeout and then say less)."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.scheme not in {"tcp", "tls"} or not parsed.hostname or not parsed.port:
        raise EngineUnavailable(
            f"dask.address {address!r} is not a scheduler address; give tcp://host:port (e.g. "
            "tcp://10.0.0.5:8786), or unset DRIFTLOOP_DASK__ADDRESS to start a cluster for the run"
        )
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise EngineUnavailable(
            f"no Dask scheduler answers at {address} ({exc.strerror or exc}); start one (`dask scheduler`) "
            "or fix DRIFTLOOP_DASK__ADDRESS, or unset it to start a cluster for the run, or set "
            "DRIFTLOOP_ENGINE=local"
        ) from None


def cluster_options(dask: DaskSettings) -> dict[str, Any]:
    """``DaskTaskRunner`` arguments for the configured cluster."""
    if dask.address:
        return {"address": dask.address}
    if dask.cluster == "local":
        return {
            "cluster_class": "distributed.LocalCluster",
            "cluster_kwargs": {
                "n_workers": dask.n_workers,
                "threads_per_worker": dask.threads_per_worker,
                "memory_limit": dask.memory_limit,
                "host": "127.0.0.1",
                "dashboard_address": "127.0.0.1:0" if dask.dashboard else None,
            },
        }
    f = dask.fargate
    required = ("image", "cluster_arn", "execution_role_arn", "task_role_arn", "subnets", "security_groups")
    missing = [n for n in required if not getattr(f, n)]
    if missing:
        raise EngineUnavailable(
            f"dask.cluster is fargate but dask.fargate.{', '.join(missing)} is not set; the CloudFormation "
            "stack's outputs name each (see README, 'Scale')"
        )
    kwargs = {
        "image": f.image,
        "cluster_arn": f.cluster_arn,
        "vpc": f.vpc,
        "subnets": f.subnets,
        "security_groups": f.security_groups,
        "execution_role_arn": f.execution_role_arn,
        "task_role_arn": f.task_role_arn,
        "cloudwatch_logs_group": f.cloudwatch_logs_group,
        "region_name": f.region,
        "n_workers": dask.n_workers,
        "scheduler_cpu": f.scheduler_cpu,
        "scheduler_mem": f.scheduler_mem,
        "worker_cpu": f.worker_cpu,
        "worker_mem": f.worker_mem,
        "worker_nthreads": dask.threads_per_worker,
        "fargate_spot": f.fargate_spot,
        # its stale-resource sweep lists every cluster, task definition and role in the account: not
        # this stack's to do, and not in the flow role's policy (tests/code/test_cloud_files.py)
        "skip_cleanup": True,
    }
    return {
        "cluster_class": "dask_cloudprovider.aws.FargateCluster",
        "cluster_kwargs": {k: v for k, v in kwargs.items() if v is not None},
    }


def parallel_steps(settings: Settings) -> int:
    """How many mapped steps run at once: the local threads, or the cluster's workers."""
    return LOCAL_THREADS if settings.engine == "local" else settings.dask.n_workers


def threads_per_step(settings: Settings) -> int:
    """LightGBM threads for each of the steps running at once (local: this machine's cores shared)."""
    if settings.engine == "local":
        return max(1, (os.cpu_count() or 2) // LOCAL_THREADS)
    return settings.dask.threads_per_worker


def task_runner_for(settings: Settings) -> TaskRunner:
    """The task runner of the configured engine (not started)."""
    if settings.engine == "local":
        return ThreadPoolTaskRunner(max_workers=LOCAL_THREADS)
    from prefect_dask import DaskTaskRunner

    if settings.dask.address:
        check_scheduler(settings.dask.address, settings.dask.connect_timeout_seconds)
    return DaskTaskRunner(**cluster_options(settings.dask))


class EngineTaskRunner(TaskRunner):
    """The flows' task runner: local threads or Dask, decided when a flow run starts, from the settings
    of the process running it (so a deployment's job variables choose, and the flow code does not)."""

    def __init__(self) -> None:
        super().__init__()
        self._inner: TaskRunner | None = None

    def duplicate(self) -> "EngineTaskRunner":
        return type(self)()

    @property
    def started(self) -> bool:
        return self._inner is not None

    @property
    def engine(self) -> TaskRunner:
        if self._inner is None:
            raise RuntimeError("the task runner must be started before submitting work")
        return self._inner

    def __enter__(self) -> "EngineTaskRunner":
        super().__enter__()
        self._inner = task_runner_for(Settings())
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._inner is not None:
                self._inner.__exit__(*exc_info)
        finally:
            self._inner = None
            super().__exit__(*exc_info)

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None):
        self._flow_travels_by_value()
        return self.engine.submit(task, parameters, wait_for=wait_for, dependencies=dependencies)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any = None):
        self._flow_travels_by_value()
        return self.engine.map(task, parameters, wait_for=wait_for)

    def _flow_travels_by_value(self) -> None:
        """A worker loads a deployment's flow from its file (``flows/training.py`` becomes a module named
        ``training``), and the flow run's context travels with every task sent to Dask: a scheduler or
        worker elsewhere cannot import a module of that name. Pickle such a module by value instead."""
        if self._inner is None or isinstance(self._inner, ThreadPoolTaskRunner):
            return
        from prefect.context import FlowRunContext

        flow = getattr(FlowRunContext.get(), "flow", None)
        name = getattr(getattr(flow, "fn", None), "__module__", None)
        module = sys.modules.get(name) if name else None
        if module is not None and not name.startswith("flows."):
            import cloudpickle

            cloudpickle.register_pickle_by_value(module)  # idempotent


@contextlib.contextmanager
def cluster_client() -> Iterator[Any]:
    """The Dask client of the run's cluster: in the flow's process, the client the flow's task runner
    opened; on a worker (a mapped step), a client that lets the step start work of its own without
    holding a worker thread while it waits; outside Prefect, this process's default client."""
    from distributed import default_client, get_worker, worker_client
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    if isinstance(runner, EngineTaskRunner) and runner.started and hasattr(runner.engine, "client"):
        yield runner.engine.client  # prefect-dask's DaskTaskRunner: connected to the run's cluster
        return
    try:
        get_worker()
    except ValueError:
        pass  # not on a Dask worker
    else:
        with worker_client() as client:
            yield client
        return
    try:
        client = default_client()  # plain Python (a notebook, a bench) with its own Client
    except ValueError:
        raise EngineUnavailable(
            "this step needs the dask engine's cluster, but it runs neither in a flow on the dask engine nor "
            "on a Dask worker, and no Dask client is open: run it inside a flow with DRIFTLOOP_ENGINE=dask "
            "(the flow's task runner starts or joins the cluster)"
        ) from None
    yield client
