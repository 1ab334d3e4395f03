"""Training on the dask engine at 1x, 10x and 30x the flights data (SYNTHETIC copies, see
``land_scaled_flights``): time and the peak memory of every process.

Each scale runs in a fresh process (the driver, i.e. the flow's process) with a fresh
``distributed.LocalCluster`` of 2 workers, ``memory_limit`` 2 GiB each: the snapshot is built
(streamed), then the training steps run as the training flow runs them on the dask engine: the
feature transform fitted in the driver, one search trial per worker on the cluster, the final model
by ``lightgbm.dask`` over the snapshot's parts, the held-out rows scored and profiled part by part on
the workers, evaluation and the drift reference's calibration in the driver.
Boosting rounds are fixed (100, no early stop) so every scale does the same work per row.

Each target ends as a ``RESULT <metric>=<value> target<op><value> PASS|FAIL`` line.
Targets (issue 12): no process over 2.5 GiB peak RSS at any scale; the 30x run at most 35x the 1x
run's time (no worse than linear, plus setup).

    .venv/bin/python bench/scale_train.py [--scales 1 10 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.memory import peak_rss_mib  # noqa: E402
from lib.results import result  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console()
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "flights-scaled.yaml"
ROUNDS = 100


def settings_for(root: str, **extra):
    from tasks.core.settings import Settings, TrackingSettings

    return Settings(
        store_uri=root,
        sources_dir=root,
        dataset_config=CONFIG,
        tracking=TrackingSettings(mode="disabled"),
        **extra,
    )


def ingest(root: str) -> dict[str, list[str]]:
    """Every landed copy validated once, as the training flow's ingestion does (not timed)."""
    from tasks.core.context import RunContext
    from tasks.data.ingest import discover_batches, ingest_batches

    ctx = RunContext.build(settings_for(root))
    return {
        t: ingest_batches(t, discover_batches(t, c, ctx), c, ctx)[0].valid_keys
        for t, c in ctx.config.tables.items()
    }


def child(root: str, scale: int) -> None:
    """One scale, in this fresh process; prints its figures as JSON."""
    import os

    from distributed import Client, LocalCluster

    from flows.schemas import TrainingParams
    from flows.steps.model import fit_transform_on_train
    from flows.steps.monitoring import profile_reference
    from flows.steps.training import (
        DaskSteps,
        TrainingRun,
        evaluate_and_decide,
        search_and_cross_validate,
        train_and_score_held_out,
    )
    from tasks.core.context import RunContext
    from tasks.core.settings import DaskSettings
    from tasks.core.store import LocalStore
    from tasks.data.snapshot import build_snapshot

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, memory_limit="2GiB", host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        settings = settings_for(
            root,
            engine="dask",
            dask=DaskSettings(address=cluster.scheduler_address, n_workers=2, threads_per_worker=1),
        )
        ctx = RunContext.build(settings)
        config = ctx.config.with_updates(
            {
                "window": {"start": "2013-01-01T00:00:00Z", "end": f"{2013 + scale}-01-01T00:00:00Z"},
                "training": {"n_trials": 2, "num_boost_round": ROUNDS, "early_stopping_rounds": ROUNDS},
                "split": {"cv_folds": 0},
            }
        )
        ctx = ctx.with_config(config)
        store = LocalStore(root)
        sources = json.loads((Path(root) / "sources.json").read_text())
        manifest = build_snapshot(sources, config, store, settings.snapshot_rows_per_part)
        t0 = time.perf_counter()
        # the training flow's own stages from the prepared snapshot on, steps mapped on the cluster
        steps = DaskSteps(client=client)
        run = TrainingRun(ctx=ctx, params=TrainingParams(), manifest=manifest)
        run.prepared = steps.call(fit_transform_on_train, manifest, ctx)
        run = evaluate_and_decide(
            train_and_score_held_out(search_and_cross_validate(run, steps), steps), steps
        )
        steps.call(profile_reference, run.trained, manifest, run.prepared, run.parts, ctx)
        evaluation = run.candidate
        seconds = time.perf_counter() - t0
        workers = client.run(peak_rss_mib)
    print(
        json.dumps(
            {
                "scale": scale,
                "rows": manifest.rows,
                "parts": len(manifest.parts),
                "seconds": seconds,
                "driver_rss_mib": peak_rss_mib(),
                "worker_rss_mib": max(workers.values()),
                "test_auc": evaluation.evaluation.test.roc_auc,
                "pid": os.getpid(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--child-scale", type=int)
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.child_scale:
        child(args.root, args.child_scale)
        return

    from tasks.core.store import LocalStore
    from tasks.data.landing import land_scaled_flights

    root = Path(tempfile.mkdtemp(prefix="driftloop-scale-train-"))
    runs = []
    try:
        copies = max(args.scales)
        with Progress(console=console, transient=True) as progress:
            job = progress.add_task(f"landing {copies}x synthetic flights", total=copies)
            land_scaled_flights(
                LocalStore(root), copies, on_copy=lambda i: progress.update(job, completed=i + 1)
            )
        with console.status(f"validating {copies}x flights (ingestion, not timed)..."):
            (root / "sources.json").write_text(json.dumps(ingest(str(root))))
        for scale in sorted(args.scales):
            with console.status(f"training at {scale}x on a 2-worker LocalCluster..."):
                out = subprocess.run(
                    [sys.executable, __file__, "--child-scale", str(scale), "--root", str(root)],
                    capture_output=True,
                    text=True,
                    cwd=Path(__file__).resolve().parents[1],
                )
            if out.returncode != 0:
                raise SystemExit(f"training at {scale}x failed:\n{out.stderr[-4000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            console.print(
                f"{scale}x: {r['rows']:,} rows in {r['parts']} parts, {r['seconds']:.1f} s, peak RSS driver "
                f"{r['driver_rss_mib']:,.0f} MiB, workers {r['worker_rss_mib']:,.0f} MiB, "
                f"test AUC {r['test_auc']:.4f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = Table(title=f"dask engine, 2 workers x 2 GiB, {ROUNDS} boosting rounds")
    for col in (
        "scale",
        "rows",
        "parts",
        "seconds",
        "driver peak RSS MiB",
        "worker peak RSS MiB",
        "test AUC",
    ):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(
            f"{r['scale']}x",
            f"{r['rows']:,}",
            str(r["parts"]),
            f"{r['seconds']:.1f}",
            f"{r['driver_rss_mib']:,.0f}",
            f"{r['worker_rss_mib']:,.0f}",
            f"{r['test_auc']:.4f}",
        )
    console.print(table)
    peak = max(max(r["driver_rss_mib"], r["worker_rss_mib"]) for r in runs) / 1024
    by_scale = {r["scale"]: r for r in runs}
    result("scale_train_peak_rss_gib", peak, "<", 2.5)
    if 1 in by_scale and 30 in by_scale:
        result("scale_train_time_30x_over_1x", by_scale[30]["seconds"] / by_scale[1]["seconds"], "<=", 35)


if __name__ == "__main__":
    main()
