"""The monitoring window: which prediction-log files are new, and their profile per day.

The watermark is the set of processed keys, kept in the store, so reruns never double-count; the
window is profiled with whylogs once per day it spans, each day merged into
``profiles/<model>/daily/<date>.bin``. ``MonitorReport`` is what a monitoring run concludes.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import BaseModel

from tasks.core.store import ArtifactStore
from tasks.monitoring.drift import ColumnDrift
from tasks.monitoring.performance import LivePerformance
from tasks.monitoring.profile import load_profile, profile_frame
from tasks.serving.logs import PREDICTIONS, log_keys


class MonitorReport(BaseModel):
    model_name: str
    champion: int | None
    files: list[str]
    rows: int
    window: tuple[str, str] | None
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


def unprocessed_files(store: ArtifactStore, model_name: str) -> list[str]:
    done = (
        set(store.read_json(watermark_key(model_name))["processed"])
        if store.exists(watermark_key(model_name))
        else set()
    )
    return [k for k in log_keys(store, PREDICTIONS, model_name) if k not in done]


def mark_processed(store: ArtifactStore, model_name: str, keys: list[str]) -> None:
    key = watermark_key(model_name)
    done = store.read_json(key)["processed"] if store.exists(key) else []
    store.write_json(key, {"processed": sorted(set(done) | set(keys))})


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
