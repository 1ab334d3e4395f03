"""A log that loses nothing it acknowledged: rows are appended to a local spool file and fsynced before
the request that produced them is answered; a background thread ships closed spool segments to the
artifact store as Parquet (``<prefix>/date=…/hour=…/<segment>.parquet``) and deletes them once stored.

Why a spool and not an in-memory buffer: a worker killed with ``kill -9`` (OOM killer, ECS stopping a
task, a crash in a native library) loses whatever it buffered; measured before this existed, 32% of 500
predictions made just before a ``kill -9`` were never logged, and their feedback later read as unknown.

Cheap on the request path: a few rows are one JSON line (~20 µs), a columnar batch one Arrow IPC
block; an async endpoint awaits a syncer thread's fdatasync (group commit: one covers every request
written meanwhile), so the event loop never blocks on the disk.

How it stays exactly-once:
- every segment file belongs to one *owner directory* per process, created already locked (``flock``)
  and renamed into place; the kernel drops the lock when the process dies, however it dies;
- a live worker claims the directories nobody holds (a dead worker's) and ships their segments;
- a segment's store key is derived from its file name, so shipping it twice (a crash between the
  store write and the local delete) overwrites the same object instead of adding a copy;
- records are length-prefixed and checksummed; a torn last record (the process died inside
  ``write``) was never fsynced, so never acknowledged, and is discarded.

The spool is keyed by the store it ships to: two services of different stores on one host never ship
each other's rows. On ECS the spool is the task's disk: it survives a process restart inside the task;
mount a volume at ``serving.spool_dir`` to survive the task being replaced.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from tasks.core.logs import log_file_key
from tasks.core.store import ArtifactStore

log = logging.getLogger("driftloop.serving")

_HEADER = struct.Struct("<IIc")  # payload length, crc32 of the payload, kind
_JSON, _ARROW = b"J", b"A"  # a list of rows as JSON, or an Arrow IPC stream
_LOCK = ".lock"
_OPEN, _CLOSED = ".open", ".spool"  # a segment being written, and one ready to ship


def spool_root(spool_dir: Path, store_uri: str) -> Path:
    """The spool of one artifact store (a short hash of its URI names it)."""
    return Path(spool_dir) / hashlib.sha256(store_uri.encode()).hexdigest()[:12]


def _json_value(value: Any) -> Any:
    """Times as UTC text with microseconds (one format, so the reader parses every row alike)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime(_TIME_FORMAT)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot log a {type(value).__name__}")


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"  # Python strftime
_POLARS_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f"  # the same, as Polars (chrono) reads it


def _frame_of_rows(rows: list[dict], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """JSON-decoded rows as a frame of ``schema`` (times and dates arrive as text)."""
    as_text = {c: pl.String() if isinstance(t, (pl.Datetime, pl.Date)) else t for c, t in schema.items()}
    frame = pl.DataFrame(rows, schema=as_text)
    return frame.with_columns(
        pl.col(c).str.to_datetime(_POLARS_TIME_FORMAT, time_unit="us").dt.replace_time_zone("UTC")
        if isinstance(t, pl.Datetime)
        else pl.col(c).str.to_date()
        for c, t in schema.items()
        if isinstance(t, (pl.Datetime, pl.Date))
    ).cast(schema)


def read_segment(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Every complete record of a segment file as one frame, in order; a torn or corrupt tail is dropped.
    Consecutive JSON records (single requests) are decoded together: one frame for thousands of rows,
    not one per row (2,000 rows: 0.03 s instead of 2.3 s, the same frame)."""
    frames: list[pl.DataFrame] = []
    rows: list[dict] = []
    for kind, payload in _records(path.read_bytes(), path):
        if kind == _JSON:
            rows.extend(json.loads(payload))
            continue
        if rows:
            frames.append(_frame_of_rows(rows, schema))
            rows = []
        frames.append(pl.read_ipc_stream(io.BytesIO(payload)))
    if rows:
        frames.append(_frame_of_rows(rows, schema))
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat([f.select(list(schema)).cast(schema) for f in frames], how="vertical_relaxed")


def _records(data: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    """(kind, payload) of each complete record, in order; stops at a torn or corrupt one."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc, kind = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.warning("driftloop: %s ends in a torn record (never acknowledged); dropped", path.name)
            return
        yield kind, payload
        offset += _HEADER.size + length


def _resolve(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error) if error else future.set_result(None)


class SpooledLog:
    """Append rows durably (fsync) to a local spool; ship them to ``<prefix>/…`` in the store."""

    def __init__(
        self,
        store: ArtifactStore,
        prefix: str,
        schema: dict[str, pl.DataType],
        spool_dir: Path,
        max_rows: int = 2000,
        max_seconds: float = 5.0,
    ):
        self.store, self.prefix, self.schema = store, prefix, schema
        self.max_rows, self.max_seconds = max_rows, max_seconds
        self.spool = spool_root(spool_dir, store.uri) / prefix
        self.spool.mkdir(parents=True, exist_ok=True)
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir, self._lock_fd = self._claim_new_directory()
        self._lock = threading.Lock()  # one writer at a time on the open segment
        self._sync_lock = threading.Lock()  # one fsync at a time; taken before _lock, never after
        self._written = self._synced = 0  # records written, records known durable
        self._ship_lock = threading.Lock()
        self._waiters: list[tuple[int, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._waiters_lock = threading.Lock()
        self._sync_wake = threading.Event()
        self._seq = 0
        self._fd: int | None = None
        self._segment: Path | None = None
        self._segment_rows = 0
        self._segment_opened = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.shipped_rows = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name=f"{prefix}-shipper", daemon=True)
        self._thread.start()
        self._syncer = threading.Thread(target=self._sync_loop, name=f"{prefix}-syncer", daemon=True)
        self._syncer.start()

    # -- writing -----------------------------------------------------------------------------------

    def _claim_new_directory(self) -> tuple[Path, int]:
        """Create this process's owner directory with its lock already held, then make it visible (a
        directory that appears unlocked is a dead owner's, and another worker would take it)."""
        hidden = self.spool / f".{self.owner}"
        hidden.mkdir()
        fd = os.open(hidden / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = self.spool / self.owner
        hidden.rename(final)
        return final, fd

    def append(self, rows: list[dict] | pl.DataFrame) -> None:
        """Durably append rows (dicts, or a frame whose columns match the schema): written and fsynced
        when this returns. Blocks on the disk: for threads (sync endpoints)."""
        ticket = self._write(rows)
        if ticket:
            self._sync(ticket)

    def append_unsynced(self, rows: list[dict] | pl.DataFrame) -> None:
        """Append rows no answer waits on (e.g. what a refused request was refused for): written now,
        durable with the next fsync or rotation, so neither a thread nor an event loop waits on disk."""
        self._write(rows)

    async def append_async(self, rows: list[dict] | pl.DataFrame) -> None:
        """The same for an event loop: written now; the syncer thread's next fsync (one for every
        request written meanwhile: group commit) resolves the wait, so the loop never blocks on disk."""
        ticket = self._write(rows)
        if not ticket:
            return
        loop = asyncio.get_running_loop()
        durable = loop.create_future()
        with self._waiters_lock:
            self._waiters.append((ticket, durable, loop))
        self._sync_wake.set()
        await durable

    def _sync_loop(self) -> None:
        while True:
            self._sync_wake.wait(0.5)
            self._sync_wake.clear()
            with self._waiters_lock:
                waiters, self._waiters = self._waiters, []
            if not waiters:
                if self._stop.is_set():
                    return
                continue
            error: BaseException | None = None
            try:
                self._sync(max(ticket for ticket, _, _ in waiters))
            except BaseException as exc:  # noqa: BLE001 - each waiting request gets the error
                error = exc
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
            for _, future, loop in waiters:
                by_loop.setdefault(loop, []).append(future)
            for loop, futures in by_loop.items():
                loop.call_soon_threadsafe(_resolve, futures, error)

    def _encode(self, rows: list[dict] | pl.DataFrame) -> tuple[list[bytes], int]:
        """The record as (header, payload), written with one ``writev`` (a large batch is not copied
        again to join them), and its row count."""
        if isinstance(rows, pl.DataFrame):
            buffer = io.BytesIO()
            rows.select(list(self.schema)).cast(self.schema).write_ipc_stream(buffer)
            payload, kind, n = buffer.getvalue(), _ARROW, rows.height
        else:
            payload, kind, n = json.dumps(rows, default=_json_value).encode(), _JSON, len(rows)
        return [_HEADER.pack(len(payload), zlib.crc32(payload), kind), payload], n

    def _write(self, rows: list[dict] | pl.DataFrame) -> int:
        """Write one record to the open segment (not yet durable); its ticket for ``_sync``."""
        if len(rows) == 0:
            return 0
        record, n = self._encode(rows)
        with self._lock:
            if self._fd is None:
                self._open_segment()
            assert self._fd is not None
            os.writev(self._fd, record)
            self._written += 1
            ticket = self._written
            self._segment_rows += n
            full = self._segment_rows >= self.max_rows
        if full:
            self._wake.set()
        return ticket

    def _sync(self, ticket: int) -> None:
        """Return once record ``ticket`` is on disk: one fsync covers every record written before it,
        so concurrent callers mostly find their record already synced (group commit)."""
        with self._sync_lock:
            with self._lock:
                if self._synced >= ticket:
                    return
                fd, upto = self._fd, self._written
            assert fd is not None  # a rotation syncs before closing, under _sync_lock
            os.fdatasync(fd)
            self._synced = upto

    def _open_segment(self) -> None:
        self._seq += 1
        name = f"{int(time.time() * 1000):013d}-{self.owner.rsplit('-', 1)[-1]}-{self._seq:06d}{_OPEN}"
        self._segment = self.dir / name
        self._fd = os.open(self._segment, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        directory = os.open(self.dir, os.O_RDONLY)  # the new file's name survives a power cut too
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._segment_rows, self._segment_opened = 0, time.monotonic()

    def _rotate(self, force: bool = False) -> None:
        """Close the open segment when it is full or old enough, so the shipper can take it."""
        with self._sync_lock, self._lock:
            if self._fd is None:
                return
            due = self._segment_rows >= self.max_rows or (
                time.monotonic() - self._segment_opened >= self.max_seconds
            )
            if force or due:
                os.fdatasync(self._fd)  # whoever waits on a record of this segment: it is durable now
                self._synced = self._written
                os.close(self._fd)
                assert self._segment is not None
                self._segment.rename(self._segment.with_suffix(_CLOSED))  # now the shipper may take it
                self._fd, self._segment = None, None

    # -- shipping ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(min(self.max_seconds, 1.0))
            self._wake.clear()
            self._rotate()
            self.ship()

    def ship(self) -> int:
        """Ship every closed segment of this process and of dead owners; returns the rows shipped. A
        failure keeps the segment for the next attempt (nothing is dropped)."""
        shipped = 0
        with self._ship_lock:
            for owner_dir in [self.dir, *self._orphans()]:
                shipped += self._ship_directory(owner_dir, own=owner_dir == self.dir)
        return shipped

    @staticmethod
    def _segments(directory: Path, own: bool) -> list[Path]:
        """Segments to ship: this process's closed ones; a dead owner's all, open ones included."""
        suffixes = (_CLOSED,) if own else (_CLOSED, _OPEN)
        return sorted(p for p in directory.iterdir() if p.suffix in suffixes)

    def _orphans(self) -> Iterator[Path]:
        for directory in sorted(self.spool.iterdir()):
            if directory == self.dir or directory.name.startswith(".") or not directory.is_dir():
                continue
            try:
                fd = os.open(directory / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                continue  # another worker removed it after shipping it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # its owner is alive
                continue
            try:
                log.info("driftloop: shipping %s's spool (its owner is gone)", directory.name)
                yield directory
            finally:
                os.close(fd)

    def _ship_directory(self, directory: Path, own: bool) -> int:
        shipped = 0
        for segment in self._segments(directory, own):
            try:
                shipped += self._ship_segment(segment)
            except Exception as exc:  # noqa: BLE001 - keep it, report, try again later
                self.errors += 1
                log.error("driftloop: could not ship %s of %s: %s", segment.name, self.prefix, exc)
                return shipped
        if not own and not self._segments(directory, own=False):
            shutil.rmtree(directory, ignore_errors=True)
        return shipped

    def _ship_segment(self, segment: Path) -> int:
        frame = read_segment(segment, self.schema)
        if frame.height:
            parts = frame.with_columns(
                pl.col("ts").dt.strftime("%Y-%m-%d").alias("__date"),
                pl.col("ts").dt.strftime("%H").alias("__hour"),
            ).partition_by(["__date", "__hour"], as_dict=True)
            for (date, hour), part in parts.items():
                # the key depends only on the segment: shipping it again overwrites, never duplicates
                key = log_file_key(self.prefix, date, hour, segment.stem)
                self.store.write_parquet(key, part.drop("__date", "__hour"))
        segment.unlink()
        self.shipped_rows += frame.height
        return frame.height

    def close(self, ship_for_seconds: float = 20.0) -> None:
        """Stop the shipper, close the open segment and ship what is left, retrying a failing store for
        up to ``ship_for_seconds``; whatever cannot be shipped stays in the spool, and the next worker
        to start on this host ships it."""
        self._stop.set()
        self._wake.set()
        self._sync_wake.set()
        self._thread.join(timeout=30)
        self._syncer.join(timeout=30)
        self._rotate(force=True)
        deadline, delay = time.monotonic() + ship_for_seconds, 0.2
        self.ship()
        while self._segments(self.dir, own=True) and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            self.ship()
        if not self._segments(self.dir, own=False):
            shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)
