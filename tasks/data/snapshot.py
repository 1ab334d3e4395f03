"""Versioned dataset snapshots: the prepared table, written once under a content-derived id.

Preparation is stateless and generic: join the configured tables onto the base table (right sides
de-duplicated on their keys), parse the time column, keep the configured window, compute the
target, count and set aside rows without a label, and order the rows the way they are split: by time,
or (without a time column) by a seeded hash of each row's contents, stratified by the target, so that
train / validation / test are consecutive row ranges either way. The snapshot id hashes the validated
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
from tasks.serving.logs import FEEDBACK, PREDICTIONS, log_keys, of_model, outcome_per_request


class SnapshotManifest(BaseModel):
    snapshot_id: str
    created_at: str
    data_key: str
    sources: dict[str, list[str]]
    rows: int
    unlabeled_rows: int
    positive_rate: float
    time_column: str | None
    time_min: str | None
    time_max: str | None
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
    return config.model_dump(
        mode="json", include={"base_table", "joins", "time", "target", "window", "split", "features"}
    )


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

    time_col = config.time_column
    schema = base.collect_schema()
    if time_col is not None:
        if time_col not in schema:
            raise BadInput(f"{config.origin}: time.column {time_col!r} is not in the prepared table")
        base = base.with_columns(parse_time(time_col, config.time, schema[time_col]).alias(time_col))
        if config.window.start:
            base = base.filter(pl.col(time_col) >= _utc(config.window.start))
        if config.window.end:
            base = base.filter(pl.col(time_col) < _utc(config.window.end))

    required = config.target.label_columns
    labelled = pl.all_horizontal(*(pl.col(c).is_not_null() for c in required)) if required else pl.lit(True)
    df = base.with_columns(labelled.alias("__labelled")).collect()
    unlabeled = int((~df["__labelled"]).sum())
    df = df.filter(pl.col("__labelled")).drop("__labelled")
    df = df.with_columns(binary_label(df, config).alias(config.target.name))
    return order_rows(df, config), unlabeled


_YES = {"yes", "y", "true", "t", "1", "1.0"}
_NO = {"no", "n", "false", "f", "0", "0.0"}


def binary_label(df: pl.DataFrame, config: DatasetConfig) -> pl.Series:
    """The target as 0/1 (Int8): computed by ``target.expression``, or read from the target column
    (booleans, 0/1, yes/no-like text, or ``target.positive`` against anything else two-valued)."""
    target = config.target
    where = f"{config.origin}: target"
    if target.expression is not None:
        try:
            return df.select(pl.sql_expr(target.expression).cast(pl.Int8))[:, 0]
        except Exception as exc:  # noqa: BLE001 - polars raises several SQL error types
            raise BadInput(
                f"{where}.expression {target.expression!r} does not give a yes/no label: {exc}"
            ) from None
    if target.name not in df.columns:
        raise BadInput(f"{where}.name {target.name!r} is not a column of the prepared table")
    col = df[target.name]
    values = col.unique().sort().to_list()
    if target.positive is not None:
        if len(values) > 2 or str(target.positive) not in {str(v) for v in values}:
            raise BadInput(
                f"{where}.positive {target.positive!r}: column {target.name!r} holds {values[:10]}; a binary "
                "target has two values, one of them the positive"
            )
        return (col.cast(pl.String) == str(target.positive)).cast(pl.Int8).rename(target.name)
    if col.dtype == pl.Boolean:
        return col.cast(pl.Int8)
    text = col.cast(pl.String).str.strip_chars().str.to_lowercase()
    unknown = sorted(set(text.unique().to_list()) - _YES - _NO)
    if unknown:
        shown = [v for v in values if str(v).strip().lower() in unknown][:10]
        raise BadInput(
            f"{where}.name {target.name!r} holds {shown}, which is not a yes/no label (supported: "
            "booleans, 0/1, yes/no, true/false, y/n); only binary targets are supported: set "
            "target.positive to the value meaning yes, or target.expression to compute the label"
        )
    return text.is_in(list(_YES)).cast(pl.Int8).rename(target.name)


def split_key(df: pl.DataFrame, config: DatasetConfig) -> pl.Series:
    """Each row's place in a random / stratified split, in [0, 1): a seeded hash of the row's model
    inputs and label (the same row gets the same key in every snapshot); stratified, the key is the
    row's rank within its class, so every range of keys holds the target's share of positives."""
    from tasks.model.features import FeatureSpec

    cols = [*FeatureSpec.from_config(config).input_columns, config.target.name]
    u = (
        df.select(c for c in dict.fromkeys(cols) if c in df.columns).hash_rows(seed=config.split.seed) // 2048
    ).cast(pl.Float64) / float(1 << 53)
    if config.split_method == "random":
        return u.rename("__split_key")
    return (
        pl.DataFrame({"u": u, "y": df[config.target.name]})
        .select(((pl.col("u").rank("min").over("y") - 0.5) / pl.len().over("y")).alias("__split_key"))
        .to_series()
    )


def order_rows(df: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """Rows in split order: by time, or by ``split_key`` (train, validation, test are then
    consecutive row ranges, whatever the method)."""
    if config.split_method == "time":
        return df.sort(config.time_column, maintain_order=True)
    return df.with_columns(split_key(df, config)).sort("__split_key", maintain_order=True).drop("__split_key")


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
    time_col = config.time_column
    if df.height == 0:
        if time_col is None:
            raise EmptyWindow(f"{config.base_table!r} holds no labelled rows ({unlabeled} without a label)")
        span = _time_span(tables[config.base_table], config)
        raise EmptyWindow(
            f"the window {config.window.start} .. {config.window.end} holds no labelled rows of "
            f"{config.base_table!r}"
            f" (the data covers {span}); change window in the dataset config or the flow parameters"
        )
    target = df[config.target.name]
    if target.n_unique() < 2:
        raise SingleClassTarget(
            f"target {config.target.name!r} ({config.target.expression or 'column'}) has only the value "
            f"{target[0]} in {df.height} rows; a classifier needs both classes: widen the window or check "
            "the target"
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
        time_min=str(df[time_col].min()) if time_col else None,
        time_max=str(df[time_col].max()) if time_col else None,
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
    col = config.time_column
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
    """Logged predictions of this model joined with their observed outcomes, shaped like a snapshot's
    rows: the model inputs, the time column and the target. Returns (rows, log keys used)."""
    pred_keys = log_keys(store, PREDICTIONS, config.model_name)
    fb_keys = log_keys(store, FEEDBACK, config.model_name)
    keys = sorted(pred_keys + fb_keys)
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
    time_col = config.time_column
    cols = list(
        dict.fromkeys([*input_columns, *([time_col] if time_col else []), config.target.name, *config.slices])
    )
    if time_col:
        extra = extra.with_columns(pl.col(time_col).cast(base.schema[time_col]))
    df = order_rows(
        pl.concat([base.select(cols), extra.select(cols).cast({c: base.schema[c] for c in cols})]), config
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
            time_min=str(df[time_col].min()) if time_col else None,
            time_max=str(df[time_col].max()) if time_col else None,
            columns={c: str(t) for c, t in df.schema.items()},
            content_sha256=hashlib.sha256(data).hexdigest(),
        )
    )
    try:
        store.write_json(manifest_key, extended.model_dump(), if_none_match=True)
    except PreconditionFailed:
        return SnapshotManifest.model_validate(store.read_json(manifest_key))
    return extended
