"""Prefect conventions shared by every step: the run context, retries with backoff and jitter,
caching, artifacts.

``run_context`` is how a flow starts: it reads the settings and the process environment, loads the
Prefect blocks the settings name (AWS credentials), points the libraries at their directories, and
returns the one ``RunContext`` the flow passes to every step. This is the one place below the flows'
own code that touches the environment.

``io_task`` is for steps that touch the outside world (sources, store, tracking): they retry with
exponential backoff and jitter, except on ``BadInput``. ``pure_task`` is for deterministic steps
whose inputs fully determine the output: their results are persisted and cached on inputs + source
code, so rerunning a failed flow reuses every finished step.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.tasks import exponential_backoff

from tasks.core.context import RunContext
from tasks.core.errors import BadInput
from tasks.core.settings import PROJECT_DIR, Settings
from tasks.core.store import S3Credentials, StoreError


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry flaky failures; never retry a failure caused by bad input."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    return not isinstance(exc, BadInput)


# Guard rails are decorator arguments, fixed when a flow module is imported: read once, here, from the
# settings (DRIFTLOOP_GUARDS__*), in the process that runs the flow.
GUARDS = Settings().guards
IO_RETRIES = dict(
    retries=GUARDS.retries,
    retry_delay_seconds=exponential_backoff(backoff_factor=GUARDS.retry_delay_seconds),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_bad_input,
)
FLOW_GUARDS = dict(timeout_seconds=GUARDS.flow_timeout_seconds)


def named_model(params: Any) -> str:
    """The model a run's ``params`` act on, for its name: ``model_name``, else the ``model_name`` of the
    ``dataset_config`` it names, else the settings' dataset config's ("a run started with a config is
    named after the model it trains, not 'default'")."""
    get = params.get if isinstance(params, dict) else lambda k: getattr(params, k, None)
    if get("model_name"):
        return str(get("model_name"))
    try:
        import yaml

        path = Path(get("dataset_config") or Settings().dataset_config)
        path = path if path.is_absolute() or path.exists() else PROJECT_DIR / path
        return str(yaml.safe_load(path.read_text())["model_name"])
    except Exception:  # noqa: BLE001 - a name is not worth failing a run for; the run reports the config
        return "default"


def run_name(operation: str) -> Callable[[], str]:
    """A flow run's name that reads like a history in the UI: ``<operation>-<model>-<UTC time>``
    (``model``: see ``named_model``)."""

    def name() -> str:
        from datetime import datetime, timezone

        from prefect.runtime import flow_run

        model = named_model((flow_run.parameters or {}).get("params") or {})
        return f"{operation}-{model}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"

    return name


def io_task(fn: Callable | None = None, **kwargs: Any) -> Any:
    """A Prefect task that retries I/O failures with exponential backoff and jitter, and fails (then
    retries) when it takes longer than the I/O timeout: a hung source or store call never holds a run."""
    options = {**IO_RETRIES, "timeout_seconds": GUARDS.io_timeout_seconds, **kwargs}
    if fn is None:
        return functools.partial(io_task, **kwargs)
    return task(**options)(fn)


@dataclass
class RunContextIdentity(CachePolicy):
    """The part of a step's cache key that comes from its ``ctx``: only what changes results
    (``RunContext.cache_identity``), not the run's operational settings."""

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        from prefect.utilities.hashing import hash_objects

        ctx = (inputs or {}).get("ctx")
        return (
            hash_objects(ctx.cache_identity(), raise_on_failure=True) if isinstance(ctx, RunContext) else None
        )


# inputs (the run context by its identity only) + the step's code
CACHE_POLICY = (INPUTS - "ctx") + RunContextIdentity() + TASK_SOURCE


def cached_task(fn: Callable | None = None, **kwargs: Any) -> Any:
    """A Prefect task whose persisted result is reused when inputs and code are unchanged."""
    options = {**IO_RETRIES, "cache_policy": CACHE_POLICY, "persist_result": True, **kwargs}
    if fn is None:
        return functools.partial(cached_task, **kwargs)
    return task(**options)(fn)


def in_prefect_run() -> bool:
    """True inside a flow or task run; artifacts and progress only make sense there."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def step_logger(name: str) -> Any:
    """The run's logger under Prefect (lines in the UI); a plain ``logging`` logger outside it (the
    steps' own functions in benches and on bare or Dask runners)."""
    if in_prefect_run():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger(name)


def publish(create: Callable[..., Any], **kwargs: Any) -> Any:
    """Create a Prefect artifact when running under Prefect; a no-op in plain Python (bench, REPL)."""
    if in_prefect_run():
        return create(**kwargs)
    return None


def run_context(settings: Settings | None = None) -> RunContext:
    """The context of one flow run: ``settings`` (default: read from the environment), the dataset
    config with ``${VAR}`` filled from the environment, S3 credentials from the named block."""
    settings = settings or Settings()
    for name, value in settings.library_environment().items():
        os.environ.setdefault(name, value)
    credentials = aws_credentials_from_block(settings) if settings.s3.credentials_block else None
    return RunContext.build(settings, environ=os.environ, credentials=credentials)


def flow_context(
    model_name: str | None = None,
    needs: Literal["nothing", "registered", "config"] = "nothing",
    settings: Settings | None = None,
) -> RunContext:
    """How every flow starts: the run context (settings, dataset config, opened store, target).
    ``needs="registered"``: ``model_name`` must have versions (operations on its registry entry alone);
    ``needs="config"``: the context on that model's own registered config (``model_context``). A model
    never registered is an error naming those that are."""
    ctx = run_context(settings)
    if needs == "registered":
        registered_model(ctx, model_name)
    return model_context(ctx, model_name) if needs == "config" else ctx


def registered_model(ctx: RunContext, model_name: str | None) -> str:
    """The name of a model that has versions in the store (for operations on its registry entry alone:
    promote, rollback, lineage, package); a model never registered is an error naming those that are."""
    from tasks.registry.versions import Registry, RegistryError, registered_models

    name = ctx.model_name(model_name)
    if not Registry(ctx.store, name).versions():
        raise RegistryError(
            f"model {name!r} was never registered in {ctx.store.uri} (registered: "
            f"{registered_models(ctx.store) or 'none'}); check the name, or train it first"
        )
    return name


def model_context(ctx: RunContext, model_name: str | None) -> RunContext:
    """The run context on ``model_name``'s own dataset config (``model_config_of``: the one its
    registry entry keeps), never the worker's: one worker acts on any model. A model never registered
    is an error naming those that are."""
    from tasks.registry.versions import Registry, model_config_of

    name = ctx.model_name(model_name)
    variables = ctx.settings.config_variables(os.environ)
    config = model_config_of(Registry(ctx.store, name), ctx.config, variables)
    return ctx if config is ctx.config else ctx.with_config(config)


def aws_credentials_from_block(settings: Settings) -> S3Credentials:
    """S3 credentials from the prefect-aws ``AwsCredentials`` block named in settings."""
    from prefect_aws import AwsCredentials

    name, s3 = settings.s3.credentials_block, settings.s3
    try:
        block = AwsCredentials.load(name)
    except ValueError as exc:
        raise StoreError(
            f"AwsCredentials block {name!r} not found on the Prefect server ({exc}). Create it with "
            "`python -m deployments.blocks`, or unset DRIFTLOOP_S3__CREDENTIALS_BLOCK to use keys or "
            "the task role."
        ) from None
    params = block.aws_client_parameters
    return S3Credentials(
        region=block.region_name or s3.region,
        endpoint_url=(str(params.endpoint_url) if params and params.endpoint_url else None)
        or s3.endpoint_url,
        access_key_id=block.aws_access_key_id,
        secret_access_key=block.aws_secret_access_key,
        session_token=block.aws_session_token,
        source=f"block {name}",
    )


def wandb_api_key(settings: Settings) -> str | None:
    """The W&B API key from the Prefect Secret block named in settings (None if no block is named).

    The block is read whenever it is named, offline too, so a missing block fails on the laptop the
    same way it would in the cloud. The key goes to wandb in memory only, never to env, logs or files.
    """
    name = settings.tracking.api_key_block
    if not name:
        return None
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name).get())
    except ValueError as exc:
        raise RuntimeError(
            f"W&B key: Secret block {name!r} not found on the Prefect server ({exc}). Create it with "
            "`python -m deployments.blocks --wandb-api-key-env WANDB_API_KEY`, or unset "
            "DRIFTLOOP_TRACKING__API_KEY_BLOCK to track offline."
        ) from None
