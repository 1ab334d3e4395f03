"""The monitoring window: the predictions logged since the last run, and their profile per day.

The watermark is one timestamp per model (``state/monitor/<model>.json``: ``through``), the newest
prediction time judged: a run reads the date partitions from it on and the rows after it, so reruns
never double-count and the state stays one line however long the log grows (it used to be the list
of every file ever processed). A run judges rows up to ``now - logs.lateness_seconds`` only, so a
service's spool still shipping its last seconds of rows is not skipped; the rest wait for the next
run. The window is profiled with whylogs once per day it spans, each day merged into
``profiles/<model>/daily/<date>.bin``. ``MonitorReport`` is what a monitoring run concludes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
from pydantic import BaseModel

from tasks.core.store import ArtifactStore
from tasks.monitoring.drift import ColumnDrift
from tasks.monitoring.performance import LivePerformance
from tasks.monitoring.profile import load_profile, profile_frame
from tasks.serving.logs import PREDICTIONS, log_keys, of_model


class MonitorReport(BaseModel):
    model_name: str
    champion: int | None
    rows: int
    window: tuple[str, str] | None
    through: datetime | None = None  # the watermark to store once the run succeeds (None: unchanged)
    drift: list[ColumnDrift] = []
    drifted: list[str] = []  # groups of columns that drifted, most first (reported)
    drift_detected: bool = False  # drift that takes the model outside what it learned: starts a retrain
    drift_reason: str = ""
    quality_problems: list[str] = []
    performance: list[LivePerformance] = []
    degraded: list[str] = []
    note: str = ""


def watermark_key(model_name: str) -> str:
    return f"state/monitor/{model_name}.json"


def read_watermark(store: ArtifactStore, model_name: str) -> datetime | None:
    """The newest prediction time already judged (None: nothing judged yet). A watermark of the old
    kind (a list of processed files) becomes the newest time in the files it lists."""
    key = watermark_key(model_name)
    if not store.exists(key):
        return None
    doc = store.read_json(key)
    if doc.get("through"):
        return datetime.fromisoformat(doc["through"])
    listed = [k for k in doc.get("processed", []) if store.exists(k)]
    if not listed:
        return None
    newest = store.scan_parquet(listed).select(pl.col("ts").max()).collect().item()
    return newest.replace(tzinfo=newest.tzinfo or timezone.utc) if newest else None


def unjudged_predictions(
    store: ArtifactStore, model_name: str, lateness_seconds: float, now: datetime | None = None
) -> tuple[pl.DataFrame, datetime]:
    """The predictions logged after the watermark and at least ``lateness_seconds`` ago (each request
    id once: a log file being compacted can be listed beside its compacted copy), and the time they
    run up to (the next watermark)."""
    start = read_watermark(store, model_name)
    end = (now or datetime.now(timezone.utc)) - timedelta(seconds=lateness_seconds)
    keys = log_keys(store, PREDICTIONS, model_name, since=start.date() if start else None, until=end.date())
    if not keys:
        return pl.DataFrame(), end
    scan = of_model(store.scan_parquet(keys), model_name).filter(pl.col("ts") <= end)
    if start is not None:
        scan = scan.filter(pl.col("ts") > start)
    return scan.unique("request_id", keep="first", maintain_order=True).collect(), end


def advance_watermark(store: ArtifactStore, model_name: str, through: datetime) -> None:
    store.write_json(watermark_key(model_name), {"through": through.isoformat()})


def window_view(frame: pl.DataFrame, input_columns: list[str], time_column: str | None) -> Any:
    """The window's profile, shaped like the reference: raw inputs (no time column) + ``prediction``."""
    cols = [c for c in input_columns if c != time_column and c in frame.columns]
    return profile_frame(frame.select(*cols, pl.col("probability").alias("prediction")))


def profile_and_store_daily(
    store: ArtifactStore,
    model_name: str,
    frame: pl.DataFrame,
    input_columns: list[str],
    time_column: str | None,
) -> Any:
    """Profile the window once per day it spans, merge each day into ``profiles/<model>/daily/<date>.bin``,
    and return the whole window's profile (the days merged)."""
    window = None
    for (day,), part in (
        frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d").alias("__day"))
        .partition_by(["__day"], as_dict=True)
        .items()
    ):
        view = window_view(part, input_columns, time_column)
        key = f"profiles/{model_name}/daily/{day}.bin"
        stored = load_profile(store.read_bytes(key)).merge(view) if store.exists(key) else view
        store.write_bytes(key, stored.serialize())
        window = view if window is None else window.merge(view)
    return window
