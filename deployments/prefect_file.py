"""What prefect.yaml says, for the setup scripts: pool definitions and each target's deployments.

prefect.yaml is the one place deployments are defined; the scripts read it rather than repeating
pool names, block names or job variables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from tasks.core.settings import PROJECT_DIR

PREFECT_FILE = PROJECT_DIR / "prefect.yaml"


def load(path: Path = PREFECT_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def pool(target: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """``definitions.work_pools.<target>``: name, work queue, job variables."""
    spec = spec or load()
    return spec["definitions"]["work_pools"][target]


def deployments(target: str, spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every deployment of ``target`` (its name is the target: training/local, training/cloud, ...)."""
    spec = spec or load()
    return [d for d in spec["deployments"] if d["name"] == target]


ENV_PLACEHOLDER = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")


def render(value: Any, env: dict[str, str] | None = None) -> Any:
    """Fill ``{{ $VAR }}`` from ``env`` (default: the environment) as `prefect deploy` does; unset ones stay.

    (Prefect's own ``apply_values`` always reads ``os.environ`` for these, so checks of another
    environment need this.)
    """
    env = dict(os.environ) if env is None else env
    if isinstance(value, dict):
        return {k: render(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, env) for v in value]
    if isinstance(value, str):
        return ENV_PLACEHOLDER.sub(lambda m: env.get(m.group(1), m.group(0)), value)
    return value


def flow_name(deployment: dict[str, Any]) -> str:
    """The flow's name as Prefect shows it (function name with dashes, or the @flow name)."""
    return deployment["entrypoint"].split(":")[-1].replace("_", "-")


def deploy_name_args(target: str) -> list[str]:
    """``--name <flow>/<target>`` for each of the target's deployments, for `prefect deploy`.

    Explicit names rather than the pattern ``*/<target>``: Prefect 3.9 expands a pattern to bare
    deployment names, and since every deployment of a target shares its name, each would be
    deployed once per match (9 x 9 for nine flows, ~30 s instead of ~4 s).
    """
    args: list[str] = []
    for d in deployments(target):
        args += ["--name", f"{flow_name(d)}/{target}"]
    return args


def require_prefect_api() -> str:
    """The Prefect API URL the scripts will write to, refusing to go on without a reachable one.

    Without ``PREFECT_API_URL`` Prefect would quietly start a throwaway in-process server, and pools
    or blocks would be "created" where no one will ever see them.
    """
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from deployments.aws import SetupError

    url = PREFECT_API_URL.value()
    if not url:
        raise SetupError(
            "PREFECT_API_URL is not set: `prefect cloud login`, or export PREFECT_API_URL "
            "(and PREFECT_API_KEY) for your workspace or server (`make stack` starts a local one)"
        )

    async def health() -> Exception | None:
        async with get_client() as client:
            return await client.api_healthcheck()

    error = asyncio.run(health())
    if error is not None:
        raise SetupError(
            f"the Prefect API at {url} does not answer ({type(error).__name__}: {error}); "
            "is the server up, and are PREFECT_API_URL / PREFECT_API_KEY right?"
        )
    return url
