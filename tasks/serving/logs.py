"""The prediction and feedback logs: buffered off the request path, flushed to the artifact store as
Parquet partitioned by model, date and hour (by size, by time, and at shutdown), read back lazily.

Layout: ``predictions/<model>/date=…/hour=…/*.parquet`` and ``feedback/<model>/…``: services of
several models share one store, and whatever reads one model's log lists only that model's files."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import polars as pl

from tasks.core.store import ArtifactStore

log = logging.getLogger("driftloop.serving")


class PartitionedLog:
    """Append rows in memory; a background thread writes them to ``<prefix>/date=…/hour=…/*.parquet``."""

    def __init__(
        self,
        store: ArtifactStore,
        prefix: str,
        schema: dict[str, pl.DataType],
        max_rows: int = 2000,
        max_seconds: float = 5.0,
    ):
        self.store, self.prefix, self.schema = store, prefix, schema
        self.max_rows, self.max_seconds = max_rows, max_seconds
        self._rows: list[dict[str, Any]] = []
        self._frames: list[pl.DataFrame] = []
        self._buffered = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{prefix}-flusher", daemon=True)
        self._thread.start()
        self.flushed_rows = 0
        self.errors = 0

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Buffer rows given as dicts (cheapest for a few rows)."""
        with self._lock:
            self._rows.extend(rows)
            self._buffered += len(rows)
            full = self._buffered >= self.max_rows
        if full:
            self._wake.set()

    def append_frame(self, frame: pl.DataFrame) -> None:
        """Buffer a frame whose columns match the schema (cheapest for large batches)."""
        with self._lock:
            self._frames.append(frame)
            self._buffered += frame.height
            full = self._buffered >= self.max_rows
        if full:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.max_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is buffered; on failure keep it for the next attempt (nothing is dropped)."""
        with self._flush_lock:
            with self._lock:
                rows, frames, self._rows, self._frames, self._buffered = self._rows, self._frames, [], [], 0
            if not rows and not frames:
                return 0
            try:
                parts = [pl.DataFrame(rows, schema=self.schema)] if rows else []
                parts += [f.select(list(self.schema)).cast(self.schema) for f in frames]
                frame = pl.concat(parts)
                for (date, hour), part in (
                    frame.with_columns(
                        pl.col("ts").dt.strftime("%Y-%m-%d").alias("__date"),
                        pl.col("ts").dt.strftime("%H").alias("__hour"),
                    )
                    .partition_by(["__date", "__hour"], as_dict=True)
                    .items()
                ):
                    name = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
                    key = f"{self.prefix}/date={date}/hour={hour}/{name}"
                    self.store.write_parquet(key, part.drop("__date", "__hour"))
                self.flushed_rows += frame.height
                return frame.height
            except Exception as exc:  # noqa: BLE001 - keep the rows, report, try again later
                self.errors += 1
                log.error("driftloop: could not flush %s rows: %s", self.prefix, exc)
                with self._lock:
                    self._rows[:0] = rows
                    self._frames[:0] = frames
                    self._buffered += len(rows) + sum(f.height for f in frames)
                return 0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def prediction_log_schema(inputs: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The prediction log's columns: who and when, the raw ``inputs``, the answer, and during a canary
    the other arm's score."""
    return {
        "model_name": pl.String(),  # services of several models may share a store
        "request_id": pl.String(),  # issued by the service
        "correlation_id": pl.String(),  # the caller's own id, as sent
        "ts": pl.Datetime("us", "UTC"),
        **inputs,
        "probability": pl.Float64(),
        "label": pl.Int8(),
        "model_version": pl.Int64(),
        "arm": pl.String(),
        "shadow_version": pl.Int64(),
        "shadow_probability": pl.Float64(),
        "paired_version": pl.Int64(),  # during a canary: the other arm's model and its score
        "paired_probability": pl.Float64(),
    }


FEEDBACK_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "outcome": pl.Int8(),
    "correction": pl.Boolean(),
    "source": pl.String(),  # who reported it: the feedback token's holder, or no auth
}
PREDICTION_COLUMNS = ["request_id", "ts", "model_version", "probability"]
FEEDBACK_COLUMNS = ["request_id", "ts", "outcome", "correction"]
# during a canary, each row also carries the other arm's model and score (a paired comparison)
CANARY_COLUMNS = [*PREDICTION_COLUMNS, "paired_version", "paired_probability"]


PREDICTIONS, FEEDBACK = "predictions", "feedback"


def log_prefix(kind: str, model_name: str) -> str:
    """Where ``model_name``'s prediction or feedback log lives (``kind``: predictions or feedback)."""
    if kind not in (PREDICTIONS, FEEDBACK):
        raise ValueError(f"unknown log {kind!r}")
    return f"{kind}/{model_name}"


def log_keys(store: ArtifactStore, kind: str, model_name: str) -> list[str]:
    """The Parquet files of one model's prediction or feedback log, in key order."""
    return [k for k in store.list(log_prefix(kind, model_name)) if k.endswith(".parquet")]


def read_log(
    store: ArtifactStore,
    kind: str,
    model_name: str,
    columns: list[str] | None = None,
    request_ids: list[str] | None = None,
) -> pl.DataFrame:
    """What ``model_name``'s service flushed to its prediction or feedback log (empty when nothing was
    logged yet). The scan is lazy: only ``columns`` are read, and only rows of ``request_ids`` kept,
    so callers that need a little of a large log do not read all of it. A column no file has yet (one
    added to the log later) reads as nulls."""
    keys = log_keys(store, kind, model_name)
    if not keys:
        return pl.DataFrame()
    scan = of_model(store.scan_parquet(keys), model_name)
    if request_ids is not None:
        scan = scan.filter(pl.col("request_id").is_in(pl.Series(request_ids, dtype=pl.String).implode()))
    if columns:
        present = scan.collect_schema()
        scan = scan.select(pl.col(c) if c in present else pl.lit(None).alias(c) for c in columns)
    return scan.collect()


def of_model(scan: pl.LazyFrame, model_name: str | None) -> pl.LazyFrame:
    """Only the prediction-log rows of ``model_name`` (services of several models may share a store;
    rows logged before the log named its model are kept)."""
    if model_name is None or "model_name" not in scan.collect_schema():
        return scan
    return scan.filter(pl.col("model_name").is_null() | (pl.col("model_name") == model_name))


def outcome_per_request(feedback: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """The outcome that counts for each request id: the first one reported, unless a correction was
    sent explicitly (``correction``), in which case the latest correction. A caller repeating or
    contradicting an outcome without saying so cannot rewrite a label. Logs written before the
    ``correction`` column existed read as no corrections."""
    lf = feedback.lazy()
    if "correction" not in lf.collect_schema():
        lf = lf.with_columns(pl.lit(False).alias("correction"))
    lf = lf.with_columns(pl.col("correction").fill_null(False))
    return (
        lf.sort("ts", maintain_order=True)
        .group_by("request_id", maintain_order=True)
        .agg(
            pl.when(pl.col("correction").any())
            .then(pl.col("outcome").filter(pl.col("correction")).last())
            .otherwise(pl.col("outcome").first())
            .alias("outcome")
        )
    )
