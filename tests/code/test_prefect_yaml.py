"""prefect.yaml stays true to the code: every entrypoint imports to a flow, every parameter schema
builds (the Prefect UI renders it as a form), and the retraining trigger is the one documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from tasks.settings import PROJECT_DIR

SPEC = yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())
DEPLOYMENTS = SPEC["deployments"]


def _load_flow(entrypoint: str):
    path, _, name = entrypoint.partition(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, PROJECT_DIR / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["entrypoint"])
def test_entrypoint_is_a_flow_with_a_parameter_schema(deployment):
    from prefect import Flow
    from prefect.utilities.callables import parameter_schema

    flow = _load_flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    schema = parameter_schema(flow.fn).model_dump()
    assert schema["type"] == "object"
    assert deployment["work_pool"]["name"] == "driftloop-local"


def test_every_flow_the_readme_names_is_deployed():
    names = {_load_flow(d["entrypoint"]).name for d in DEPLOYMENTS}
    assert {"training", "land-demo-data", "package", "promote", "rollback", "monitor", "retrain",
            "canary-decision", "lineage"} <= names
    readme = (PROJECT_DIR / "README.md").read_text()
    for name in names - {"land-demo-data"}:
        assert f"{name}/local" in readme, f"README does not mention the {name}/local deployment"


def test_retrain_is_triggered_by_drift_and_degradation():
    retrain = next(d for d in DEPLOYMENTS if d["entrypoint"].endswith(":retrain"))
    (trigger,) = retrain["triggers"]
    assert set(trigger["expect"]) == {"driftloop.drift.detected", "driftloop.performance.degraded"}
    assert trigger["match"]["prefect.resource.id"] == "driftloop.model.*"
    assert trigger["parameters"]["params"]["model_name"] == "{{ event.payload.model_name }}"
