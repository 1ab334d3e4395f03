"""The prediction and feedback logs: their schemas, where they live, and how they are read back.

The service writes them through ``tasks.serving.spool.SpooledLog`` (durable before a request is
answered); the compaction flow merges a day's small files into one.

Layout: ``predictions/<model>/date=…/hour=…/*.parquet`` and ``feedback/<model>/…``: services of
several models share one store, and whatever reads one model's log lists only that model's files.
Readers that need a period list only its dates (``since``), so a long log costs them nothing."""

from __future__ import annotations

import re
from datetime import date

import polars as pl

from tasks.core.store import ArtifactStore


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
        # classes and numbers: the model's whole output (every class's probability, or the value), and
        # the other arm's during a canary or in shadow mode (yes/no models leave them empty)
        "output": pl.List(pl.Float64()),
        "paired_output": pl.List(pl.Float64()),
        "shadow_output": pl.List(pl.Float64()),
    }


FEEDBACK_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "outcome": pl.Int8(),
    "correction": pl.Boolean(),
    "source": pl.String(),  # who reported it: the feedback token's holder, or no auth
}
OUTCOME_TYPES = {"binary": pl.Int8(), "regression": pl.Float64(), "multiclass": pl.String()}


def feedback_log_schema(kind: str) -> dict[str, pl.DataType]:
    """The feedback log's columns for a target of ``kind``: the outcome is 0/1, the observed number, or
    the observed class's name (not a code: a retrain may see other classes)."""
    return {**FEEDBACK_SCHEMA, "outcome": OUTCOME_TYPES[kind]}


# what the service refused by the input contract (a data-quality signal for monitoring): when, where,
# how many rows, and the message the caller got (values in it cut and escaped)
REJECTIONS_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "endpoint": pl.String(),
    "rows": pl.Int64(),
    "reason": pl.String(),
}
PREDICTION_COLUMNS = ["request_id", "ts", "model_version", "probability"]
FEEDBACK_COLUMNS = ["request_id", "ts", "outcome", "correction"]
# during a canary, each row also carries the other arm's model and score (a paired comparison); in
# shadow mode, the challenger's (it scores every row, the champion answers)
CANARY_COLUMNS = [
    *PREDICTION_COLUMNS,
    "label",  # what the caller was answered: feedback may depend on it (tasks.monitoring.performance)
    "paired_version",
    "paired_probability",
    "shadow_version",
    "shadow_probability",
]


PREDICTIONS, FEEDBACK, REJECTIONS = "predictions", "feedback", "rejections"


def log_prefix(kind: str, model_name: str) -> str:
    """Where ``model_name``'s prediction, feedback or rejection log lives."""
    if kind not in (PREDICTIONS, FEEDBACK, REJECTIONS):
        raise ValueError(f"unknown log {kind!r}")
    return f"{kind}/{model_name}"


_DATE_PART = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")
_UNIT = re.compile(r"^(.*/date=\d{4}-\d{2}-\d{2})(/hour=\d{2})?/[^/]+$")
COMPACTED = "compacted-"  # the name of a file compaction merged (``compacted-<digest>.parquet``)


def log_file_key(prefix: str, day: str, hour: str, name: str) -> str:
    """A log file's key: ``<prefix>/date=<YYYY-MM-DD>/hour=<HH>/<name>.parquet`` (``prefix`` from
    ``log_prefix``). Writers name files after what they hold, so writing one twice overwrites it."""
    return f"{prefix}/date={day}/hour={hour}/{name}.parquet"


def compacted_key(unit: str, digest: str) -> str:
    """The key of the file that replaces a compaction ``unit``'s files (a day, or an hour of today)."""
    return f"{unit}/{COMPACTED}{digest}.parquet"


def is_compacted(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith(COMPACTED)


def log_unit(key: str) -> tuple[str, str] | None:
    """A log key's (day directory, hour directory or ``""``); None outside the partitioned layout."""
    found = _UNIT.match(key)
    return (found.group(1), found.group(2) or "") if found else None


def key_date(key: str) -> date | None:
    """The date partition a log key lies in (None outside the partitioned layout)."""
    found = _DATE_PART.search(key)
    return date.fromisoformat(found.group(1)) if found else None


def log_keys(
    store: ArtifactStore, kind: str, model_name: str, since: date | None = None, until: date | None = None
) -> list[str]:
    """The Parquet files of one model's prediction or feedback log, in key order; with ``since`` /
    ``until`` only those of the date partitions in that range (inclusive)."""
    keys = [k for k in store.list(log_prefix(kind, model_name)) if k.endswith(".parquet")]
    if since is None and until is None:
        return keys
    dated = [(k, key_date(k)) for k in keys]
    return [
        k for k, d in dated if d is None or ((since is None or d >= since) and (until is None or d <= until))
    ]


def read_log(
    store: ArtifactStore,
    kind: str,
    model_name: str,
    columns: list[str] | None = None,
    request_ids: list[str] | None = None,
    since: date | None = None,
) -> pl.DataFrame:
    """What ``model_name``'s service flushed to its prediction or feedback log (empty when nothing was
    logged yet). The scan is lazy: only ``columns`` are read, and only rows of ``request_ids`` kept,
    so callers that need a little of a large log do not read all of it; with ``since`` only the date
    partitions from that day on are listed. A column no file has yet (one added to the log later)
    reads as nulls."""
    keys = log_keys(store, kind, model_name, since=since)
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
