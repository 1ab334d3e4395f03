"""Compaction: the prediction, feedback and rejection logs merged into one file per model per day,
and expired.

    python flows/compaction.py                         # every registered model
    python flows/compaction.py --model-name flights-late-arrival
    prefect deployment run 'compact-logs/local' -p params='{"model_name": "flights-late-arrival"}'

Services ship a small file every few seconds; this flow (scheduled hourly) keeps the store to one
file per model per day (today: one per hour), drops rows shipped twice, and deletes the date
partitions older than ``logs.retention_days``. It is safe while services write: see
``tasks.serving.compaction``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.schemas import CompactParams
from flows.steps.command_line import run_from_command_line
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name
from flows.steps.serving import compact_model_log
from tasks.registry.versions import registered_models
from tasks.serving.compaction import LOG_KINDS, CompactionResult


@flow(name="compact-logs", **FLOW_GUARDS, flow_run_name=run_name("compact-logs"))
def compact_logs(params: CompactParams = CompactParams()) -> list[CompactionResult]:
    """Merge each model's logs into one file per day (an hour, today), drop rows shipped twice, delete
    days past retention. Runs hourly and when asked."""
    ctx = flow_context(params.model_name, needs="registered" if params.model_name else "nothing")
    models = [ctx.model_name(params.model_name)] if params.model_name else registered_models(ctx.store)
    retention = params.retention_days or ctx.settings.logs.retention_days
    results = [compact_model_log(kind, m, retention, ctx) for m in models for kind in LOG_KINDS]
    for r in results:
        get_run_logger().info(
            "%s/%s: %d files -> %d, %d rows rewritten, %d duplicates dropped, %d days expired",
            r.kind,
            r.model_name,
            r.files_before,
            r.files_after,
            r.rows_rewritten,
            r.duplicates_dropped,
            r.partitions_expired,
        )
    publish(
        create_table_artifact,
        key="log-compaction",
        table=[r.model_dump() for r in results],
        description=f"log compaction (retention {retention} days)",
    )
    return results


if __name__ == "__main__":
    run_from_command_line(compact_logs, CompactParams)
