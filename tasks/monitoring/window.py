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

from tasks.core.logs import PREDICTIONS, REJECTIONS, key_date, log_keys, of_model, read_log
from tasks.core.profile import load_profile, profile_frame
from tasks.core.store import ArtifactStore
from tasks.core.target import LearningTask
from tasks.model.features import FittedTransform
from tasks.monitoring.drift import ColumnDrift
from tasks.monitoring.performance import LivePerformance


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
    estimated_drop: list[str] = []  # CBPE: a drop the calibrated scores promise, before any label
    retrain: list[str] = []  # why a retrain is needed (drift, degradation, estimated drop); empty: not
    retrain_reason: str = ""
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


class WindowPlan(BaseModel):
    """What a monitoring run judges: rows logged in (``start``, ``end``], in these files, grouped by
    their date partition (a request id is only ever repeated inside one: compaction merges a day's
    files), so each group can be read and profiled on its own, on any worker."""

    start: datetime | None
    end: datetime
    partitions: list[list[str]]


def plan_window(
    store: ArtifactStore, model_name: str, lateness_seconds: float, now: datetime | None = None
) -> WindowPlan:
    """The predictions logged after the watermark and at least ``lateness_seconds`` ago, as files by
    date partition; ``end`` is the time they run up to (the next watermark)."""
    start = read_watermark(store, model_name)
    end = (now or datetime.now(timezone.utc)) - timedelta(seconds=lateness_seconds)
    keys = log_keys(store, PREDICTIONS, model_name, since=start.date() if start else None, until=end.date())
    by_date: dict[Any, list[str]] = {}
    for key in keys:
        by_date.setdefault(key_date(key), []).append(key)
    return WindowPlan(start=start, end=end, partitions=list(by_date.values()))


def read_window(store: ArtifactStore, model_name: str, plan: WindowPlan, keys: list[str]) -> pl.DataFrame:
    """The plan's rows in ``keys`` (one date partition), each request id once (a log file being
    compacted can be listed beside its compacted copy)."""
    scan = of_model(store.scan_parquet(keys), model_name).filter(pl.col("ts") <= plan.end)
    if plan.start is not None:
        scan = scan.filter(pl.col("ts") > plan.start)
    return scan.unique("request_id", keep="first", maintain_order=True).collect()


def unjudged_predictions(
    store: ArtifactStore, model_name: str, lateness_seconds: float, now: datetime | None = None
) -> tuple[pl.DataFrame, datetime]:
    """Every row of the window in one frame (small windows, tests), and the time they run up to."""
    plan = plan_window(store, model_name, lateness_seconds, now)
    frames = [read_window(store, model_name, plan, keys) for keys in plan.partitions]
    return (pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()), plan.end


def advance_watermark(store: ArtifactStore, model_name: str, through: datetime) -> None:
    store.write_json(watermark_key(model_name), {"through": through.isoformat()})


def logged_answer(task: LearningTask) -> pl.Expr:
    """The logged prediction as the drift reference holds it (``LearningTask.answer``): the probability
    of yes, the value, or the chosen class's name."""
    if task.kind == "regression":
        return pl.col("output").list.first().alias("prediction")
    if task.kind == "multiclass":
        codes = list(range(len(task.classes)))
        return (
            pl.col("label")
            .cast(pl.Int64)
            .replace_strict(codes, task.classes, default=None, return_dtype=pl.String)
            .alias("prediction")
        )
    return pl.col("probability").alias("prediction")


def window_view(
    frame: pl.DataFrame, input_columns: list[str], time_column: str | None, task: LearningTask | None = None
) -> Any:
    """The window's profile, shaped like the reference: raw inputs (no time column) + ``prediction``."""
    cols = [c for c in input_columns if c != time_column and c in frame.columns]
    return profile_frame(frame.select(*cols, logged_answer(task or LearningTask())))


class UnseenLevels(BaseModel):
    values: int  # non-null values of a categorical input in the window
    unseen: int  # of which never seen in training
    examples: list[str] = []


class WindowPart(BaseModel):
    """One date partition of the window, profiled where it was read: its rows and time span, a whylogs
    profile per day (by prediction time), and the counts data quality needs."""

    rows: int = 0
    ts_min: datetime | None = None
    ts_max: datetime | None = None
    days: dict[str, bytes] = {}
    columns: list[str] = []  # the model's inputs the log holds
    nulls: dict[str, int] = {}  # per input: null (or absent) in this many rows
    unseen: dict[str, UnseenLevels] = {}


def profile_partition(frame: pl.DataFrame, transform: FittedTransform, time_column: str | None) -> WindowPart:
    """A date partition's rows profiled per day, with their null and unseen-level counts."""
    if frame.height == 0:
        return WindowPart()
    inputs = transform.spec.input_columns
    days = {}
    for (day,), part in (
        frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d").alias("__day"))
        .partition_by(["__day"], as_dict=True)
        .items()
    ):
        days[str(day)] = window_view(part, inputs, time_column, transform.task).serialize()
    present = [c for c in inputs if c in frame.columns]
    unseen = {}
    for col, levels in transform.categories.items():
        if col not in frame.columns:
            continue
        values = frame[col].drop_nulls().cast(pl.String)
        new = values.filter(~values.is_in(pl.Series(levels, dtype=pl.String)))
        unseen[col] = UnseenLevels(
            values=values.len(), unseen=new.len(), examples=new.unique(maintain_order=True).head(3).to_list()
        )
    return WindowPart(
        rows=frame.height,
        ts_min=frame["ts"].min(),
        ts_max=frame["ts"].max(),
        days=days,
        columns=present,
        nulls={c: frame[c].null_count() if c in frame.columns else frame.height for c in inputs},
        unseen=unseen,
    )


def merge_parts(parts: list[WindowPart]) -> WindowPart:
    """The window's totals (``days``: each day's profiles merged, as serialized views)."""
    parts = [p for p in parts if p.rows]
    if not parts:
        return WindowPart()
    days: dict[str, Any] = {}
    for part in parts:
        for day, data in part.days.items():
            view = load_profile(data)
            days[day] = days[day].merge(view) if day in days else view
    unseen: dict[str, UnseenLevels] = {}
    for part in parts:
        for col, u in part.unseen.items():
            seen = unseen.get(col, UnseenLevels(values=0, unseen=0))
            unseen[col] = UnseenLevels(
                values=seen.values + u.values,
                unseen=seen.unseen + u.unseen,
                examples=list(dict.fromkeys([*seen.examples, *u.examples]))[:3],
            )
    return WindowPart(
        rows=sum(p.rows for p in parts),
        ts_min=min(p.ts_min for p in parts),
        ts_max=max(p.ts_max for p in parts),
        days={d: v.serialize() for d, v in sorted(days.items())},
        columns=sorted(set().union(*(p.columns for p in parts))),
        nulls={c: sum(p.nulls.get(c, 0) for p in parts) for c in parts[0].nulls},
        unseen=unseen,
    )


def store_daily(store: ArtifactStore, model_name: str, window: WindowPart) -> Any:
    """Merge each day's profile into ``profiles/<model>/daily/<date>.bin``; return the whole window's
    profile (the days merged)."""
    whole = None
    for day, data in window.days.items():
        view = load_profile(data)
        key = f"profiles/{model_name}/daily/{day}.bin"
        stored = load_profile(store.read_bytes(key)).merge(view) if store.exists(key) else view
        store.write_bytes(key, stored.serialize())
        whole = view if whole is None else whole.merge(view)
    return whole


def refused_in(store: ArtifactStore, model_name: str, start: datetime | None, end: datetime) -> pl.DataFrame:
    """The rejection log's rows in (``start``, ``end``]: requests the service refused by the contract."""
    refused = read_log(store, REJECTIONS, model_name, since=start.date() if start else None)
    if refused.is_empty():
        return refused
    in_window = pl.col("ts") <= end
    return refused.filter(in_window if start is None else in_window & (pl.col("ts") > start))
