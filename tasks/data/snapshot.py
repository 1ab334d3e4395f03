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
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel

from tasks.core.config import DatasetConfig
from tasks.core.errors import BadInput, EmptyWindow, SingleClassTarget
from tasks.core.feature_spec import parse_time
from tasks.core.logs import FEEDBACK, PREDICTIONS, log_keys, of_model, outcome_per_request
from tasks.core.store import ArtifactStore, PreconditionFailed
from tasks.core.target import MAX_CLASSES, NO, YES, Kind, LearningTask, infer_kind, learning_task


class SnapshotPart(BaseModel):
    """One Parquet file of a snapshot: its rows follow the previous part's in split order."""

    key: str
    rows: int
    sha256: str


class SnapshotManifest(BaseModel):
    snapshot_id: str
    created_at: str
    parts: list[SnapshotPart] = []
    data_key: str | None = None  # snapshots written before parts existed: one file
    sources: dict[str, list[str]]
    rows: int
    unlabeled_rows: int
    positive_rate: float  # yes/no: the share of yes; a number: its mean; classes: unused (the shares vary)
    target_kind: Kind = "binary"  # as stated, or as the data showed it (tasks.core.target)
    classes: list[str] = []  # multiclass: the class values in code order
    time_column: str | None
    time_min: str | None
    time_max: str | None
    columns: dict[str, str]
    content_sha256: str
    config_fingerprint: str

    def learning_task(self, config: DatasetConfig) -> LearningTask:
        """The target's task as this snapshot holds it, trained with the config's objective."""
        return learning_task(self.target_kind, self.classes, config.training.params, config.origin)

    def target_summary(self) -> str:
        """The target in a few words for logs: its share of yes, its classes, or its mean."""
        if self.target_kind == "multiclass":
            return f"{len(self.classes)} classes ({', '.join(self.classes[:6])})"
        if self.target_kind == "regression":
            return f"target mean {self.positive_rate:.4g}"
        return f"positive rate {self.positive_rate:.3f}"

    @property
    def part_keys(self) -> list[str]:
        """The snapshot's files in split order."""
        return [p.key for p in self.parts] if self.parts else [self.data_key] if self.data_key else []

    @property
    def part_offsets(self) -> list[int]:
        """The first row of each part (parts are consecutive row ranges), then the total."""
        sizes = [p.rows for p in self.parts] if self.parts else [self.rows]
        return [sum(sizes[:i]) for i in range(len(sizes) + 1)]


SNAPSHOTS = "snapshots"  # <store>/snapshots/<id>/{part-00000.parquet, ..., manifest.json}; manifest last


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


def snapshot_id_for(sources: dict[str, list[str]], config: DatasetConfig, rows_per_part: int) -> str:
    """Content-derived id: inputs + preparation config + how rows are cut into parts + preparation code."""
    payload = json.dumps(
        {
            "sources": {t: sorted(k) for t, k in sorted(sources.items())},
            "config": _prep_config(config),
            "rows_per_part": rows_per_part,
            "code": _code_version(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


LABELLED = "__labelled"
BUCKET = "__part"


def joined_plan(tables: dict[str, pl.LazyFrame], config: DatasetConfig) -> pl.LazyFrame:
    """The lazy preparation plan: joins, parsed time, window, and ``__labelled`` (every label column
    present). Nothing is read until the plan runs, streamed or collected."""
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
    return base.with_columns(labelled.alias(LABELLED))


def prepare_table(
    tables: dict[str, pl.LazyFrame], config: DatasetConfig, rows_per_part: int | None = None
) -> tuple[pl.DataFrame, int]:
    """Join, window, label and sort, in memory; return (labelled rows, rows without a label). For small
    tables (the demo's checks, tests); ``build_snapshot`` runs the same plan streamed."""
    df = joined_plan(tables, config).collect()
    unlabeled = int((~df[LABELLED]).sum())
    df = df.filter(pl.col(LABELLED)).drop(LABELLED)
    task, label = encoded_target(df, config)
    df = df.with_columns(label.alias(config.target.name))
    return order_rows(df, config.with_target_kind(task.kind), rows_per_part), unlabeled


def target_values(config: DatasetConfig) -> pl.Expr:
    """The target as the data holds it: the column, or ``target.expression`` computed from others."""
    target = config.target
    if target.expression is None:
        return pl.col(target.name)
    try:
        return pl.sql_expr(target.expression).alias(target.name)
    except Exception as exc:  # noqa: BLE001 - polars raises several SQL error types
        raise BadInput(
            f"{config.origin}: target.expression {target.expression!r} does not parse: {exc}"
        ) from None


def resolve_target(config: DatasetConfig, dtype: pl.DataType | None, values: list[Any]) -> LearningTask:
    """The target's kind (stated, else inferred from ``values``: the target's distinct values, sorted, at
    most a thousand) and classes; an error naming the values when they do not fit the kind."""
    target, where = config.target, f"{config.origin}: target"
    if dtype is None:
        raise BadInput(f"{where}.name {target.name!r} is not a column of the prepared table")
    kind = target.kind or (
        "binary"
        if target.positive is not None
        else infer_kind(dtype, values, len(values), target.name, where)
    )
    classes: list[str] = []
    if kind == "regression" and not dtype.is_numeric():
        raise BadInput(
            f"{where} {target.name!r} is {dtype} ({values[:5]}), not a number: target.kind regression needs "
            "a numeric column or expression"
        )
    if kind == "multiclass":
        classes = sorted({str(v) for v in values if v is not None})
        if not 2 <= len(classes) <= MAX_CLASSES:
            raise BadInput(
                f"{where} {target.name!r} holds {len(classes)} distinct values; target.kind multiclass needs "
                f"2 to {MAX_CLASSES}"
            )
    return learning_task(kind, classes, config.training.params, config.origin)


def label_expr(config: DatasetConfig, task: LearningTask, dtype: pl.DataType, values: list[Any]) -> pl.Expr:
    """The target as LightGBM reads it: 0/1 (Int8) for yes/no (booleans, 0/1, yes/no-like text, or
    ``target.positive`` against anything else two-valued), the class's code (Int32, its index in
    ``task.classes``) for classes, the number (Float64) for regression."""
    target, where = config.target, f"{config.origin}: target"
    col = target_values(config)
    if task.kind == "regression":
        return col.cast(pl.Float64).alias(target.name)
    if task.kind == "multiclass":
        codes = list(range(len(task.classes)))
        return (
            col.cast(pl.String).replace_strict(task.classes, codes, return_dtype=pl.Int32).alias(target.name)
        )
    if target.positive is not None:
        if len(values) > 2 or str(target.positive) not in {str(v) for v in values}:
            raise BadInput(
                f"{where}.positive {target.positive!r}: column {target.name!r} holds {values[:10]}; a binary "
                "target has two values, one of them the positive"
            )
        return (col.cast(pl.String) == str(target.positive)).cast(pl.Int8).alias(target.name)
    if dtype == pl.Boolean or dtype.is_numeric():
        if dtype.is_numeric() and not {float(v) for v in values if v is not None} <= {0.0, 1.0}:
            raise BadInput(
                f"{where} {target.name!r} holds {values[:10]}, not 0/1: a binary target needs two values "
                "(set target.kind to regression or multiclass, or target.positive to the yes value)"
            )
        return col.cast(pl.Int8).alias(target.name)
    unknown = sorted({str(v).strip().lower() for v in values if v is not None} - YES - NO)
    if unknown:
        shown = [v for v in values if str(v).strip().lower() in unknown][:10]
        raise BadInput(
            f"{where}.name {target.name!r} holds {shown}, which is not a yes/no label (supported: "
            "booleans, 0/1, yes/no, true/false, y/n): set target.positive to the value meaning yes, "
            "target.kind: multiclass for named classes, or target.expression to compute the label"
        )
    text = col.cast(pl.String).str.strip_chars().str.to_lowercase()
    return text.is_in(list(YES)).cast(pl.Int8).alias(target.name)


def _target_facts(frame: pl.LazyFrame, config: DatasetConfig) -> tuple[pl.DataType | None, list[Any]]:
    """The target's type and (up to a thousand of) its distinct values among the labelled rows."""
    name = config.target.name
    if config.target.expression is None and name not in frame.collect_schema():
        return None, []
    try:
        values = (
            frame.filter(pl.col(LABELLED))
            .select(target_values(config).unique().sort().head(1000))
            .collect(engine="streaming")[name]
        )
    except pl.exceptions.PolarsError as exc:
        raise BadInput(
            f"{config.origin}: target {config.target.expression or name!r} cannot be computed: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None
    return values.dtype, [v for v in values.to_list() if v is not None]


def labelled_target(frame: pl.LazyFrame, config: DatasetConfig) -> tuple[LearningTask, pl.Expr]:
    """The target's resolved task and its encoding expression for a plan (lazy, or a frame made lazy);
    the encoding is tried on a few rows first, so a wrong expression fails here as bad input."""
    dtype, values = _target_facts(frame, config)
    task = resolve_target(config, dtype, values)
    label = label_expr(config, task, dtype, values)
    try:
        frame.filter(pl.col(LABELLED)).head(1000).select(label).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise BadInput(
            f"{config.origin}: target {config.target.expression or config.target.name!r} is not a "
            f"{task.kind} target: {str(exc).splitlines()[0][:300]}"
        ) from None
    return task, label


def encoded_target(df: pl.DataFrame, config: DatasetConfig) -> tuple[LearningTask, pl.Series]:
    """The target of these rows as LightGBM reads it, and its task; see ``label_expr``."""
    task, label = labelled_target(df.lazy().with_columns(pl.lit(True).alias(LABELLED)), config)
    try:
        return task, df.select(label)[:, 0]
    except pl.exceptions.PolarsError as exc:
        raise BadInput(
            f"{config.origin}: target {config.target.expression or config.target.name!r} is not a "
            f"{task.kind} target: {exc}"
        ) from None


def part_count(rows: int, rows_per_part: int) -> int:
    return max(1, -(-rows // rows_per_part))


def _row_hash(config: DatasetConfig, columns: list[str]) -> pl.Expr:
    """Each row's uniform draw in [0, 1): a seeded hash of the row's model inputs and label, so the same
    row gets the same draw in every snapshot."""
    from tasks.core.feature_spec import FeatureSpec

    cols = [c for c in dict.fromkeys([*FeatureSpec.from_config(config).input_columns, config.target.name])]
    cols = [c for c in cols if c in columns]
    return (pl.struct(cols).hash(seed=config.split.seed) // 2048).cast(pl.Float64) / float(1 << 53)


def bucket_expr(
    config: DatasetConfig, columns: list[str], parts: int, time_range: tuple[Any, Any]
) -> pl.Expr:
    """Which part a row belongs to: equal-width ranges of time (time split), else of the row's hash
    draw. Parts are consecutive in split order, so each can be sorted on its own: the snapshot is
    never sorted (or held) whole."""
    if config.split_method == "time":
        lo, hi = time_range
        span = max(1, int((hi - lo).total_seconds() * 1e6)) + 1
        offset = (pl.col(config.time_column) - pl.lit(lo)).dt.total_microseconds()
        return (offset * parts // span).clip(0, parts - 1).cast(pl.Int32).alias(BUCKET)
    return (_row_hash(config, columns) * parts).floor().clip(0, parts - 1).cast(pl.Int32).alias(BUCKET)


def order_part(part: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """One part's rows in split order: by time; or, random, by the row's hash draw; or, stratified, by
    the draw's rank within the row's class, so every range of rows holds the target's share of
    positives (stratified splits and k-fold chunks)."""
    if config.split_method == "time":
        return part.sort(config.time_column, maintain_order=True)
    u = part.select(_row_hash(config, part.columns).alias("u"))["u"]
    if config.split_method == "random":
        key = u
    else:
        key = (
            pl.DataFrame({"u": u, "y": part[config.target.name]})
            .select((pl.col("u").rank("min").over("y") - 0.5) / pl.len().over("y"))
            .to_series()
        )
    return part.with_columns(key.alias("__key")).sort("__key", maintain_order=True).drop("__key")


def order_rows(df: pl.DataFrame, config: DatasetConfig, rows_per_part: int | None = None) -> pl.DataFrame:
    """Rows in split order, in memory: the order ``build_snapshot`` writes (part by part)."""
    parts = part_count(df.height, rows_per_part or DEFAULT_ROWS_PER_PART)
    time_range = (df[config.time_column].min(), df[config.time_column].max()) if config.time_column else None
    if config.split_method == "time" or parts == 1:
        return order_part(df, config)
    bucketed = df.with_columns(bucket_expr(config, df.columns, parts, time_range))
    ordered = [order_part(p.drop(BUCKET), config) for p in _parts_in_order(bucketed)]
    return pl.concat(ordered)


def _parts_in_order(df: pl.DataFrame) -> list[pl.DataFrame]:
    by = df.partition_by(BUCKET, as_dict=True, maintain_order=True)
    return [by[k] for k in sorted(by)]


DEFAULT_ROWS_PER_PART = 250_000


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def build_snapshot(
    sources: dict[str, list[str]],
    config: DatasetConfig,
    store: ArtifactStore,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
) -> SnapshotManifest:
    """Prepare and write the snapshot for these validated batches, or return the existing one.

    Streamed: the lazy plan runs twice over the inputs (once for counts, label values and time range,
    once to spill labelled rows to local part files by ``bucket_expr``), then each part is sorted on
    its own and written to the store. Peak memory is about one part, whatever the table's size."""
    sid = snapshot_id_for(sources, config, rows_per_part)
    manifest_key = snapshot_manifest_key(sid)
    if store.exists(manifest_key):
        return SnapshotManifest.model_validate(store.read_json(manifest_key))

    tables = {t: store.scan_parquet(keys) for t, keys in sources.items()}
    plan = joined_plan(tables, config)
    task, label = labelled_target(plan, config)
    config = config.with_target_kind(task.kind)  # rows are ordered (stratified or not) by the kind
    time_col = config.time_column
    labelled = pl.col(LABELLED)
    stats = _labelled_stats(plan, label, config, tables)
    rows, unlabeled, positives = int(stats["rows"]), int(stats["unlabeled"]), float(stats["positives"] or 0)
    n_parts = part_count(rows, rows_per_part)
    time_range = (stats["lo"], stats["hi"]) if time_col else None
    labelled_rows = plan.filter(labelled).drop(LABELLED).with_columns(label)
    columns = list(labelled_rows.collect_schema())
    with tempfile.TemporaryDirectory(prefix="driftloop-snapshot-") as spill:
        labelled_rows.with_columns(bucket_expr(config, columns, n_parts, time_range)).sink_parquet(
            pl.PartitionBy(spill, key=BUCKET, include_key=False, approximate_bytes_per_file=None),
            mkdir=True,
            row_group_size=16_384,  # flushed often: an open part holds one small row group, not megabytes
            engine="streaming",
        )
        spilled = _spilled_parts(Path(spill), n_parts)
        ordered = (order_part(pl.read_parquet(files), config) for files in spilled if files)
        parts, schema, digest = _write_parts(store, sid, ordered)
    manifest = SnapshotManifest(
        snapshot_id=sid,
        created_at=datetime.now(timezone.utc).isoformat(),
        parts=parts,
        sources={t: sorted(k) for t, k in sources.items()},
        rows=rows,
        unlabeled_rows=unlabeled,
        positive_rate=positives / rows,
        target_kind=task.kind,
        classes=task.classes,
        time_column=time_col,
        time_min=str(stats["lo"]) if time_col else None,
        time_max=str(stats["hi"]) if time_col else None,
        columns=schema,
        content_sha256=digest,
        config_fingerprint=config.fingerprint(),
    )
    try:
        store.write_json(manifest_key, manifest.model_dump(), if_none_match=True)
    except PreconditionFailed:  # another run finished the same snapshot first: same content
        return SnapshotManifest.model_validate(store.read_json(manifest_key))
    return manifest


def _labelled_stats(
    plan: pl.LazyFrame, label: pl.Expr, config: DatasetConfig, tables: dict[str, pl.LazyFrame]
) -> dict[str, Any]:
    """One streamed pass: labelled and unlabelled rows, positives and the time range; an error saying
    what to change when the window holds no labelled rows or only one class."""
    time_col, labelled = config.time_column, pl.col(LABELLED)
    times = pl.col(time_col).filter(labelled) if time_col else None
    span = [times.min().alias("lo"), times.max().alias("hi")] if time_col else []
    stats = (
        plan.select(
            labelled.sum().alias("rows"),
            (~labelled).sum().alias("unlabeled"),
            label.filter(labelled).cast(pl.Float64).sum().alias("positives"),
            label.filter(labelled).n_unique().alias("distinct"),
            *span,
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    rows, unlabeled = int(stats["rows"]), int(stats["unlabeled"])
    distinct = int(stats["distinct"] or 0)
    if rows == 0:
        if time_col is None:
            raise EmptyWindow(f"{config.base_table!r} holds no labelled rows ({unlabeled} without a label)")
        covered = _time_span(tables[config.base_table], config)
        raise EmptyWindow(
            f"the window {config.window.start} .. {config.window.end} holds no labelled rows of "
            f"{config.base_table!r}"
            f" (the data covers {covered}); change window in the dataset config or the flow parameters"
        )
    if distinct < 2:
        what = "a classifier needs two classes" if config.target.kind != "regression" else "nothing to learn"
        raise SingleClassTarget(
            f"target {config.target.name!r} ({config.target.expression or 'column'}) has only one value in "
            f"{rows} rows; {what}: widen the window or check the target"
        )
    return stats


def _write_parts(
    store: ArtifactStore, sid: str, frames: Any
) -> tuple[list[SnapshotPart], dict[str, str], str]:
    """Write each frame (in split order) as the next part; return the parts, the column types and
    the snapshot's content hash (over the parts' hashes, in order)."""
    parts: list[SnapshotPart] = []
    schema: dict[str, str] = {}
    digest = hashlib.sha256()
    for i, part in enumerate(frames):
        buf = io.BytesIO()
        part.write_parquet(buf, compression="zstd", statistics=True)
        data = buf.getvalue()
        key = f"{SNAPSHOTS}/{sid}/part-{i:05d}.parquet"
        store.write_bytes(key, data)
        sha = hashlib.sha256(data).hexdigest()
        digest.update(sha.encode())
        parts.append(SnapshotPart(key=key, rows=part.height, sha256=sha))
        schema = schema or {c: str(t) for c, t in part.schema.items()}
    return parts, schema, digest.hexdigest()


def _spilled_parts(spill: Path, n_parts: int) -> list[list[Path]]:
    """The spilled files of each part, in order (a part's files in the order the sink wrote them)."""
    found: dict[int, list[Path]] = {}
    for d in spill.iterdir():
        found[int(d.name.split("=", 1)[1])] = sorted(d.glob("*.parquet"), key=lambda p: (len(p.name), p.name))
    return [found.get(i, []) for i in range(n_parts)]


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
    key = (store.uri, manifest.snapshot_id, manifest.content_sha256)
    with _LAST_LOCK:
        if _LAST.get("key") != key:
            _LAST.update(key=key, frame=store.scan_parquet(manifest.part_keys).collect())
        return _LAST["frame"]


def load_rows(
    manifest: SnapshotManifest,
    store: ArtifactStore,
    start: int,
    stop: int | None = None,
    every: int = 1,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Rows [start, stop) of the snapshot (every ``every``-th, counted from ``start``), reading only the
    parts they lie in, one at a time: a range of a large snapshot costs the memory of that range."""
    stop = manifest.rows if stop is None else min(stop, manifest.rows)
    offsets, frames = manifest.part_offsets, []
    for i, key in enumerate(manifest.part_keys):
        lo, hi = max(start, offsets[i]), min(stop, offsets[i + 1])
        if lo >= hi:
            continue
        lf = store.scan_parquet([key])
        if columns is not None:
            lf = lf.select(columns)
        part = lf.slice(lo - offsets[i], hi - lo).collect()
        if every > 1:
            part = part.gather_every(every, offset=(-(lo - start)) % every)
        frames.append(part)
    return pl.concat(frames) if frames else pl.DataFrame()


def spacing(rows: int, at_most: int) -> int:
    """Take every ``spacing``-th of ``rows`` rows to keep at most ``at_most`` of them."""
    return max(1, -(-rows // at_most))


_LAST: dict[str, Any] = {}
_LAST_LOCK = threading.Lock()


def encoded_outcome(manifest: SnapshotManifest) -> pl.Expr:
    """A reported outcome encoded as the snapshot encodes its target: 0/1, the number, or the class's
    code in the snapshot's classes (the service accepts only the classes its model knows)."""
    if manifest.target_kind == "regression":
        return pl.col("outcome").cast(pl.Float64)
    if manifest.target_kind == "multiclass":
        codes = list(range(len(manifest.classes)))
        return (
            pl.col("outcome").cast(pl.String).replace_strict(manifest.classes, codes, return_dtype=pl.Int32)
        )
    return pl.col("outcome").cast(pl.Int8)


def labelled_predictions(
    store: ArtifactStore, config: DatasetConfig, input_columns: list[str], manifest: SnapshotManifest
) -> tuple[pl.DataFrame, list[str]]:
    """Logged predictions of this model joined with their observed outcomes, shaped like a snapshot's
    rows: the model inputs, the time column and the target (encoded as ``manifest`` encodes it).
    Returns (rows, log keys used)."""
    pred_keys = log_keys(store, PREDICTIONS, config.model_name)
    fb_keys = log_keys(store, FEEDBACK, config.model_name)
    keys = sorted(pred_keys + fb_keys)
    if not pred_keys or not fb_keys:
        return pl.DataFrame(), keys
    outcomes = outcome_per_request(store.scan_parquet(fb_keys)).select(
        "request_id", encoded_outcome(manifest).alias(config.target.name)
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
    manifest: SnapshotManifest,
    config: DatasetConfig,
    store: ArtifactStore,
    input_columns: list[str],
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
) -> SnapshotManifest:
    """A new snapshot: the raw-zone snapshot plus every prediction the service logged that has an
    observed outcome (the freshest labelled data there is). Content-addressed like any snapshot."""
    extra, keys = labelled_predictions(store, config, input_columns, manifest)
    if extra.height == 0:
        return manifest
    sid = hashlib.sha256(
        json.dumps(
            {
                "base": manifest.snapshot_id,
                "logs": keys,
                "rows_per_part": rows_per_part,
                "code": _code_version(),
            }
        ).encode()
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
        pl.concat([base.select(cols), extra.select(cols).cast({c: base.schema[c] for c in cols})]),
        config,
        rows_per_part,
    )
    chunks = (df.slice(lo, rows_per_part) for lo in range(0, df.height, rows_per_part))
    parts, schema, digest = _write_parts(store, sid, chunks)
    target = df[config.target.name]
    extended = manifest.model_copy(
        update=dict(
            snapshot_id=sid,
            created_at=datetime.now(timezone.utc).isoformat(),
            parts=parts,
            data_key=None,
            sources={**manifest.sources, "labelled_predictions": keys},
            rows=df.height,
            positive_rate=float(target.mean()),
            time_min=str(df[time_col].min()) if time_col else None,
            time_max=str(df[time_col].max()) if time_col else None,
            columns=schema,
            content_sha256=digest,
        )
    )
    try:
        store.write_json(manifest_key, extended.model_dump(), if_none_match=True)
    except PreconditionFailed:
        return SnapshotManifest.model_validate(store.read_json(manifest_key))
    return extended
