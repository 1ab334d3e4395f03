"""Starting a deployment run and following it in the terminal: used by ``make demo`` and the
``driftloop`` command line alike."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tasks.core.settings import Settings


async def watch_deployment(
    name: str,
    parameters: dict,
    progress_key: str | None = None,
    job_variables: dict | None = None,
    console: Console | None = None,
) -> object:
    """Start a deployment run and follow it with a progress bar (the run's progress artifact under
    ``progress_key``, else its state) until it finishes; return its result. A run that does not
    complete prints its own state message and where its logs are, and exits 1."""
    console = console or Console()
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    run = await run_deployment(name, parameters=parameters, job_variables=job_variables, timeout=0)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
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

                    arts = await client.read_artifacts(
                        artifact_filter=ArtifactFilter(
                            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
                            type=ArtifactFilterType(any_=["progress"]),
                        )
                    )
                    if arts:
                        pct = float(arts[0].data)
                bar.update(
                    task,
                    completed=pct if pct is not None else (100 if state.is_final() else 0),
                    state=state.name if state else "?",
                )
                if state and state.is_final():
                    break
                await asyncio.sleep(1)
    if not state.is_completed():
        console.print(f"[bold red]{name} ended {state.name}[/]: {state.message}")
        console.print(f"Open {Settings().prefect.ui_url}/runs/flow-run/{run.id} for its logs.")
        raise SystemExit(1)
    return await state.aresult()
