"""The flow image as a Prefect Docker work pool: prefect-docker's worker starts each flow run as a
container of the flow image (on podman's Docker API here), against the local Prefect server and a store
on the moto S3 API. The same image and settings the ECS pool uses, on one machine."""

from __future__ import annotations

import pytest

from tests.images.conftest import MODEL

pytestmark = pytest.mark.images


def _registry(s3_store: dict[str, str]):
    from tasks.core.settings import Settings
    from tasks.core.store import open_store
    from tasks.registry.versions import Registry

    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_store.items():
            patch.setenv(key, value)
        return Registry(open_store(Settings()), MODEL)


def test_landing_and_training_run_as_containers_of_the_flow_image(trained_in_the_flow_image, s3_store):
    for flow_run in trained_in_the_flow_image:
        assert flow_run.work_pool_name == "driftloop-docker"
        assert flow_run.infrastructure_pid, "the docker worker records the container it started"
    registry = _registry(s3_store)
    champion = registry.resolve("champion")
    assert champion.version == 1
    assert registry.store.exists("exports/planes/planes.parquet")  # landed by the container, into S3


def test_monitor_and_retrain_run_as_containers_of_the_flow_image(
    docker_pool, trained_in_the_flow_image, s3_store
):
    monitored = docker_pool.run("monitor", {"model_name": MODEL})
    assert monitored.work_pool_name == "driftloop-docker"
    retrained = docker_pool.run(
        "retrain", {"model_name": MODEL, "reason": "image test", "ignore_cooldown": True}
    )
    assert retrained.work_pool_name == "driftloop-docker"
    registry = _registry(s3_store)
    assert registry.versions() == [1, 2]  # the retrain registered its candidate
