"""The engine setting: each wrong value is a clear error naming what to change."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from flows.steps.engine import EngineUnavailable, cluster_options, task_runner_for
from tasks.core.settings import DaskSettings, Settings


def test_an_engine_that_does_not_exist_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("DRIFTLOOP_ENGINE", "spark")
    with pytest.raises(ValidationError, match="engine") as err:
        Settings()
    assert "'local' or 'dask'" in str(err.value)


def test_a_scheduler_that_does_not_answer_fails_fast_naming_the_address():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(
        engine="dask", dask=DaskSettings(address=f"tcp://127.0.0.1:{port}", connect_timeout_seconds=2)
    )
    with pytest.raises(EngineUnavailable, match=f"no Dask scheduler answers at tcp://127.0.0.1:{port}"):
        task_runner_for(settings)
    with pytest.raises(EngineUnavailable, match="not a scheduler address"):
        task_runner_for(Settings(engine="dask", dask=DaskSettings(address="http://")))


def test_a_fargate_cluster_without_its_network_and_roles_names_what_is_missing():
    with pytest.raises(EngineUnavailable, match="dask.fargate.image, cluster_arn"):
        cluster_options(DaskSettings(cluster="fargate"))


def test_the_local_cluster_binds_loopback_with_the_configured_size():
    options = cluster_options(DaskSettings(n_workers=3, memory_limit="1GiB"))
    assert options["cluster_class"] == "distributed.LocalCluster"
    assert options["cluster_kwargs"]["host"] == "127.0.0.1" and options["cluster_kwargs"]["n_workers"] == 3


def test_fargate_settings_become_arguments_dask_cloudprovider_accepts(monkeypatch):
    """The Fargate cluster's settings arrive as one JSON job variable and map onto FargateCluster's own
    parameters (checked against its signature: a renamed argument fails here, not in the cloud)."""
    import inspect

    from dask_cloudprovider.aws import ECSCluster

    monkeypatch.setenv("DRIFTLOOP_ENGINE", "dask")
    monkeypatch.setenv("DRIFTLOOP_DASK__CLUSTER", "fargate")
    monkeypatch.setenv(
        "DRIFTLOOP_DASK__FARGATE",
        '{"image": "123.dkr.ecr.us-east-1.amazonaws.com/driftloop/flows:abc", "cluster_arn": "arn:aws:ecs:c",'
        ' "subnets": ["subnet-1"], "security_groups": ["sg-1"], "execution_role_arn": "arn:e",'
        ' "task_role_arn": "arn:t", "cloudwatch_logs_group": "/driftloop/dask", "worker_mem": 4096}',
    )
    options = cluster_options(Settings().dask)
    assert options["cluster_class"] == "dask_cloudprovider.aws.FargateCluster"
    accepted = set(inspect.signature(ECSCluster.__init__).parameters)
    assert set(options["cluster_kwargs"]) <= accepted, set(options["cluster_kwargs"]) - accepted
    assert options["cluster_kwargs"]["worker_mem"] == 4096 and options["cluster_kwargs"]["subnets"] == [
        "subnet-1"
    ]
