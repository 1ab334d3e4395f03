"""Ingestion: find the batches each source offers, validate the new ones, keep the good ones.

A *batch* is the unit of incremental ingestion and of quarantine: one file (or hive partition) of a
file source, one full query result of a SQL source, one full read of an HTTP API. Batches are
identified by content (file etag, or a hash of the fetched rows), so a run reads only batches it has
not seen before (unless ``rebuild``), and a changed file is a new batch.

Query and API results are landed in the raw zone as Parquet before validation, so every batch, good
or bad, has its raw bytes in the store. Bad batches are copied to
``quarantine/<dataset>/<table>/<batch>/`` with a JSON report; nothing is deleted. A table's unique key
holds across batches too: a batch repeating keys of a batch accepted before (a partition delivered
twice) is quarantined with the repeated keys in its report, so it never reaches a snapshot.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel

from tasks.core.config import FileSource, HttpSource, SqlSource, TableConfig
from tasks.core.context import RunContext
from tasks.core.errors import BadInput, SourceUnavailable
from tasks.core.store import ArtifactStore, LocalStore
from tasks.data.validate import (
    MAX_EXAMPLES,
    ContractFailure,
    DataContractError,
    ValidationReport,
    merge_failures,
    too_few_rows,
    validate_batch,
)

_GLOB = re.compile(r"[*?\[]")


class BatchRef(BaseModel):
    """Where one batch's raw bytes are and what they are; ``batch_id`` changes when content does."""

    table: str
    batch_id: str
    store_uri: str
    key: str
    format: Literal["parquet", "csv"]
    partition: dict[str, str] = {}
    fingerprint: str


class IngestedTable(BaseModel):
    """The validated batches a table consists of now, and what this run did."""

    table: str
    valid_keys: list[str]
    rows: int
    new_batches: int
    reused_batches: int
    quarantined: list[str]  # quarantine keys of batches left out


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _hive_values(key: str) -> dict[str, str]:
    return dict(seg.split("=", 1) for seg in key.split("/")[:-1] if "=" in seg)


def _source_store(path: str, ctx: RunContext) -> tuple[ArtifactStore, str]:
    """The store holding ``path`` and the path relative to it (store key, absolute path, or s3://)."""
    if path.startswith("s3://"):
        bucket = path.removeprefix("s3://").split("/", 1)[0]
        return ctx.store_at(f"s3://{bucket}"), path.removeprefix(f"s3://{bucket}").lstrip("/")
    if path.startswith("/"):
        base = Path(_GLOB.split(path, 1)[0]).parent if _GLOB.search(path) else Path(path).parent
        return LocalStore(base), str(Path(path).relative_to(base))
    if "://" in path:
        raise BadInput(f"file source path {path!r}: use a store key, an absolute path or s3://")
    return ctx.store, path.strip("/")


def discover_file_batches(table: str, source: FileSource, ctx: RunContext) -> list[BatchRef]:
    src_store, rel = _source_store(source.path, ctx)
    if _GLOB.search(rel):
        prefix = _GLOB.split(rel, 1)[0].rsplit("/", 1)[0] if "/" in _GLOB.split(rel, 1)[0] else ""
        keys = [k for k in src_store.list(prefix) if fnmatch.fnmatch(k, rel)]
    else:
        keys = src_store.list(rel)
    ext = ".parquet" if source.format == "parquet" else ".csv"
    keys = [k for k in keys if k.endswith(ext) or k.endswith(ext + ".gz")]
    if not keys:
        raise SourceUnavailable(
            f"table {table!r}: no {source.format} files at {source.path!r} in {src_store.uri}. "
            "Land data first (make demo does: python -m flows.land) or fix tables."
            f"{table}.source.path in the dataset config."
        )
    refs = []
    for key in keys:
        etag = src_store.etag(key) or ""
        refs.append(
            BatchRef(
                table=table,
                batch_id=_hash(table, src_store.uri, key, etag),
                store_uri=src_store.uri,
                key=key,
                format=source.format,
                partition=_hive_values(key) if source.hive_partitioning else {},
                fingerprint=etag,
            )
        )
    return refs


def _land_frame(table: str, kind: str, df: pl.DataFrame, store: ArtifactStore) -> BatchRef:
    """Write a fetched result to the raw zone under its content hash; the batch points at it."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd")
    digest = hashlib.sha256(df.hash_rows(seed=0).to_numpy().tobytes() + str(df.schema).encode()).hexdigest()[
        :16
    ]
    key = f"raw/{table}/{kind}-{digest}.parquet"
    if not store.exists(key):
        store.write_bytes(key, buf.getvalue())
    return BatchRef(
        table=table,
        batch_id=_hash(table, key),
        store_uri=store.uri,
        key=key,
        format="parquet",
        fingerprint=digest,
    )


def fetch_sql(table: str, source: SqlSource) -> pl.DataFrame:
    """Run the configured query; unreachable databases raise SourceUnavailable naming table and URL."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    try:
        url = make_url(source.url)
    except sa.exc.ArgumentError as exc:
        raise BadInput(f"table {table!r}: source.url is not a SQLAlchemy URL: {exc}") from None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).is_file():
            raise SourceUnavailable(
                f"table {table!r}: SQLite database {url.database} does not exist (url {shown})"
            )
    connect_args = {"timeout": source.timeout_seconds} if url.get_backend_name() == "sqlite" else {}
    engine = sa.create_engine(url, connect_args=connect_args)
    try:
        try:
            conn = engine.connect()
        except sa.exc.DBAPIError as exc:
            raise SourceUnavailable(f"table {table!r}: cannot connect to {shown}: {exc.orig}") from None
        with conn:
            try:
                return pl.read_database(sa.text(source.query), connection=conn, infer_schema_length=None)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:  # the connection dropped: worth a retry
                    raise SourceUnavailable(
                        f"table {table!r}: lost the connection to {shown}: {exc.orig}"
                    ) from None
                raise BadInput(
                    f"table {table!r}: query failed on {shown}: {exc.orig}; fix tables.{table}.source.query"
                ) from None
    finally:
        engine.dispose()


def fetch_http(table: str, source: HttpSource) -> pl.DataFrame:
    """Read every page of a JSON API into one frame."""
    import httpx

    records: list[dict[str, Any]] = []
    url: str | None = source.url
    params = dict(source.params)
    if source.pagination.style == "page":
        params[source.pagination.size_param] = str(source.pagination.page_size)
        params[source.pagination.page_param] = "1"
    transport = httpx.HTTPTransport(retries=source.retries)
    with httpx.Client(timeout=source.timeout_seconds, headers=source.headers, transport=transport) as client:
        for page_no in range(1, source.pagination.max_pages + 1):
            try:
                resp = client.get(url, params=params or None)  # {} would wipe a next-link query
            except httpx.HTTPError as exc:
                raise SourceUnavailable(f"table {table!r}: GET {url} failed: {exc!r}") from None
            if resp.status_code >= 500 or resp.status_code == 429:
                raise SourceUnavailable(f"table {table!r}: GET {resp.url} answered {resp.status_code}")
            if resp.status_code >= 400:
                raise BadInput(
                    f"table {table!r}: GET {resp.url} answered {resp.status_code}: {resp.text[:200]}"
                )
            try:
                body = resp.json()
            except ValueError:
                raise BadInput(
                    f"table {table!r}: GET {resp.url} did not return JSON: {resp.text[:200]!r}"
                ) from None
            page = (
                body
                if source.records_field is None
                else (body.get(source.records_field) if isinstance(body, dict) else None)
            )
            if not isinstance(page, list):
                where = f"field {source.records_field!r}" if source.records_field else "the response body"
                raise BadInput(
                    f"table {table!r}: {where} of {resp.url} is not a list of records; set records_field"
                )
            records.extend(page)
            style = source.pagination.style
            if style == "none":
                break
            if style == "page":
                if len(page) < source.pagination.page_size:
                    break
                params[source.pagination.page_param] = str(page_no + 1)
            elif style == "next_url":
                url = body.get(source.pagination.next_url_field) if isinstance(body, dict) else None
                params = {}
                if not url:
                    break
        else:
            raise SourceUnavailable(
                f"table {table!r}: more than {source.pagination.max_pages} pages; raise pagination.max_pages"
            )
    return pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame()


def discover_batches(table: str, table_cfg: TableConfig, ctx: RunContext) -> list[BatchRef]:
    """The batches the table's source offers now (query and API results are landed first)."""
    source = table_cfg.source
    if isinstance(source, FileSource):
        return discover_file_batches(table, source, ctx)
    if isinstance(source, SqlSource):
        return [_land_frame(table, "sql", fetch_sql(table, source), ctx.store)]
    if isinstance(source, HttpSource):
        return [_land_frame(table, "http", fetch_http(table, source), ctx.store)]
    raise BadInput(f"table {table!r}: unknown source kind {getattr(source, 'kind', source)!r}")


def read_batch(ref: BatchRef, data: bytes) -> pl.DataFrame:
    """Parse a batch's bytes; CSV is read as text so the contract, not a guess, decides types."""
    if ref.format == "parquet":
        df = pl.read_parquet(io.BytesIO(data))
    else:
        df = pl.read_csv(io.BytesIO(data), infer_schema=False, null_values=["", "NA"])
    if ref.partition:
        df = df.with_columns(pl.lit(v).alias(k) for k, v in ref.partition.items() if k not in df.columns)
    return df


def ingest_state_key(dataset: str, table: str) -> str:
    """Which batches of ``table`` (of dataset ``dataset``) were seen, and what became of each."""
    return f"state/ingest/{dataset}/{table}.json"


def _contract_hash(table_cfg: TableConfig) -> str:
    return _hash(table_cfg.contract.model_dump_json())


def _quarantine(
    store: ArtifactStore, dataset: str, ref: BatchRef, report: ValidationReport, raw: bytes
) -> str:
    prefix = f"quarantine/{dataset}/{ref.table}/{ref.batch_id}"
    ext = "parquet" if ref.format == "parquet" else "csv"
    store.write_bytes(f"{prefix}/source.{ext}", raw)
    store.write_json(
        f"{prefix}/report.json",
        {**report.model_dump(mode="json"), "source": ref.model_dump(), "message": report.summary()},
    )
    return prefix


def ingest_batches(
    table: str,
    refs: list[BatchRef],
    table_cfg: TableConfig,
    ctx: RunContext,
    *,
    rebuild: bool = False,
    on_invalid: Literal["fail", "skip"] = "fail",
) -> tuple[IngestedTable, list[ValidationReport]]:
    """Validate batches not seen before (or seen under another contract); return the table's current
    valid batches. Batches accepted before are kept; a new batch repeating their unique keys is not.

    Raises ``DataContractError`` (after quarantining) when a batch fails and ``on_invalid`` is fail.
    """
    store = ctx.store
    dataset = ctx.config.name
    state_key = ingest_state_key(dataset, table)
    state: dict[str, Any] = {} if rebuild else (store.read_json(state_key) if store.exists(state_key) else {})
    contract_hash = _contract_hash(table_cfg)
    unique = table_cfg.contract.unique
    entries = {  # what was decided before under this contract stands
        ref.batch_id: state[ref.batch_id]
        for ref in refs
        if ref.batch_id in state and state[ref.batch_id].get("contract", contract_hash) == contract_hash
    }
    accepted = [e for e in entries.values() if e["status"] == "valid"] if unique else []
    source_of = {e["key"]: e["source"] for e in accepted}  # validated batch -> the file it came from
    seen = _accepted_key_hashes(store, [e["key"] for e in accepted], unique)
    valid, quarantined, failed_reports = [], [], []
    new = reused = rows = 0
    for ref in refs:
        entry = entries.get(ref.batch_id)
        if entry is None:
            new += 1
            src = ctx.store_at(ref.store_uri)
            raw = src.read_bytes(ref.key)
            vkey = f"validated/{dataset}/{table}/{ref.batch_id}.parquet"
            report, mine = validate_and_write(
                ref, raw, table_cfg, table, ctx.settings.ingest_chunk_rows, seen, store, source_of, vkey
            )
            if report.ok:
                entry = {"status": "valid", "key": vkey, "rows": report.rows, "source": ref.key}
                if mine is not None:
                    source_of[vkey] = ref.key
                    seen = mine if seen is None else pl.concat([seen, mine], rechunk=False)  # no re-copy
            else:
                qkey = _quarantine(store, dataset, ref, report, raw)
                entry = {"status": "quarantined", "key": qkey, "rows": report.rows, "source": ref.key}
                entry["message"] = report.summary()
                failed_reports.append(report)
            state[ref.batch_id] = {**entry, "contract": contract_hash}
        else:
            reused += 1
            if entry["status"] == "quarantined":
                failed_reports.append(
                    ValidationReport.model_validate(store.read_json(entry["key"] + "/report.json"))
                )
        if entry["status"] == "valid":
            valid.append(entry["key"])
            rows += entry["rows"]
        else:
            quarantined.append(entry["key"])
    store.write_json(state_key, state)
    result = IngestedTable(
        table=table,
        valid_keys=valid,
        rows=rows,
        new_batches=new,
        reused_batches=reused,
        quarantined=quarantined,
    )
    if failed_reports and on_invalid == "fail":
        raise DataContractError(failed_reports, quarantined)
    if not valid:
        raise BadInput(
            f"table {table!r}: no valid batches ({len(quarantined)} quarantined); see {quarantined[:3]}"
        )
    return result, failed_reports


def _chunks(ref: BatchRef, raw: bytes, chunk_rows: int) -> tuple[int, Iterator[pl.DataFrame]]:
    """A batch's rows and its frames: one, or for a Parquet batch of more than ``chunk_rows`` rows,
    chunks of that many decoded one at a time (the file's bytes stay compressed in memory)."""
    if ref.format == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(io.BytesIO(raw))
        rows = parquet.metadata.num_rows
        if rows > chunk_rows:

            def decoded() -> Iterator[pl.DataFrame]:
                for batch in parquet.iter_batches(batch_size=chunk_rows):
                    df = pl.from_arrow(batch)
                    yield df.with_columns(
                        pl.lit(v).alias(k) for k, v in ref.partition.items() if k not in df.columns
                    )

            return rows, decoded()
    df = read_batch(ref, raw)
    return df.height, iter([df])


def validate_and_write(
    ref: BatchRef,
    raw: bytes,
    table_cfg: TableConfig,
    table: str,
    chunk_rows: int,
    seen: pl.DataFrame | None,
    store: ArtifactStore,
    source_of: dict[str, str],
    vkey: str,
) -> tuple[ValidationReport, pl.DataFrame | None]:
    """Validate one new batch, chunk by chunk when it is large, and write its typed rows to ``vkey`` if
    every chunk passes; returns the report (all chunks' failures, merged) and the batch's key hashes.

    Keys must be unique within the batch (pandera, per chunk; across its chunks by a 128-bit fingerprint
    of each key, two independent 64-bit hashes: 16 bytes a row is all a chunked batch holds of the
    chunks before) and against accepted batches (``seen``)."""
    import pyarrow.parquet as pq

    contract, unique = table_cfg.contract, table_cfg.contract.unique
    try:
        rows, chunks = _chunks(ref, raw, chunk_rows)
    except Exception as exc:  # noqa: BLE001 - any parse error means an unreadable batch
        return ValidationReport(table=table, batch=ref.key, rows=0, failures=[_unreadable(ref, exc)]), None
    report = ValidationReport(table=table, batch=ref.key, rows=rows)
    whole = rows <= chunk_rows
    too_few = None if whole else too_few_rows(rows, contract)  # (a whole batch's is checked with it)
    if too_few is not None:
        report.failures.append(too_few)
        return report, None
    failures: list[ContractFailure] = []
    keys = _BatchKeys(unique, seen, store, source_of, vkey)
    out, writer, typed = io.BytesIO(), None, None
    while True:
        try:
            df = next(chunks)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - a chunk that does not decode: an unreadable batch
            return ValidationReport(
                table=table, batch=ref.key, rows=0, failures=[_unreadable(ref, exc)]
            ), None
        text = set(df.columns) if ref.format == "csv" else set(ref.partition)
        typed, part = validate_batch(df, contract, table, ref.key, text, whole=whole)
        failures.extend(part.failures)
        typed_keys = not any(f.column is None or f.column in unique for f in part.failures)
        if unique and typed_keys and set(unique) <= set(typed.columns):  # other rules' failures aside
            failures.extend(keys.check(typed.select(unique)))
        if not failures and not whole:  # chunks go to one file, row group by row group
            chunk = typed.select(list(contract.columns)).to_arrow()
            writer = writer or pq.ParquetWriter(out, chunk.schema, compression="zstd")
            writer.write_table(chunk)
    report.failures = merge_failures([*failures, *keys.repeated()])
    if writer is not None:
        writer.close()
    if not report.ok:
        return report, None
    if whole:
        store.write_parquet(vkey, typed.select(list(contract.columns)))
    else:
        store.write_bytes(vkey, out.getvalue())
    return report, keys.hashes()


class _BatchKeys:
    """A batch's unique keys, chunk by chunk: repeats within the batch (across its chunks, by a 128-bit
    fingerprint of each key), repeats of accepted batches' keys (``seen``), and the hashes the batch
    adds to the accepted ones once it passes."""

    def __init__(
        self,
        unique: list[str],
        seen: pl.DataFrame | None,
        store: ArtifactStore,
        source_of: dict[str, str],
        vkey: str,
    ):
        self.unique, self.seen, self.store, self.source_of, self.vkey = unique, seen, store, source_of, vkey
        self.earlier: pl.DataFrame | None = None  # fingerprints of this batch's keys so far
        self.hits: list[pl.DataFrame] = []
        self.added: list[pl.DataFrame] = []

    def check(self, keys: pl.DataFrame) -> list[ContractFailure]:
        """One chunk's keys: a failure for keys an earlier chunk had (the earlier chunks are scanned
        for this chunk's keys: a set of one chunk); repeats of accepted batches are kept for later."""
        failures = []
        prints = _fingerprints(keys, self.unique)
        if self.earlier is not None:
            candidates = self.earlier.filter(pl.col("__h1").is_in(prints["__h1"].implode()))
            again = keys.filter(
                pl.struct(prints).is_in(pl.struct(candidates).implode()) if candidates.height else False
            )
            if again.height:
                failures.append(
                    ContractFailure(
                        column=", ".join(self.unique),
                        rule="duplicate key rows",
                        failing_rows=again.height,
                        examples=again.head(MAX_EXAMPLES).to_dicts(),
                    )
                )
        self.earlier = prints if self.earlier is None else pl.concat([self.earlier, prints], rechunk=False)
        found = _repeated_key_rows(keys, self.seen, self.unique, self.store, self.source_of)
        if found is not None:
            self.hits.append(found)
        self.added.append(_key_hashes(keys.lazy(), self.unique, self.vkey).collect())
        return failures

    def repeated(self) -> list[ContractFailure]:
        """The failure for rows repeating accepted batches' keys, if any."""
        return [_repeated_failure(pl.concat(self.hits), self.unique)] if self.hits else []

    def hashes(self) -> pl.DataFrame | None:
        return pl.concat(self.added) if self.added else None


def _accepted_key_hashes(store: ArtifactStore, keys: list[str], unique: list[str]) -> pl.DataFrame | None:
    """The unique keys of accepted batches, as one 64-bit hash per row (a few bytes a row, whatever the
    key's width) and the batch it came from; a hit is confirmed on the real columns before it counts."""
    if not keys:
        return None
    return pl.concat([_key_hashes(store.scan_parquet([k]).select(unique), unique, k) for k in keys]).collect()


def _fingerprints(keys: pl.DataFrame, unique: list[str]) -> pl.DataFrame:
    """Two independent 64-bit hashes of each key (as text, like ``_key_hashes``): equal keys, equal
    pairs; different keys share a pair with chance about 2^-128."""
    key = pl.struct([pl.col(c).cast(pl.String) for c in unique])
    return keys.select(key.hash(seed=0).alias("__h1"), key.hash(seed=0x9E3779B9).alias("__h2"))


def _key_hashes(keys: pl.LazyFrame, unique: list[str], validated_key: str) -> pl.LazyFrame:
    """One hash per row of the unique key columns (cast to text, so a key hashes the same whatever
    types a batch arrived with), with the validated batch it belongs to."""
    return keys.select(
        pl.struct([pl.col(c).cast(pl.String) for c in unique]).hash(seed=0).alias("__hash"),
        pl.lit(validated_key).cast(pl.Categorical).alias("__batch"),
    )


def _repeated_key_rows(
    keys: pl.DataFrame,
    seen: pl.DataFrame | None,
    unique: list[str],
    store: ArtifactStore,
    source_of: dict[str, str],
) -> pl.DataFrame | None:
    """The rows of a batch whose unique key an accepted batch already has, with the file that batch
    came from (``__batch``); None if there are none.

    Accepted keys are held as hashes: the accepted rows are scanned for this batch's hashes (a hash set
    of one batch, not of everything accepted), and the few candidate batches are then read to confirm
    the hits on the real key columns (a hash collision is never reported as a duplicate)."""
    if seen is None or seen.height == 0:
        return None
    mine = _key_hashes(keys.lazy(), unique, "").collect()["__hash"]
    candidates = seen.filter(pl.col("__hash").is_in(mine.implode()))
    if candidates.height == 0:
        return None
    batches = candidates["__batch"].cast(pl.String).unique(maintain_order=True).to_list()
    earlier = pl.concat(
        [
            store.read_parquet(b).select(unique).with_columns(pl.lit(source_of.get(b, b)).alias("__batch"))
            for b in batches
        ]
    )
    hits = keys.join(
        earlier.cast({c: keys.schema[c] for c in unique}), on=unique, how="inner", nulls_equal=True
    )
    return hits if hits.height else None


def _repeated_failure(hits: pl.DataFrame, unique: list[str]) -> ContractFailure:
    batches = hits["__batch"].unique(maintain_order=True).to_list()
    return ContractFailure(
        column=", ".join(unique),
        rule=f"unique across batches: {hits.height} row(s) repeat keys of accepted batch(es) {batches[:3]} "
        "(a partition delivered twice?); remove the duplicate delivery, or rebuild if it replaces the "
        "old one",
        failing_rows=hits.height,
        examples=hits.select(unique).head(MAX_EXAMPLES).to_dicts(),
    )


def _unreadable(ref: BatchRef, exc: Exception) -> ContractFailure:
    return ContractFailure(
        column=None,
        rule=f"unreadable {ref.format}: {type(exc).__name__}: {str(exc)[:300]}",
        failing_rows=0,
        examples=[],
    )
