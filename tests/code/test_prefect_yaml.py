"""prefect.yaml stays true to the code: every flow is deployed for both targets from one definition,
every entrypoint imports to a flow, every parameter schema builds (the Prefect UI renders it as a
form), cloud job variables pass the ECS pool template, and each target's retrain trigger reacts only
to its own events."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from deployments import prefect_file
from tasks.core.settings import PROJECT_DIR, Settings

SPEC = prefect_file.load()
DEPLOYMENTS = SPEC["deployments"]
FLOWS = [
    "training",
    "land-demo-data",
    "land-table",
    "package",
    "promote",
    "rollback",
    "monitor",
    "monitor-every-model",
    "retrain",
    "canary-decision",
    "canary-decision-every-model",
    "lineage",
    "compact-logs",
    "close-crashed-runs",
    "score",
]


def _load_flow(entrypoint: str):
    path, _, name = entrypoint.partition(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, PROJECT_DIR / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}-{d['name']}")
def test_entrypoint_is_a_flow_with_a_parameter_schema(deployment):
    from prefect import Flow
    from prefect.utilities.callables import parameter_schema

    flow = _load_flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    assert flow.name == prefect_file.flow_name(
        deployment
    )  # what `prefect deploy --name <flow>/<target>` matches
    schema = parameter_schema(flow.fn).model_dump()
    # the UI's form: one `params` object whose fields are exactly the parameter model's
    from typing import get_type_hints

    hints = {k: v for k, v in get_type_hints(flow.fn).items() if k != "return"}
    ((name, model),) = hints.items()
    assert list(schema["properties"]) == [name]
    definition = schema["definitions"][model.__name__]
    assert set(definition["properties"]) == set(model.model_fields), flow.name


TARGETS = ("local", "docker", "cloud")


def test_every_flow_exists_for_every_target_with_the_same_definition():
    by_target = {
        t: {prefect_file.flow_name(d): d for d in prefect_file.deployments(t, SPEC)} for t in TARGETS
    }
    assert all(sorted(by_target[t]) == sorted(FLOWS) for t in TARGETS)
    assert {d["name"] for d in DEPLOYMENTS} == set(TARGETS)
    pools = {"local": "driftloop-local", "docker": "driftloop-docker", "cloud": "driftloop-ecs"}
    workdir = {"local": "{{ $DRIFTLOOP_PROJECT_DIR }}", "docker": "/opt/driftloop", "cloud": "/opt/driftloop"}
    assert Settings().prefect.work_pool == pools["local"]
    for name in FLOWS:
        local = by_target["local"][name]
        for target in TARGETS:
            deployment = by_target[target][name]
            for key in ("entrypoint", "description", "tags", "parameters"):
                assert deployment.get(key) == local.get(key), f"{name}: {key} differs in {target}"
            assert deployment["work_pool"]["name"] == pools[target]
            step = deployment["pull"][0]["prefect.deployments.steps.set_working_directory"]
            assert step["directory"] == workdir[target]
    assert by_target["cloud"]["monitor-every-model"]["schedules"][0]["cron"] == "0 * * * *"


def test_docker_job_variables_pass_the_docker_workers_template():
    """Checked against prefect-docker's own template; every DRIFTLOOP_ variable is a setting, and the
    ones left empty when unset mean 'unset' (Settings ignores empty variables)."""
    from prefect_docker.worker import DockerWorker

    from deployments.work_pools import validate_job_variables

    template = DockerWorker.get_default_base_job_template()
    env = {"DRIFTLOOP_FLOW_IMAGE": "localhost/driftloop/flows:dev", "DRIFTLOOP_STORE_URI": "s3://b/p"}
    for d in prefect_file.deployments("docker", SPEC):
        variables = prefect_file.render(d["work_pool"]["job_variables"], env)
        variables["env"] = {k: prefect_file.ENV_PLACEHOLDER.sub("", v) for k, v in variables["env"].items()}
        validate_job_variables(variables, template, prefect_file.flow_name(d))
        assert variables["network_mode"] == "host" and variables["image_pull_policy"] == "Never"
        settings = _settings_from_env(
            {k: v for k, v in variables["env"].items() if k.startswith("DRIFTLOOP_")}
        )
        assert settings.target == "docker" and settings.store_uri == "s3://b/p"
        assert settings.s3.endpoint_url is None and settings.s3.credentials_block is None


def test_cloud_job_variables_pass_the_ecs_template():
    from deployments.work_pools import ecs_template, validate_job_variables

    template = ecs_template()
    env = {
        "DRIFTLOOP_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/driftloop/flows:abc",
        "DRIFTLOOP_STORE_URI": "s3://bucket/driftloop",
    }
    for d in prefect_file.deployments("cloud", SPEC):
        variables = prefect_file.render(d["work_pool"]["job_variables"], env)
        validate_job_variables(variables, template, prefect_file.flow_name(d))
        assert variables["env"]["DRIFTLOOP_TARGET"] == "cloud"
        # every DRIFTLOOP_ variable is a real setting (Settings forbids unknown ones)
        driftloop_env = {k: v for k, v in variables["env"].items() if k.startswith("DRIFTLOOP_")}
        assert _settings_from_env(driftloop_env).target == "cloud"


def _settings_from_env(env: dict[str, str]) -> Settings:
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_every_flow_the_readme_names_is_deployed():
    names = {_load_flow(d["entrypoint"]).name for d in DEPLOYMENTS}
    assert set(FLOWS) <= names
    readme = (PROJECT_DIR / "README.md").read_text()
    for name in names - {"land-demo-data", "land-table"}:
        assert f"{name}/local" in readme, f"README does not mention the {name}/local deployment"
    assert "training/cloud" in readme


@pytest.mark.parametrize("target", TARGETS)
def test_retrain_is_triggered_by_the_one_retrain_needed_event_of_its_own_target(target):
    retrain = next(d for d in prefect_file.deployments(target, SPEC) if d["entrypoint"].endswith(":retrain"))
    (trigger,) = retrain["triggers"]
    assert trigger["expect"] == ["driftloop.retrain.needed"]  # every reason in one event: one retrain
    assert trigger["parameters"]["params"]["reason"] == "{{ event.event }}: {{ event.payload.summary }}"
    assert trigger["match"] == {"prefect.resource.id": "driftloop.model.*", "driftloop.target": target}
    assert trigger["for_each"] == ["prefect.resource.id"]  # counted per model
    assert trigger["parameters"]["params"]["model_name"] == "{{ event.payload.model_name }}"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}-{d['name']}")
def test_every_deployment_has_a_concurrency_limit_that_queues(deployment):
    limit = deployment["concurrency_limit"]
    # ENQUEUE, never CANCEL_NEW: deployments take a model name, and a run for one model must not
    # cancel a run for another
    assert 1 <= limit["limit"] <= 2 and limit["collision_strategy"] == "ENQUEUE"


@pytest.mark.parametrize("target", TARGETS)
def test_every_model_is_operated_on_the_schedules_the_readme_promises(target):
    """The hourly schedules start the flows that read the registry when they run (every model, a model
    registered later too), never a per-model flow with a model fixed in its parameters."""
    by_flow = {prefect_file.flow_name(d): d for d in prefect_file.deployments(target, SPEC)}
    expected = {
        "monitor-every-model": "0 * * * *",
        "canary-decision-every-model": "30 * * * *",
        "compact-logs": "45 * * * *",
        "close-crashed-runs": "50 * * * *",
    }
    scheduled = {name: d["schedules"][0]["cron"] for name, d in by_flow.items() if d.get("schedules")}
    assert scheduled == expected
    for name in expected:
        assert not by_flow[name].get("parameters"), f"{name}: a schedule with fixed parameters"
    readme = (PROJECT_DIR / "README.md").read_text()
    assert all(f"{name}/local" in readme for name in expected)


def test_flows_and_io_steps_have_timeouts_and_retries_from_the_settings():
    from flows.steps.data import discover_table_batches
    from flows.steps.runtime import GUARDS

    for deployment in DEPLOYMENTS:
        flow = _load_flow(deployment["entrypoint"])
        assert flow.timeout_seconds == GUARDS.flow_timeout_seconds, flow.name
    assert discover_table_batches.timeout_seconds == GUARDS.io_timeout_seconds
    assert discover_table_batches.retries == GUARDS.retries


def test_events_carry_the_target_the_triggers_match():
    from flows.steps.events import model_resource

    assert model_resource("m", "cloud")["driftloop.target"] == "cloud"
    assert model_resource("m", Settings().target)["driftloop.target"] == "local"


@pytest.mark.parametrize("target", TARGETS)
def test_deploy_names_select_each_deployment_of_a_target_once(target):
    args = prefect_file.deploy_name_args(target)
    names = args[1::2]
    assert args[::2] == ["--name"] * len(names) and len(set(names)) == len(names) == len(FLOWS)
    assert {n.split("/")[0] for n in names} == set(FLOWS) and all(n.endswith(f"/{target}") for n in names)
