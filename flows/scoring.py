"""Batch scoring: a partitioned dataset scored by the champion (or a named version), on the engine.

    python flows/scoring.py --input scaled/raw/flights             # every file under that prefix
    prefect deployment run 'score/local' -p params='{"input": "s3://bucket/incoming/", "version": 3}'

Every input file is a partition and a mapped step, so on the dask engine (``DRIFTLOOP_ENGINE=dask``)
partitions are scored on the cluster's workers; the flow itself holds no data. Each partition's
predictions (row id; the probability and label, the value, or the chosen class with each class's
probability, by the target's kind; model name and version) go to one Parquet file under the output
prefix; a file that fails the model's input contract is quarantined beside them with the
reason, and the run fails naming it once the rest are scored (``on_invalid: skip`` lets it pass).
Scored rows also feed the model's prediction log, so monitoring judges batch traffic too.
"""

from __future__ import annotations

import hashlib

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.schemas import ScoreParams, ScoreSummary
from flows.steps.command_line import run_from_command_line
from flows.steps.engine import EngineTaskRunner
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name
from flows.steps.serving import score_input_partition
from tasks.core.config import FileSource
from tasks.core.errors import BadInput
from tasks.data.ingest import discover_file_batches
from tasks.registry.versions import Registry
from tasks.serving.batch import PartitionScore


class PartitionsQuarantined(BadInput):
    """Input files failed the model's input contract; they are kept in quarantine with the reason."""


@flow(name="score", **FLOW_GUARDS, flow_run_name=run_name("score"), task_runner=EngineTaskRunner())
def score(params: ScoreParams) -> ScoreSummary:
    """Score every file of a partitioned dataset with the champion (or a named version), partitions
    mapped on the engine; quarantine files failing the input contract. Runs when asked."""
    logger = get_run_logger()
    ctx = flow_context(
        params.model_name, needs="config"
    )  # the model's own input contracts, from the registry
    model_name = ctx.config.model_name
    registry = Registry(ctx.store, model_name)
    version = registry.get(params.version) if params.version else registry.resolve("champion")
    source = FileSource(
        kind="files", path=params.input, format=params.format, hive_partitioning=params.hive_partitioning
    )
    refs = discover_file_batches("input", source, ctx)
    digest = hashlib.sha256(params.input.encode()).hexdigest()[:12]
    output = params.output or f"scores/{model_name}/v{version.version}/{digest}"
    logger.info(
        "scoring %d file(s) of %s with %s v%d into %s",
        len(refs),
        params.input,
        model_name,
        version.version,
        output,
    )

    progress = publish(
        create_progress_artifact, progress=0.0, key="scoring-progress", description=f"scoring {params.input}"
    )
    futures = score_input_partition.map(
        refs,
        unmapped(model_name),
        unmapped(version.version),
        unmapped(output),
        unmapped(params.id_column),
        unmapped(params.log_predictions),
        unmapped(ctx),
    )
    results: list[PartitionScore] = []
    for done, future in enumerate(as_completed(futures), start=1):
        results.append(future.result())
        if progress:
            update_progress_artifact(progress, progress=100 * done / len(refs))
    results.sort(key=lambda r: r.source)
    quarantined = [r for r in results if r.output_key is None]
    summary = ScoreSummary(
        model_name=model_name,
        version=version.version,
        input=params.input,
        output=output,
        partitions=len(results),
        rows=sum(r.rows for r in results),
        quarantined=[r.quarantine_key for r in quarantined if r.quarantine_key],
        logged=params.log_predictions,
    )
    publish(
        create_table_artifact,
        key=f"{model_name}-scoring".replace("_", "-"),
        table=[r.model_dump() for r in results],
        description=f"{summary.rows} rows of {params.input} scored by {model_name} v{version.version} "
        f"into {output}",
    )
    logger.info(
        "scored %d rows in %d partitions; %d quarantined", summary.rows, summary.partitions, len(quarantined)
    )
    if quarantined and ctx.settings.on_invalid == "fail":
        first = quarantined[0]
        raise PartitionsQuarantined(
            f"{len(quarantined)} of {len(results)} input file(s) failed {model_name}'s input contract and "
            f"were quarantined (the others are scored): {first.source}: {first.reason} (kept at "
            f"{first.quarantine_key}); fix the data and score those files again, or set "
            "DRIFTLOOP_ON_INVALID=skip"
        )
    return summary


if __name__ == "__main__":
    run_from_command_line(score, ScoreParams)
