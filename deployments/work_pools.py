"""Work pools as code: the ``process``, ``docker`` and ``ecs`` pools, created or updated idempotently.

    python -m deployments.work_pools                         # all three, project defaults
    python -m deployments.work_pools --only docker           # flow runs as containers of the flow image
    python -m deployments.work_pools --from-stack driftloop  # ECS defaults from the CloudFormation stack
    python -m deployments.work_pools --only cloud --cpu 2048 --memory 8192

The ECS pool's base job template is ``deployments/ecs-base-job-template.json``: prefect-aws's default
(`prefect work-pool get-default-base-job-template --type ecs`) with this project's defaults and
tighter limits (Fargate CPU sizes, memory range). Account-specific defaults (roles, subnets, security
group, cluster, Prefect API key secret) come from the stack's outputs or flags. Every value is checked
against the template's own schema before anything is written, and a second run with the same inputs
changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
from pathlib import Path
from typing import Any

from deployments import prefect_file
from deployments.aws import SetupError, run_setup, secret_arn, stack_outputs

ECS_TEMPLATE_FILE = Path(__file__).with_name("ecs-base-job-template.json")

# Fargate's valid memory sizes (MiB) per CPU size: a pair outside these is refused by ECS at run time.
FARGATE_MEMORY = {
    256: [512, 1024, 2048],
    512: list(range(1024, 4097, 1024)),
    1024: list(range(2048, 8193, 1024)),
    2048: list(range(4096, 16385, 1024)),
    4096: list(range(8192, 30721, 1024)),
    8192: list(range(16384, 61441, 4096)),
    16384: list(range(32768, 122881, 8192)),
}


def ecs_template(defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ECS base job template with ``defaults`` set, validated against its variables' schema."""
    template = json.loads(ECS_TEMPLATE_FILE.read_text())
    props = template["variables"]["properties"]
    for key, value in (defaults or {}).items():
        if value is None:
            continue
        if key not in props:
            raise SetupError(f"ECS job template has no variable {key!r}; known: {', '.join(sorted(props))}")
        props[key]["default"] = value
    validate_job_variables(
        {k: p["default"] for k, p in props.items() if "default" in p}, template, "pool defaults"
    )
    return template


def validate_job_variables(values: dict[str, Any], template: dict[str, Any], where: str) -> None:
    """Raise a SetupError naming every value that the template's schema (or Fargate) would refuse."""
    import jsonschema

    schema = copy.deepcopy(template["variables"])
    schema.pop("required", None)
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in validator.iter_errors(values)
    ]
    props = schema["properties"]
    cpu = values.get("cpu") or props.get("cpu", {}).get("default")
    memory = values.get("memory") or props.get("memory", {}).get("default")
    launch = values.get("launch_type") or props.get("launch_type", {}).get("default")
    if launch in ("FARGATE", "FARGATE_SPOT") and cpu in FARGATE_MEMORY and memory not in FARGATE_MEMORY[cpu]:
        allowed = FARGATE_MEMORY[cpu]
        problems.append(
            f"memory: {memory} MiB is not a Fargate size for cpu {cpu}; use one of "
            f"{allowed[0]}..{allowed[-1]} (step {allowed[1] - allowed[0] if len(allowed) > 1 else 0})"
        )
    if problems:
        raise SetupError(f"{where}: invalid job variables:\n  - " + "\n  - ".join(problems))


def defaults_from_stack(outputs: dict[str, str]) -> dict[str, Any]:
    """ECS pool defaults from the driftloop stack's outputs."""
    return {
        "cluster": outputs["ClusterName"],
        "execution_role_arn": outputs["TaskExecutionRoleArn"],
        "task_role_arn": outputs["FlowTaskRoleArn"],
        "vpc_id": outputs["VpcId"],
        # the inner awsvpcConfiguration only: the prefect-aws worker wraps it itself
        # (ECSWorker._custom_network_configuration); wrapped twice, RunTask lacks "subnets"
        "network_configuration": {
            "subnets": outputs["SubnetIds"].split(","),
            "securityGroups": [outputs["TasksSecurityGroupId"]],
            "assignPublicIp": outputs.get("AssignPublicIp", "ENABLED"),
        },
        "cloudwatch_logs_options": {
            "awslogs-group": outputs["FlowRunLogGroupName"],
            "awslogs-stream-prefix": "flow-run",
        },
        "prefect_api_key_secret_arn": secret_arn(outputs["PrefectApiKeySecretName"]),
    }


def desired_pools(
    ecs_defaults: dict[str, Any] | None = None, only: str | None = None
) -> list[dict[str, Any]]:
    """Name, type, description and base job template of each pool prefect.yaml uses."""
    from prefect.workers.process import ProcessWorker

    spec = prefect_file.load()
    pools = []
    if only in (None, "local"):
        pools.append(
            {
                "name": prefect_file.pool("local", spec)["name"],
                "type": "process",
                "description": "driftloop on this machine: flows run as subprocesses of a local worker.",
                "base_job_template": ProcessWorker.get_default_base_job_template(),
            }
        )
    if only in (None, "docker"):
        from prefect_docker.worker import DockerWorker

        pools.append(
            {
                "name": prefect_file.pool("docker", spec)["name"],
                "type": "docker",
                "description": "driftloop in containers on this machine: each flow run is a container "
                "of the flow image (make images).",
                "base_job_template": DockerWorker.get_default_base_job_template(),
            }
        )
    if only in (None, "cloud"):
        pools.append(
            {
                "name": prefect_file.pool("cloud", spec)["name"],
                "type": "ecs",
                "description": "driftloop on AWS: each flow run is an ECS (Fargate) task.",
                "base_job_template": ecs_template(ecs_defaults),
            }
        )
    return pools


async def apply_pools(pools: list[dict[str, Any]]) -> dict[str, str]:
    """Create missing pools, update changed ones, leave equal ones alone; returns name -> action."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    actions: dict[str, str] = {}
    async with get_client() as client:
        for want in pools:
            try:
                have = await client.read_work_pool(want["name"])
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(**want))
                actions[want["name"]] = "created"
                continue
            if have.type != want["type"]:
                raise SetupError(
                    f"work pool {want['name']!r} exists with type {have.type!r}, not {want['type']!r}; "
                    f"delete it (`prefect work-pool delete {want['name']}`) "
                    "or rename the pool in prefect.yaml"
                )
            if (
                have.base_job_template == want["base_job_template"]
                and have.description == want["description"]
            ):
                actions[want["name"]] = "unchanged"
                continue
            await client.update_work_pool(
                want["name"],
                WorkPoolUpdate(base_job_template=want["base_job_template"], description=want["description"]),
            )
            actions[want["name"]] = "updated"
    return actions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.work_pools", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", choices=["local", "docker", "cloud"], help="create/update just this pool")
    parser.add_argument(
        "--from-stack", metavar="STACK", help="take ECS defaults from this CloudFormation stack"
    )
    parser.add_argument("--cpu", type=int, help="default CPU units of a flow-run task")
    parser.add_argument("--memory", type=int, help="default memory (MiB) of a flow-run task")
    parser.add_argument("--image", help="default flow image (deployments set their own)")
    parser.add_argument("--launch-type", choices=["FARGATE", "FARGATE_SPOT", "EC2"])
    args = parser.parse_args(argv)

    def step() -> dict[str, str]:
        defaults = defaults_from_stack(stack_outputs(args.from_stack)) if args.from_stack else {}
        defaults.update(
            {
                k: v
                for k, v in {
                    "cpu": args.cpu,
                    "memory": args.memory,
                    "image": args.image,
                    "launch_type": args.launch_type,
                }.items()
                if v is not None
            }
        )
        pools = desired_pools(defaults, args.only)  # everything validated before anything is written
        prefect_file.require_prefect_api()
        return asyncio.run(apply_pools(pools))

    return run_setup(step, "work pool")


if __name__ == "__main__":
    sys.exit(main())
