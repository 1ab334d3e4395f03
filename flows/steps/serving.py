"""The serving stage's Prefect tasks: keeping the prediction and feedback logs small, batch scoring."""

from __future__ import annotations

from flows.steps.runtime import io_task
from tasks.core.context import RunContext
from tasks.data.ingest import BatchRef
from tasks.registry.versions import Registry
from tasks.serving.batch import PartitionScore, score_partition
from tasks.serving.compaction import CompactionResult, compact_log


@io_task(name="compact-log", task_run_name="compact-{kind}-{model_name}")
def compact_model_log(kind: str, model_name: str, retention_days: int, ctx: RunContext) -> CompactionResult:
    """Expire and compact one model's prediction or feedback log (idempotent: safe to retry)."""
    return compact_log(ctx.store, kind, model_name, retention_days)


@io_task(name="score-partition", task_run_name="score-{ref.key}")
def score_input_partition(
    ref: BatchRef,
    model_name: str,
    version: int,
    output: str,
    id_column: str | None,
    log_predictions: bool,
    ctx: RunContext,
) -> PartitionScore:
    """Score one input file with one registered version (on whichever worker the engine picks)."""
    registry = Registry(ctx.store, model_name)
    data = ctx.store_at(ref.store_uri).read_bytes(ref.key)
    return score_partition(
        ref, data, registry, registry.get(version), ctx.config, output, id_column, log_predictions, ctx.store
    )
