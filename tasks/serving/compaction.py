"""Compaction and retention of the prediction, feedback and rejection logs, so storage stays small.

Each service worker ships a small Parquet file every few seconds (``log_max_seconds``): ~17,000 files
a day per worker, which makes every reader slow and S3 requests costly. Compaction merges them:

- a past day becomes one file (``<kind>/<model>/date=D/compacted-<id>.parquet``); today's complete
  and current hours become one file per hour, merged into the day's file once the day is over;
- rows are deduplicated (a prediction by its request id; a feedback row when every field repeats),
  so a spool segment shipped twice, or a compaction interrupted half way, leaves no double rows;
- rows are sorted by request id (the rejection log, which has none, by time), so a lookup of one id
  (the id carries its date: see ``tasks.serving.request_ids``) reads one day's file and, inside it,
  only the row groups whose min/max statistics can hold the id.

It is safe against services writing at the same time: a run merges the files it listed and deletes
exactly those, never a file shipped after it listed; the merged file's name is a hash of its sources,
so two runs over the same files write the same object. Re-running is idempotent. Date partitions
older than ``logs.retention_days`` are deleted.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import polars as pl
from pydantic import BaseModel

from tasks.core.logs import (
    FEEDBACK,
    PREDICTIONS,
    REJECTIONS,
    compacted_key,
    is_compacted,
    key_date,
    log_keys,
    log_unit,
)
from tasks.core.store import ArtifactStore

LOG_KINDS = (PREDICTIONS, FEEDBACK, REJECTIONS)  # every log a service ships


class CompactionResult(BaseModel):
    model_name: str
    kind: str
    files_before: int
    files_after: int
    rows_rewritten: int
    duplicates_dropped: int
    partitions_expired: int


def compaction_units(keys: list[str], today: date) -> dict[str, list[str]]:
    """Group log keys into what becomes one file each: a day before ``today``, an hour of ``today``."""
    units: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        found = log_unit(key)
        if found is None:
            continue  # not in the partitioned layout: leave it alone
        day_dir, hour_dir = found
        today_key = key_date(key) == today
        units[day_dir + hour_dir if today_key and hour_dir else day_dir].append(key)
    return dict(units)


def compact_unit(store: ArtifactStore, unit: str, keys: list[str], kind: str) -> tuple[int, int]:
    """Merge ``keys`` into one file in ``unit``; returns (rows written, duplicate rows dropped)."""
    if len(keys) == 1 and is_compacted(keys[0]):
        return 0, 0  # already one compacted file
    frame = store.scan_parquet(sorted(keys)).collect()
    before = frame.height
    if kind == PREDICTIONS:
        frame = frame.unique("request_id", keep="first", maintain_order=True)
    else:
        frame = frame.unique(maintain_order=True)
    frame = frame.sort(*(["request_id"] if "request_id" in frame.columns else []), "ts", nulls_last=True)
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    merged = compacted_key(unit, digest)
    store.write_parquet(merged, frame)  # first the merged file, then the sources: never a gap
    store.delete([k for k in keys if k != merged])
    return frame.height, before - frame.height


def compact_log(
    store: ArtifactStore,
    kind: str,
    model_name: str,
    retention_days: int,
    now: datetime | None = None,
) -> CompactionResult:
    """Expire, then compact, one model's prediction, feedback or rejection log."""
    if kind not in LOG_KINDS:
        raise ValueError(f"unknown log {kind!r}")
    now = now or datetime.now(timezone.utc)
    keys = log_keys(store, kind, model_name)
    oldest_kept = now.date() - timedelta(days=retention_days)
    expired = [k for k in keys if (d := key_date(k)) is not None and d < oldest_kept]
    if expired:
        store.delete(expired)
    kept = [k for k in keys if k not in set(expired)]
    rewritten = dropped = 0
    for unit, unit_keys in sorted(compaction_units(kept, now.date()).items()):
        rows, dups = compact_unit(store, unit, unit_keys, kind)
        rewritten, dropped = rewritten + rows, dropped + dups
    return CompactionResult(
        model_name=model_name,
        kind=kind,
        files_before=len(keys),
        files_after=len(log_keys(store, kind, model_name)),
        rows_rewritten=rewritten,
        duplicates_dropped=dropped,
        partitions_expired=len({key_date(k) for k in expired}),
    )


def log_row_count(store: ArtifactStore, kind: str, model_name: str) -> int:
    """Rows in one model's log (for checks that compaction keeps every row)."""
    keys = log_keys(store, kind, model_name)
    return store.scan_parquet(keys).select(pl.len()).collect().item() if keys else 0
