"""Deploy the ``*/cloud`` deployments, after checking everything they need exists.

    python -m deployments.cloud check    # report every problem, change nothing
    python -m deployments.cloud deploy   # check, then `prefect --no-prompt deploy` of each */cloud one

A half-made deployment is worse than none: a run that waits forever for a missing pool, pulls an image
that was never pushed, or dies on a missing secret at 3 a.m. So before anything is registered this
checks, and names each problem with what to do about it:

- the environment prefect.yaml's cloud variants read (``DRIFTLOOP_IMAGE``, ``DRIFTLOOP_STORE_URI``);
- the ECS work pool exists, has type ``ecs``, and knows its roles and network;
- the image exists in ECR and the artifact bucket exists;
- the blocks the flows load (AWS credentials, result storage, W&B key);
- the Prefect API key secret the worker and flow runs read has a value;
- every deployment's job variables pass the pool template's schema and Fargate's CPU/memory sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from deployments import prefect_file
from deployments.aws import SetupError, check_image, client, secret_arn
from deployments.blocks import block_names
from deployments.work_pools import validate_job_variables


async def _read_pool(name: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as api:
        try:
            return await api.read_work_pool(name)
        except ObjectNotFound:
            return None


def _block_exists(slug: str, name: str) -> bool:
    from prefect.blocks.core import Block

    try:
        Block.load(f"{slug}/{name}")
        return True
    except ValueError:
        return False


def network_configuration_problem(value: object) -> str | None:
    """What is wrong with an ECS pool's network_configuration default, if anything. The prefect-aws
    worker wraps the value in ``awsvpcConfiguration`` itself, so it must hold ``subnets`` at the top:
    wrapped twice (as pools made before this check were), every RunTask lacks its subnets."""
    if not value:
        return None
    if not isinstance(value, dict) or "awsvpcConfiguration" in value or not value.get("subnets"):
        return (
            "network_configuration must be the inner awsvpcConfiguration ({subnets, securityGroups, "
            "assignPublicIp}: the worker wraps it); run "
            "`python -m deployments.work_pools --from-stack <stack>`"
        )
    return None


def check() -> list[str]:
    """Every problem that would make a cloud deployment fail, as sentences; empty means ready."""
    problems: list[str] = []
    spec = prefect_file.load()
    pool_spec = prefect_file.pool("cloud", spec)
    deployments = [prefect_file.render(d) for d in prefect_file.deployments("cloud", spec)]

    missing_env = {var for d in deployments for var in prefect_file.ENV_PLACEHOLDER.findall(str(d))}
    for var in sorted(missing_env):
        problems.append(
            f"${var} is not set; prefect.yaml's cloud deployments need it (see README, 'Deploy to AWS')"
        )

    pool = asyncio.run(_read_pool(pool_spec["name"]))
    if pool is None:
        problems.append(
            f"work pool {pool_spec['name']!r} does not exist on the Prefect server: "
            "run `python -m deployments.work_pools --from-stack <stack>`"
        )
    elif pool.type != "ecs":
        problems.append(f"work pool {pool_spec['name']!r} has type {pool.type!r}, not 'ecs'")
    else:
        defaults = {k: p.get("default") for k, p in pool.base_job_template["variables"]["properties"].items()}
        for key in ("execution_role_arn", "task_role_arn", "network_configuration"):
            if not defaults.get(key):
                problems.append(
                    f"work pool {pool_spec['name']!r} has no default {key}: "
                    "run `python -m deployments.work_pools --from-stack <stack>`"
                )
        network = network_configuration_problem(defaults.get("network_configuration"))
        if network:
            problems.append(f"work pool {pool_spec['name']!r}: {network}")
        for d in deployments:
            try:
                validate_job_variables(
                    d["work_pool"].get("job_variables", {}),
                    pool.base_job_template,
                    f"{prefect_file.flow_name(d)}/cloud",
                )
            except SetupError as exc:
                problems.append(str(exc))

    names = block_names()
    for slug, name in (
        ("aws-credentials", names["aws"]),
        ("s3-bucket", names["results"]),
        ("secret", names["wandb"]),
    ):
        if not _block_exists(slug, name):
            problems.append(
                f"block {slug}/{name} does not exist: run `python -m deployments.blocks --from-stack <stack> "
                "--wandb-from-stack-secret`"
            )

    if not missing_env:
        job_variables = deployments[0]["work_pool"]["job_variables"]
        env_vars = job_variables["env"]
        image = job_variables.get("image", "")
        try:
            check_image(image)
        except SetupError as exc:
            problems.append(str(exc))
        store_uri = env_vars.get("DRIFTLOOP_STORE_URI", "")
        if not store_uri.startswith("s3://"):
            problems.append(
                f"DRIFTLOOP_STORE_URI={store_uri!r}: the cloud store must be s3://<bucket>/<prefix>"
            )
        else:
            from botocore.exceptions import ClientError

            bucket = store_uri.removeprefix("s3://").split("/", 1)[0]
            try:
                client("s3").head_bucket(Bucket=bucket)
            except ClientError as exc:
                problems.append(
                    f"artifact bucket {bucket!r} is not reachable ({exc.response['Error'].get('Code')}): "
                    "check the stack output BucketName and your AWS credentials"
                )
        if pool is not None and pool.type == "ecs":
            secret = (
                pool.base_job_template["variables"]["properties"]
                .get("prefect_api_key_secret_arn", {})
                .get("default")
            )
            if secret:
                try:
                    secret_arn(secret, need_value=True)
                except SetupError as exc:
                    problems.append(str(exc))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.cloud", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["check", "deploy"])
    args = parser.parse_args(argv)
    try:
        prefect_file.require_prefect_api()
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = check()
    if problems:
        print(
            "Not deploying; fix these first:" if args.command == "deploy" else f"{len(problems)} problem(s):",
            file=sys.stderr,
        )
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    if args.command == "check":
        print("ready to deploy")
        return 0
    prefect = Path(sys.executable).parent / "prefect"
    return subprocess.run(
        [str(prefect), "--no-prompt", "deploy", *prefect_file.deploy_name_args("cloud")],
        cwd=prefect_file.PREFECT_FILE.parent,
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
