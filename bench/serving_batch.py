"""Batch serving throughput (rows/s, batches of 10,000): the BentoML service's Arrow, columnar-JSON
and record endpoints and the bare endpoint, against in-process transform + ``Booster.predict`` of the
same rows.

The Arrow path is measured over the steady state (``--seconds`` 60 after a 10 s warm-up, shipping of
the prediction log included); the JSON paths, the stock BentoML service of the same model (the tool a
user would pick instead) and the bare endpoint for ``--json-seconds`` each. Each target ends as a
``RESULT <metric>=<value> target<op><value> PASS|FAIL`` line.
Targets: ``/predict_arrow`` reaches at least 50% of in-process rows/s (issue 12); so should the best
JSON path (it cannot: JSON parsing and validation of every value cost more than the model).

    .venv/bin/python bench/serving_batch.py [--seconds 60] [--json-seconds 20] [--rows 10000]
"""

from __future__ import annotations

import argparse
import os
import time

from lib.loadgen import run_load
from lib.results import result
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
    parser.add_argument("--seconds", type=float, default=60, help="the Arrow path, measured after --warmup")
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--json-seconds", type=float, default=20, help="each JSON path and baseline")
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    console = Console()
    # 10,000 records as JSON are ~3 MB: the service's request limit must let every path's batch in
    os.environ.setdefault("DRIFTLOOP_SERVING__MAX_REQUEST_BYTES", str(40 * 1024 * 1024))
    with console.status("training a model and starting both servers..."):
        stack = serving_stack(args.rows)
        env = stack.__enter__()
    try:
        full, predict_only = in_process_rows_per_s(env["booster"], env["transform"], env["rows"], 10)
        short = args.json_seconds
        runs = {
            "BentoML /predict_arrow": run_load(
                f"{env['bento']}/predict_arrow",
                env["arrow"],
                2,
                args.seconds,
                warmup=args.warmup,
                content_type="application/vnd.apache.arrow.stream",
            ),
            "BentoML /predict_columns": run_load(f"{env['bento']}/predict_columns", env["columns"], 2, short),
            "BentoML /predict_batch": run_load(f"{env['bento']}/predict_batch", env["batch"], 2, short),
            "stock BentoML (records)": run_load(f"{env['stock']}/predict_batch", env["batch"], 2, short),
            "bare starlette (records)": run_load(f"{env['bare']}/predict_batch", env["batch"], 2, short),
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
    best_json = max(r.rps * rows for n, r in runs.items() if n.startswith("BentoML") and "arrow" not in n)
    if any(r.errors for r in runs.values()):  # an error answers fast: its rows/s would mean nothing
        raise SystemExit(f"requests failed: { {n: r.errors for n, r in runs.items()} }")
    result("json_batch_rows_ratio", best_json / full, ">=", 0.5)
    arrow = runs["BentoML /predict_arrow"].rps * rows
    stock = runs["stock BentoML (records)"].rps * rows
    console.print(f"/predict_arrow vs the stock BentoML service: {arrow / stock:.2f}x")
    result("arrow_batch_rows_ratio", arrow / full, ">=", 0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
