"""Batch serving throughput (rows/s, batches of 1,000): the BentoML service's columnar and record
endpoints and the bare endpoint, against in-process transform + ``Booster.predict`` of the same rows.

Target: the service's best batch path reaches at least 50% of in-process rows/s.

    .venv/bin/python bench/serving_batch.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import time

from lib.loadgen import run_load
from lib.serving_setup import serving_stack
from rich.console import Console
from rich.table import Table


def in_process_rows_per_s(booster, transform, rows, seconds: float) -> tuple[float, float]:
    """(transform + predict, predict only) rows/s for batches of len(rows), 2 threads."""
    X = transform.to_matrix(rows)
    out = []
    for fn in (
        lambda: booster.predict(transform.to_matrix(rows), num_threads=2),
        lambda: booster.predict(X, num_threads=2),
    ):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
        out.append(n * rows.height / (time.perf_counter() - start))
    return out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    console = Console()
    with console.status("training a model and starting both servers..."):
        stack = serving_stack()
        env = stack.__enter__()
    try:
        full, predict_only = in_process_rows_per_s(
            env["booster"], env["transform"], env["rows"], args.seconds / 2
        )
        runs = {
            "BentoML /predict_columns": run_load(
                f"{env['bento']}/predict_columns", env["columns"], 2, args.seconds
            ),
            "BentoML /predict_batch": run_load(
                f"{env['bento']}/predict_batch", env["batch"], 2, args.seconds
            ),
            "bare starlette (records)": run_load(
                f"{env['bare']}/predict_batch", env["batch"], 2, args.seconds
            ),
        }
    finally:
        stack.__exit__(None, None, None)
    rows = env["rows"].height
    table = Table(title=f"batches of {rows} rows, 2 clients")
    for col in ("path", "rows/s", "p50 ms/batch", "errors"):
        table.add_column(col, justify="right")
    table.add_row("in-process transform + predict", f"{full:.0f}", f"{1000 * rows / full:.1f}", "-")
    table.add_row("in-process predict only", f"{predict_only:.0f}", f"{1000 * rows / predict_only:.1f}", "-")
    for name, r in runs.items():
        table.add_row(name, f"{r.rps * rows:.0f}", f"{r.pct(50):.1f}", str(r.errors))
    console.print(table)
    best = max(r.rps * rows for name, r in runs.items() if name.startswith("BentoML"))
    ratio = best / full
    print(f"RESULT batch_rows_ratio={ratio:.3f} target>=0.50 {'PASS' if ratio >= 0.5 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
