"""The flow image as production starts it."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.images

TRAIN_ON_THE_CLUSTER = """
import json
from distributed import Client
from flows.schemas import TrainingParams
from flows.training import training
from tasks.core.settings import Settings
from tasks.core.store import open_store
from tasks.data.landing import land_nycflights13

settings = Settings()
land_nycflights13(open_store(settings), settings.sources_dir, months=[1, 2])
summary = training(TrainingParams(window_end="2013-03-01T00:00:00Z", n_trials=2, cv_folds=0))
executed = Client(settings.dask.address, timeout=30).run(lambda dask_worker: dask_worker.state.executed_count)
print(json.dumps({"version": summary.version, "decision": summary.decision, "executed": executed}))
"""


def _fargate_commands(scheduler_address: str, workers: int) -> tuple[list[str], list[list[str]]]:
    """The commands dask-cloudprovider's FargateCluster gives the scheduler's and the workers' tasks,
    made by its own classes with the sizes our settings give it."""
    from dask_cloudprovider.aws.ecs import Scheduler, Worker

    from tasks.core.settings import DaskSettings

    dask = DaskSettings(cluster="fargate", n_workers=workers, threads_per_worker=1)
    task = dict(
        client=None,
        cluster_arn="",
        task_definition_arn="",
        vpc_subnets=[],
        security_groups=[],
        fargate=True,
        environment={},
        tags={},
    )
    scheduler = Scheduler(port=8786, tls=False, scheduler_timeout="5 minutes", name="scheduler", **task)
    worker_commands = [
        Worker(
            scheduler=scheduler_address,
            cpu=dask.fargate.worker_cpu,
            mem=2048,  # 2 GB a worker on this machine (the Fargate default, 4 GB, needs 8 GB for two)
            gpu=None,
            nthreads=dask.threads_per_worker,
            extra_args=None,
            name=f"worker-{i}",
            **task,
        )._overrides["command"]
        for i in range(workers)
    ]
    return scheduler._overrides["command"], worker_commands


def test_a_training_run_uses_a_dask_cluster_started_with_dask_cloudprovider_commands(pod):
    """Scheduler and workers from the flow image with exactly the commands FargateCluster uses
    (``dask-scheduler`` / ``dask-worker``, which the image provides), then a training flow run on the
    dask engine pointed at that scheduler: every worker executes part of it."""
    scheduler, workers = _fargate_commands("tcp://127.0.0.1:8786", workers=2)
    assert scheduler[0] == "dask-scheduler" and all(w[0] == "dask-worker" for w in workers)
    pod.start("scheduler", *scheduler)
    for i, command in enumerate(workers):
        pod.start(f"worker-{i}", *command)
    out = pod.run(
        "python",
        "-c",
        TRAIN_ON_THE_CLUSTER,
        env={
            "DRIFTLOOP_ENGINE": "dask",
            "DRIFTLOOP_DASK__ADDRESS": "tcp://127.0.0.1:8786",
            "DRIFTLOOP_DASK__N_WORKERS": "2",
            "DRIFTLOOP_STORE_URI": "/data/store",
            "DRIFTLOOP_SOURCES_DIR": "/data/sources",
            "DRIFTLOOP_TRACKING__MODE": "disabled",
            "BENTOML_HOME": "/data/bentoml",
            "PREFECT_HOME": "/data/prefect",
        },
    )
    assert out.returncode == 0, out.stderr[-3000:] + pod.logs("scheduler")[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["version"] == 1 and result["decision"] == "champion"
    assert len(result["executed"]) == 2 and all(n > 0 for n in result["executed"].values()), result
    assert (pod.shared / "store").is_dir()  # the run's store is the shared volume (S3 on Fargate)
