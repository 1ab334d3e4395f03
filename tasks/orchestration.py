"""Prefect conventions shared by every task: retries with backoff and jitter, caching, artifacts.

``io_task`` is for steps that touch the outside world (sources, store, tracking): they retry with
exponential backoff and jitter, except on ``BadInput``. ``pure_task`` is for deterministic steps
whose inputs fully determine the output: their results are persisted and cached on inputs + source
code, so rerunning a failed flow reuses every finished step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.tasks import exponential_backoff

from tasks.core.errors import BadInput


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry flaky failures; never retry a failure caused by bad input."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    return not isinstance(exc, BadInput)


IO_RETRIES = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_bad_input,
)


def io_task(fn: Callable | None = None, **kwargs: Any) -> Any:
    """A Prefect task that retries I/O failures with exponential backoff and jitter."""
    options = {**IO_RETRIES, **kwargs}
    if fn is None:
        return functools.partial(io_task, **kwargs)
    return task(**options)(fn)


def cached_task(fn: Callable | None = None, **kwargs: Any) -> Any:
    """A Prefect task whose persisted result is reused when inputs and code are unchanged."""
    options = {**IO_RETRIES, "cache_policy": INPUTS + TASK_SOURCE, "persist_result": True, **kwargs}
    if fn is None:
        return functools.partial(cached_task, **kwargs)
    return task(**options)(fn)


def in_prefect_run() -> bool:
    """True inside a flow or task run; artifacts and progress only make sense there."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish(create: Callable[..., Any], **kwargs: Any) -> Any:
    """Create a Prefect artifact when running under Prefect; a no-op in plain Python (bench, REPL)."""
    if in_prefect_run():
        return create(**kwargs)
    return None
