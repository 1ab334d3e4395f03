"""Soak: the service under steady load for a long while, its champion moved every minute, its logs
compacted every minute, as a team would run it for months, compressed.

8 clients send single-row /predict for ``--minutes`` (10 by default); each minute the champion alias
moves between two registered versions (the service hot-swaps without a restart) and the compaction
step merges the log files shipped so far. Measured in this run: failed requests, p99 latency per
minute, the workers' resident memory at the end vs after the first (warm) minute, and the number of
prediction-log files left after each compaction vs the number shipped.

Ends with RESULT lines: failed requests (0), worst per-minute p99 (< 100 ms), RSS growth (< 10%),
log files after the last compaction (bounded: one per hour touched, plus what shipped meanwhile).

    .venv/bin/python bench/soak.py [--minutes 10] [--clients 8]
"""

from __future__ import annotations

import argparse

import psutil
from lib.loadgen import run_load
from lib.results import result
from lib.serving_setup import open_serving_stack
from rich.console import Console
from rich.progress import Progress
from rich.table import Table


def worker_rss_mb(pid: int) -> float:
    """Resident memory of the BentoML server and its workers, MB."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    stack, env = open_serving_stack(console := Console(), "training a version and starting the service...")
    try:
        from lib.pipeline import run_bare

        from flows.schemas import TrainingParams
        from tasks.core.logs import PREDICTIONS, log_keys
        from tasks.core.settings import Settings
        from tasks.registry.versions import Registry
        from tasks.serving.compaction import compact_log

        store, model = env["store"], env["model_name"]
        with console.status("training a second version to swap with..."):
            run_bare(Settings(), TrainingParams(n_trials=2, cv_folds=0, seed=3, min_gain_lower=0.5))
        registry = Registry(store, model)
        versions = registry.versions()[:2]
        rows, first_rss = [], None
        with Progress(console=console) as progress:
            task = progress.add_task(
                f"{args.clients} clients, champion moving every minute", total=args.minutes
            )
            for minute in range(args.minutes):
                champion = versions[minute % 2]
                registry.set_alias("champion", champion, reason="soak: move every minute", actor="bench")
                load = run_load(f"{env['bento']}/predict", env["single"], args.clients, 60, warmup=0)
                shipped = len(log_keys(store, PREDICTIONS, model))
                compacted = compact_log(store, PREDICTIONS, model, retention_days=30)
                rss = worker_rss_mb(env["bento_pid"])
                first_rss = first_rss or rss
                rows.append((minute + 1, champion, load, shipped, compacted.files_after, rss))
                progress.advance(task)
    finally:
        stack.__exit__(None, None, None)

    table = Table(title="soak, per minute")
    for col in ("minute", "champion", "req/s", "p99 ms", "errors", "log files before/after", "RSS MB"):
        table.add_column(col, justify="right")
    for minute, champion, load, shipped, after, rss in rows:
        table.add_row(
            str(minute),
            f"v{champion}",
            f"{load.rps:.0f}",
            f"{load.pct(99):.1f}",
            str(load.errors),
            f"{shipped}/{after}",
            f"{rss:.0f}",
        )
    console.print(table)
    errors = sum(r[2].errors for r in rows)
    worst_p99 = max(r[2].pct(99) for r in rows)
    growth = rows[-1][5] / first_rss - 1 if first_rss else float("nan")
    result("failed_requests", errors, "<=", 0)
    result("worst_minute_p99_ms", worst_p99, "<", 100)
    result("log_files_after_compaction", rows[-1][4], "<=", 4)
    result("rss_growth_after_warm_minute", growth, "<", 0.10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
