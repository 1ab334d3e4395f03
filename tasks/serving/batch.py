"""Batch scoring: a partitioned dataset scored by one registered version, partition by partition.

Each input file is one partition and one unit of work (a mapped step: threads here, or Dask
workers): read it, conform its rows to the model's input contracts (the same check the service
makes), apply the version's own saved transform and booster, and write one Parquet file of
predictions with the row ids, model name and version. Output keys are fixed by the input file, so
a retried partition overwrites itself, never duplicates. A partition that fails the contract is
quarantined (raw bytes and the reason kept), never dropped or half-scored.

When asked, scored rows also feed the model's prediction log (with request ids the model's key signs,
so outcomes can be reported for them through /feedback), and monitoring judges them like served ones.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.config import DatasetConfig
from tasks.core.errors import BadInput
from tasks.core.logs import PREDICTIONS, log_file_key, log_prefix, prediction_log_schema
from tasks.core.store import ArtifactStore
from tasks.core.target import LearningTask
from tasks.data.ingest import BatchRef, read_batch
from tasks.model.train import predict
from tasks.registry.versions import ModelVersion, Registry
from tasks.serving.request_ids import RequestIds, request_id_key
from tasks.serving.schema import conform_inputs, input_schema


class PartitionScore(BaseModel):
    source: str  # the input file
    rows: int
    output_key: str | None  # None: quarantined
    quarantine_key: str | None = None
    reason: str | None = None
    logged_key: str | None = None


def output_key(output: str, ref: BatchRef) -> str:
    """The predictions file of one input file: named after it (a retry writes the same key)."""
    digest = hashlib.sha256(f"{ref.store_uri}/{ref.key}".encode()).hexdigest()[:16]
    stem = ref.key.rsplit("/", 1)[-1].split(".", 1)[0]
    return f"{output.rstrip('/')}/{stem}-{digest}.parquet"


def score_partition(
    ref: BatchRef,
    data: bytes,
    registry: Registry,
    version: ModelVersion,
    config: DatasetConfig,
    output: str,
    id_column: str | None,
    log_predictions: bool,
    store: ArtifactStore,
) -> PartitionScore:
    """Score one input file; quarantine it (with the reason) if it fails the input contract."""
    try:
        try:
            raw = read_batch(ref, data)
        except Exception as exc:  # noqa: BLE001 - any parse error means an unreadable file
            raise BadInput(f"unreadable {ref.format}: {type(exc).__name__}: {str(exc)[:300]}") from None
        if id_column is not None and id_column not in raw.columns:
            raise BadInput(
                f"id_column {id_column!r} is not a column of {ref.key} (columns: {raw.columns[:20]})"
            )
        # CSV (and values from a partition path) carry no types: their text is parsed, strictly
        inputs = conform_inputs(
            raw, config, allow_extra=True, parse_text=ref.format != "parquet" or bool(ref.partition)
        )
    except BadInput as exc:
        return _quarantined(ref, data, str(exc), output, store)
    transform, booster = registry.load_transform(version), registry.load_booster(version)
    model_output = predict(booster, transform.to_matrix(inputs))
    row_ids = (
        raw[id_column].cast(pl.String)
        if id_column is not None
        else pl.Series([f"{ref.key}#{i}" for i in range(raw.height)], dtype=pl.String)
    )
    scored = pl.DataFrame(
        {"row_id": row_ids, **answer_columns(transform.task, model_output, version.threshold)}
    ).with_columns(
        pl.lit(config.model_name, dtype=pl.String).alias("model_name"),
        pl.lit(version.version, dtype=pl.Int64).alias("model_version"),
    )
    logged_key = None
    if log_predictions:
        ids = RequestIds(request_id_key(store, config.model_name)).issue(raw.height)
        scored = scored.with_columns(pl.Series("request_id", ids, dtype=pl.String))
        logged_key = _log(scored, inputs, config, ref, output, store)
    key = output_key(output, ref)
    store.write_parquet(key, scored.select(pl.exclude("__output")))
    return PartitionScore(source=ref.key, rows=raw.height, output_key=key, logged_key=logged_key)


def answer_columns(task: LearningTask, output: np.ndarray, threshold: float) -> dict[str, pl.Series]:
    """A scored file's answer columns by target kind: the probability of yes and the label at the
    version's threshold; the value; or the most probable class, its probability and one
    ``probability_<class>`` column per class. ``__output`` (the model's whole output, for the log) is
    dropped before the file is written."""
    rows = output.reshape(len(output), -1).tolist()
    kept = {"__output": pl.Series("__output", rows, dtype=pl.List(pl.Float64))}
    if task.kind == "binary":
        return {
            "probability": pl.Series(output, dtype=pl.Float64),
            "label": pl.Series((output >= threshold).astype(np.int8), dtype=pl.Int8),
        }
    if task.kind == "regression":
        return {"value": pl.Series(output, dtype=pl.Float64), **kept}
    chosen = np.argmax(output, axis=1)
    return {
        "predicted_class": pl.Series(np.asarray(task.classes, dtype=object)[chosen], dtype=pl.String),
        "probability": pl.Series(output.max(axis=1), dtype=pl.Float64),
        "label": pl.Series(chosen, dtype=pl.Int8),  # the class's code: the prediction log's label
        **{f"probability_{c}": pl.Series(p, dtype=pl.Float64) for c, p in zip(task.classes, output.T)},
        **kept,
    }


def _log(
    scored: pl.DataFrame,
    inputs: pl.DataFrame,
    config: DatasetConfig,
    ref: BatchRef,
    output: str,
    store: ArtifactStore,
) -> str:
    """The scored rows as a prediction-log file of the model (arm ``batch``), under the hour they were
    scored; its name comes from the output file, so a retry replaces it."""
    now = datetime.now(timezone.utc)
    schema = prediction_log_schema(input_schema(config))
    rows = inputs.with_columns(
        pl.lit(config.model_name, dtype=pl.String).alias("model_name"),
        scored["request_id"],
        scored["row_id"].alias("correlation_id"),
        pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("ts"),
        *(scored[c] for c in ("probability", "label") if c in scored.columns),
        *([scored["__output"].alias("output")] if "__output" in scored.columns else []),
        scored["model_version"],
        pl.lit("batch", dtype=pl.String).alias("arm"),
    )
    rows = rows.with_columns(
        pl.lit(None, dtype=dtype).alias(name) for name, dtype in schema.items() if name not in rows.columns
    ).select(list(schema))
    name = output_key(output, ref).rsplit("/", 1)[-1].removesuffix(".parquet")
    key = log_file_key(
        log_prefix(PREDICTIONS, config.model_name), f"{now:%Y-%m-%d}", f"{now:%H}", f"batch-{name}"
    )
    store.write_parquet(key, rows)
    return key


def _quarantined(
    ref: BatchRef, data: bytes, reason: str, output: str, store: ArtifactStore
) -> PartitionScore:
    name = output_key(output, ref).rsplit("/", 1)[-1].removesuffix(".parquet")
    prefix = f"{output.rstrip('/')}/quarantine/{name}"
    ext = "parquet" if ref.format == "parquet" else "csv"
    store.write_bytes(f"{prefix}/source.{ext}", data)
    store.write_json(f"{prefix}/reason.json", {"source": ref.model_dump(), "reason": reason})
    return PartitionScore(source=ref.key, rows=0, output_key=None, quarantine_key=prefix, reason=reason)
