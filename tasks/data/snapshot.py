"""Versioned dataset snapshots: the prepared table, written once under a content-derived id.

Preparation is stateless and generic: join the configured tables onto the base table (right sides
de-duplicated on their keys), parse the time column, keep the configured window, compute the
target, count and set aside rows without a label, sort by time. The snapshot id hashes the validated
input batches (themselves content-addressed), the preparation config and this module's code, so the
same inputs give the same id and nothing is rewritten. ``manifest.json`` is written last and marks a
complete snapshot; a crash before it leaves nothing a reader would trust.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import sys
import threading
from datetime import datetime, timezone
from typing import Any

import polars as pl
from pydantic import BaseModel

from tasks.core.config import DatasetConfig
from tasks.core.errors import BadInput, EmptyWindow, SingleClassTarget
from tasks.core.store import ArtifactStore, PreconditionFailed
from tasks.model.features import parse_time
from tasks.serving.logs import of_model, outcome_per_request


class SnapshotManifest(BaseModel):
    snapshot_id: str
    created_at: str
    data_key: str
    sources: dict[str, list[str]]
    rows: int
    unlabeled_rows: int
    positive_rate: float
    time_column: str
    time_min: str
    time_max: str
    columns: dict[str, str]
    content_sha256: str
    config_fingerprint: str


SNAPSHOTS = "snapshots"  # <store>/snapshots/<id>/{data.parquet, manifest.json}; the manifest is written last


def snapshot_manifest_key(snapshot_id: str) -> str:
    return f"{SNAPSHOTS}/{snapshot_id}/manifest.json"


def read_manifest(store: ArtifactStore, snapshot_id: str) -> SnapshotManifest | None:
    """The manifest of a complete snapshot, or None if there is no (complete) snapshot of that id."""
    value, _ = store.read_json_with_etag(snapshot_manifest_key(snapshot_id))
    return SnapshotManifest.model_validate(value) if value is not None else None


def _code_version() -> str:
    return hashlib.sha256(inspect.getsource(sys.modules[__name__]).encode()).hexdigest()[:12]


def _prep_config(config: DatasetConfig) -> dict:
    return config.model_dump(mode="json", include={"base_table", "joins", "time", "target", "window"})


def snapshot_id_for(sources: dict[str, list[str]], config: DatasetConfig) -> str:
    """Content-derived id: inputs + preparation config + preparation code."""
    payload = json.dumps(
        {
            "sources": {t: sorted(k) for t, k in sorted(sources.items())},
            "config": _prep_config(config),
            "code": _code_version(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_table(tables: dict[str, pl.LazyFrame], config: DatasetConfig) -> tuple[pl.DataFrame, int]:
    """Join, window, label and sort; return (labelled rows, rows without a label)."""
    base = tables[config.base_table]
    for join in config.joins:
        right = tables[join.table]
        right_schema = right.collect_schema()
        keep = join.columns or [c for c in right_schema if c not in join.right_on]
        unknown = [c for c in [*join.right_on, *keep] if c not in right_schema]
        if unknown:
            raise BadInput(f"join {join.table}: column(s) {unknown} not in table {join.table!r}")
        left_schema = base.collect_schema()
        renamed = {c: f"{join.prefix}{c}" for c in keep}
        clash = [n for n in renamed.values() if n in left_schema]
        if clash:
            raise BadInput(f"join {join.table}: column(s) {clash} already exist; set a prefix for this join")
        right = (
            right.select(
                *[
                    pl.col(right_key).cast(left_schema[left_key])
                    for left_key, right_key in zip(join.left_on, join.right_on)
                ],
                *keep,
            )
            .unique(subset=join.right_on, keep="first", maintain_order=True)
            .rename(renamed)
        )
        base = base.join(
            right,
            left_on=join.left_on,
            right_on=join.right_on,
            how="left",
            coalesce=True,
            maintain_order="left",
        )  # row order must not depend on threads

    time_col = config.time.column
    schema = base.collect_schema()
    if time_col not in schema:
        raise BadInput(f"time column {time_col!r} is not in the prepared table")
    base = base.with_columns(parse_time(time_col, config.time, schema[time_col]).alias(time_col))
    if config.window.start:
        base = base.filter(pl.col(time_col) >= _utc(config.window.start))
    if config.window.end:
        base = base.filter(pl.col(time_col) < _utc(config.window.end))

    labelled = (
        pl.all_horizontal(*(pl.col(c).is_not_null() for c in config.target.requires))
        if config.target.requires
        else pl.lit(True)
    )
    try:
        target = pl.sql_expr(config.target.expression)
    except Exception as exc:  # noqa: BLE001 - polars raises several SQL error types
        raise BadInput(
            f"target.expression {config.target.expression!r} is not a valid Polars SQL expression: {exc}"
        ) from None
    df = base.with_columns(labelled.alias("__labelled")).collect()
    unlabeled = int((~df["__labelled"]).sum())
    df = (
        df.filter(pl.col("__labelled"))
        .drop("__labelled")
        .with_columns(target.cast(pl.Int8).alias(config.target.name))
        .sort(time_col, maintain_order=True)
    )
    return df, unlabeled


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def build_snapshot(
    sources: dict[str, list[str]], config: DatasetConfig, store: ArtifactStore
) -> SnapshotManifest:
    """Prepare and write the snapshot for these validated batches, or return the existing one."""
    sid = snapshot_id_for(sources, config)
    manifest_key = snapshot_manifest_key(sid)
    if store.exists(manifest_key):
        return SnapshotManifest.model_validate(store.read_json(manifest_key))

    tables = {t: store.scan_parquet(keys) for t, keys in sources.items()}
    df, unlabeled = prepare_table(tables, config)
    time_col = config.time.column
    if df.height == 0:
        span = _time_span(tables[config.base_table], config)
        raise EmptyWindow(
            f"the window {config.window.start} .. {config.window.end} holds no labelled rows of "
            f"{config.base_table!r}"
            f" (the data covers {span}); change window in the dataset config or the flow parameters"
        )
    target = df[config.target.name]
    if target.n_unique() < 2:
        raise SingleClassTarget(
            f"target {config.target.name!r} ({config.target.expression}) has only the value {target[0]} in "
            f"{df.height} rows; a classifier needs both classes: widen the window or check the expression"
        )
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=True)
    data = buf.getvalue()
    data_key = f"{SNAPSHOTS}/{sid}/data.parquet"
    store.write_bytes(data_key, data)
    manifest = SnapshotManifest(
        snapshot_id=sid,
        created_at=datetime.now(timezone.utc).isoformat(),
        data_key=data_key,
        sources={t: sorted(k) for t, k in sources.items()},
        rows=df.height,
        unlabeled_rows=unlabeled,
        positive_rate=float(target.mean()),
        time_column=time_col,
        time_min=str(df[time_col].min()),
        time_max=str(df[time_col].max()),
        columns={c: str(t) for c, t in df.schema.items()},
        content_sha256=hashlib.sha256(data).hexdigest(),
        config_fingerprint=config.fingerprint(),
    )
    try:
        store.write_json(manifest_key, manifest.model_dump(), if_none_match=True)
    except PreconditionFailed:  # another run finished the same snapshot first: same content
        return SnapshotManifest.model_validate(store.read_json(manifest_key))
    return manifest


def _time_span(base: pl.LazyFrame, config: DatasetConfig) -> str:
    col = config.time.column
    schema = base.collect_schema()
    row = (
        base.select(parse_time(col, config.time, schema[col]).alias(col))
        .select(pl.col(col).min().alias("lo"), pl.col(col).max().alias("hi"))
        .collect()
        .row(0)
    )
    return f"{row[0]} .. {row[1]}"


def load_snapshot(manifest: SnapshotManifest, store: ArtifactStore) -> pl.DataFrame:
    """The snapshot's rows. A snapshot never changes once written (its id is its content), so the last
    one read is kept per process: a training run's steps share one read instead of one each."""
    key = (store.uri, manifest.data_key, manifest.content_sha256)
    with _LAST_LOCK:
        if _LAST.get("key") != key:
            _LAST.update(key=key, frame=store.read_parquet(manifest.data_key))
        return _LAST["frame"]


_LAST: dict[str, Any] = {}
_LAST_LOCK = threading.Lock()


def labelled_predictions(
    store: ArtifactStore, config: DatasetConfig, input_columns: list[str]
) -> tuple[pl.DataFrame, list[str]]:
    """Logged predictions joined with their observed outcomes (last feedback wins), shaped like a
    snapshot's rows: the model inputs, the time column and the target. Returns (rows, log keys used)."""
    keys = sorted(k for k in store.list("predictions") + store.list("feedback") if k.endswith(".parquet"))
    pred_keys = [k for k in keys if k.startswith("predictions/")]
    fb_keys = [k for k in keys if k.startswith("feedback/")]
    if not pred_keys or not fb_keys:
        return pl.DataFrame(), keys
    outcomes = outcome_per_request(store.scan_parquet(fb_keys)).select(
        "request_id", pl.col("outcome").cast(pl.Int8).alias(config.target.name)
    )
    rows = (
        of_model(store.scan_parquet(pred_keys), config.model_name)
        .unique("request_id", keep="first")
        .join(outcomes, on="request_id", how="inner", maintain_order="left")
        .select(*input_columns, config.target.name)
        .collect()
    )
    return rows, keys


def extend_with_feedback(
    manifest: SnapshotManifest, config: DatasetConfig, store: ArtifactStore, input_columns: list[str]
) -> SnapshotManifest:
    """A new snapshot: the raw-zone snapshot plus every prediction the service logged that has an
    observed outcome (the freshest labelled data there is). Content-addressed like any snapshot."""
    extra, keys = labelled_predictions(store, config, input_columns)
    if extra.height == 0:
        return manifest
    sid = hashlib.sha256(
        json.dumps({"base": manifest.snapshot_id, "logs": keys, "code": _code_version()}).encode()
    ).hexdigest()[:16]
    manifest_key = snapshot_manifest_key(sid)
    if store.exists(manifest_key):
        return SnapshotManifest.model_validate(store.read_json(manifest_key))
    base = load_snapshot(manifest, store)
    time_col = config.time.column
    cols = list(dict.fromkeys([*input_columns, time_col, config.target.name, *config.slices]))
    extra = extra.with_columns(pl.col(time_col).cast(base.schema[time_col]))
    df = pl.concat([base.select(cols), extra.select(cols).cast({c: base.schema[c] for c in cols})]).sort(
        time_col, maintain_order=True
    )
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=True)
    data = buf.getvalue()
    data_key = f"{SNAPSHOTS}/{sid}/data.parquet"
    store.write_bytes(data_key, data)
    target = df[config.target.name]
    extended = manifest.model_copy(
        update=dict(
            snapshot_id=sid,
            created_at=datetime.now(timezone.utc).isoformat(),
            data_key=data_key,
            sources={**manifest.sources, "labelled_predictions": keys},
            rows=df.height,
            positive_rate=float(target.mean()),
            time_min=str(df[time_col].min()),
            time_max=str(df[time_col].max()),
            columns={c: str(t) for c, t in df.schema.items()},
            content_sha256=hashlib.sha256(data).hexdigest(),
        )
    )
    try:
        store.write_json(manifest_key, extended.model_dump(), if_none_match=True)
    except PreconditionFailed:
        return SnapshotManifest.model_validate(store.read_json(manifest_key))
    return extended
