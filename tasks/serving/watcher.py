"""What the prediction service does, independent of the web framework.

- ``ModelSet``: the loaded champion (and challenger) with their fitted transforms; scoring applies the
  very transform saved with each version.
- ``RegistryWatcher``: polls the registry's aliases and swaps in new versions without a restart. A
  version that fails to load (missing or corrupt files) is not swapped in: the service keeps what it
  has and reports the problem.
- ``assign_arm``: canary routing by a hash of the request key, so a caller stays on one arm.
- ``PartitionedLog``: prediction and feedback logs, buffered off the request path and flushed to the
  artifact store as Parquet partitioned by date and hour (by size, by time, and at shutdown).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import polars as pl

from tasks.model.features import FittedTransform
from tasks.registry.versions import ModelVersion, Registry, RegistryError
from tasks.core.store import ArtifactStore

log = logging.getLogger("driftloop.serving")
Arm = Literal["champion", "challenger"]


def assign_arm(key: str, challenger_share: float) -> Arm:
    """Deterministic split: the same key always lands on the same arm."""
    if challenger_share <= 0:
        return "champion"
    bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
    return "challenger" if bucket < challenger_share else "champion"


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    booster: lgb.Booster
    transform: FittedTransform

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        return self.booster.predict(self.transform.to_matrix(frame), num_threads=1)


def load_version(registry: Registry, mv: ModelVersion) -> LoadedModel:
    """Load and smoke-test a version: a model that cannot score is never swapped in."""
    booster = registry.load_booster(mv)
    transform = registry.load_transform(mv)
    if booster.num_feature() != len(transform.feature_names):
        raise RegistryError(f"v{mv.version}: model has {booster.num_feature()} features, transform {len(transform.feature_names)}")
    return LoadedModel(version=mv, booster=booster, transform=transform)


@dataclass
class ModelSet:
    """What serves right now. Replaced as a whole (one reference swap), never mutated in place."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    etag: str | None = None


@dataclass
class WatcherStatus:
    loaded_at: str | None = None
    last_check: str | None = None
    problems: list[str] = field(default_factory=list)


class RegistryWatcher:
    """Keeps a ``ModelSet`` in step with the registry's aliases."""

    def __init__(self, registry: Registry, poll_seconds: float = 2.0):
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.models = ModelSet()
        self.status = WatcherStatus()
        self._cache: dict[int, LoadedModel] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Reload if the aliases changed; return True when the served set changed."""
        doc, etag = self.registry.store.read_json_with_etag(f"{self.registry.prefix}/aliases.json")
        self.status.last_check = datetime.now(timezone.utc).isoformat()
        if etag is not None and etag == self.models.etag:
            return False
        aliases = (doc or {}).get("aliases", {})
        problems, loaded = [], {}
        for alias in ("champion", "challenger"):
            version = aliases.get(alias)
            if version is None:
                continue
            current = getattr(self.models, alias)
            if current is not None and current.version.version == version:
                loaded[alias] = current
                continue
            try:
                loaded[alias] = self._cache.get(version) or load_version(self.registry, self.registry.get(version))
                self._cache = {version: loaded[alias], **{k: v for k, v in self._cache.items() if k != version}}
                while len(self._cache) > 4:
                    self._cache.pop(next(iter(self._cache)))
            except Exception as exc:  # noqa: BLE001 - any failure means: keep what we have
                keep = current.version.version if current else None
                problems.append(f"{alias} v{version} failed to load ({type(exc).__name__}: {exc}); "
                                f"{'still serving v' + str(keep) if keep else 'no ' + alias + ' loaded'}")
                log.error("driftloop: %s", problems[-1])
                if current is not None:
                    loaded[alias] = current
        self.status.problems = problems
        # remember the etag only when everything loaded, so a fixed registry is picked up next poll
        new = ModelSet(champion=loaded.get("champion"), challenger=loaded.get("challenger"),
                       etag=etag if not problems else None)
        changed = (_v(new.champion), _v(new.challenger)) != (_v(self.models.champion), _v(self.models.challenger))
        self.models = new
        if changed:
            self.status.loaded_at = datetime.now(timezone.utc).isoformat()
            log.info("driftloop: serving champion %s, challenger %s", _v(new.champion), _v(new.challenger))
        return changed

    def use_packaged(self, path: Path) -> None:
        """Serve the model packaged in the bento until the registry can be read."""
        import json

        booster = lgb.Booster(model_file=str(path / "model.txt"))
        transform = FittedTransform.from_json((path / "transform.json").read_text())
        meta = json.loads((path / "registry_version.json").read_text())
        self.models = ModelSet(champion=LoadedModel(ModelVersion.model_validate(meta), booster, transform))
        self.status.problems.append(f"registry unreadable at start; serving the packaged model v{meta['version']}")
        log.warning("driftloop: %s", self.status.problems[-1])

    def start(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - start anyway; the loop keeps trying
            self.status.problems = [f"registry unreachable: {type(exc).__name__}: {exc}"]
            log.error("driftloop: %s", self.status.problems[0])
        self._thread = threading.Thread(target=self._loop, name="registry-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unreachable
                self.status.problems = [f"registry unreachable: {type(exc).__name__}: {exc}"]
                log.warning("driftloop: %s", self.status.problems[0])

    def stop(self) -> None:
        self._stop.set()


def _v(model: LoadedModel | None) -> int | None:
    return model.version.version if model else None


class PartitionedLog:
    """Append rows in memory; a background thread writes them to ``<prefix>/date=…/hour=…/*.parquet``."""

    def __init__(self, store: ArtifactStore, prefix: str, schema: dict[str, pl.DataType],
                 max_rows: int = 2000, max_seconds: float = 5.0):
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
                for (date, hour), part in frame.with_columns(
                    pl.col("ts").dt.strftime("%Y-%m-%d").alias("__date"), pl.col("ts").dt.strftime("%H").alias("__hour")
                ).partition_by(["__date", "__hour"], as_dict=True).items():
                    key = f"{self.prefix}/date={date}/hour={hour}/{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
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


PREDICTION_COLUMNS = ["request_id", "ts", "model_version", "probability"]
FEEDBACK_COLUMNS = ["request_id", "ts", "outcome"]


def read_log(store: ArtifactStore, prefix: str, columns: list[str] | None = None,
             request_ids: list[str] | None = None) -> pl.DataFrame:
    """What was flushed under a log prefix (empty when nothing was logged yet). The scan is lazy:
    only ``columns`` are read, and only rows of ``request_ids`` kept, so callers that need a little
    of a large log do not read all of it."""
    keys = [k for k in store.list(prefix) if k.endswith(".parquet")]
    if not keys:
        return pl.DataFrame()
    scan = store.scan_parquet(keys)
    if request_ids is not None:
        scan = scan.filter(pl.col("request_id").is_in(pl.Series(request_ids, dtype=pl.String).implode()))
    return (scan.select(columns) if columns else scan).collect()
