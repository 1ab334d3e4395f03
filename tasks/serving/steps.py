"""The serving stage's Prefect tasks: keeping the prediction and feedback logs small."""

from __future__ import annotations

from tasks.core.context import RunContext
from tasks.orchestration import io_task
from tasks.serving.compaction import CompactionResult, compact_log


@io_task(name="compact-log", task_run_name="compact-{kind}-{model_name}")
def compact_model_log(kind: str, model_name: str, retention_days: int, ctx: RunContext) -> CompactionResult:
    """Expire and compact one model's prediction or feedback log (idempotent: safe to retry)."""
    return compact_log(ctx.store, kind, model_name, retention_days)
