"""Monitoring on real prediction logs: watermark, whylogs drift vs the reference, data quality,
live performance from feedback, and the Prefect events it emits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from tests.conftest import SMALL
from tests.integration.test_lifecycle import _events

pytestmark = pytest.mark.integration


def _log_window(
    settings,
    config,
    start: str,
    end: str,
    unseen_share: float,
    alias: str = "champion",
    paired_with: str | None = None,
    invert_outcomes: bool = False,
    days_ago: int = 0,
) -> list[str]:
    """Score a later window's real flights with a model and log them, with feedback, like the service does
    (during a canary, ``paired_with`` names the other arm, whose score is logged beside the answer)."""
    from tasks.core.context import RunContext
    from tasks.core.logs import FEEDBACK_SCHEMA, log_prefix, prediction_log_schema
    from tasks.core.store import open_store
    from tasks.data.ingest import discover_batches, ingest_batches
    from tasks.data.snapshot import build_snapshot, load_snapshot
    from tasks.registry.versions import Registry
    from tasks.serving.spool import SpooledLog
    from tasks.serving.watcher import load_version

    store = open_store(settings)
    window = config.model_copy(
        update={
            "window": config.window.model_copy(
                update={"start": datetime.fromisoformat(start), "end": datetime.fromisoformat(end)}
            )
        }
    )
    ctx = RunContext.build(settings)
    sources = {
        t: ingest_batches(t, discover_batches(t, c, ctx), c, ctx)[0].valid_keys
        for t, c in window.tables.items()
    }
    rows = load_snapshot(build_snapshot(sources, window, store), store).head(3000)
    n_unseen = int(rows.height * unseen_share)
    rows = rows.with_columns(
        pl.when(pl.int_range(pl.len()) < n_unseen)
        .then(pl.lit("ZZ"))
        .otherwise(pl.col("carrier"))
        .alias("carrier")
    )
    registry = Registry(store, config.model_name)
    champion = load_version(registry, registry.resolve(alias))
    inputs = champion.transform.spec.input_columns
    p = champion.score(rows.select(inputs))
    other = load_version(registry, registry.resolve(paired_with)) if paired_with else None
    q = other.score(rows.select(other.transform.spec.input_columns)) if other else [None] * rows.height
    ids = [f"{alias}-{start}-{i}" for i in range(rows.height)]
    now = datetime.now(timezone.utc) - timedelta(days=days_ago)  # when the requests were made
    from tasks.serving.schema import input_schema

    schema = prediction_log_schema(input_schema(config))
    spool = settings.serving.spool_dir
    log = SpooledLog(
        store, log_prefix("predictions", config.model_name), schema, spool, max_rows=10**9, max_seconds=3600
    )
    log.append(
        [
            {
                **r,
                "model_name": config.model_name,
                "request_id": i,
                "ts": now,
                "probability": float(q),
                "label": int(q >= champion.version.threshold),
                "model_version": champion.version.version,
                "arm": alias,
                "shadow_version": None,
                "shadow_probability": None,
                "paired_version": other.version.version if other else None,
                "paired_probability": None if other is None else float(o),
            }
            for r, i, q, o in zip(rows.select(inputs).to_dicts(), ids, p, q)
        ]
    )
    log.close()
    feedback = SpooledLog(
        store, log_prefix("feedback", config.model_name), FEEDBACK_SCHEMA, spool, 10**9, 3600
    )
    feedback.append(
        [
            {
                "request_id": i,
                "ts": now,
                "outcome": 1 - int(y) if invert_outcomes else int(y),
                "source": "test",
            }
            for i, y in zip(ids, rows[config.target.name].to_list())
        ]
    )
    feedback.close()
    return ids


def test_monitoring_flags_a_drifted_window_once(prefect_server, private_settings):
    from flows.monitoring import MonitorParams, monitor
    from flows.schemas import TrainingParams
    from flows.training import training
    from tasks.core.store import open_store
    from tasks.data.landing import land_nycflights13

    store = open_store(private_settings)
    land_nycflights13(store, private_settings.sources_dir, months=[1, 2, 7])
    config = private_settings.load_dataset()
    assert "no champion yet" in monitor(MonitorParams(model_name="flights-monitored")).note
    training(TrainingParams(**SMALL, model_name="flights-monitored"))
    config = config.model_copy(update={"model_name": "flights-monitored"})
    params = MonitorParams(model_name="flights-monitored")

    assert "no new predictions" in monitor(params).note

    _log_window(  # asked yesterday: today's contradicting outcomes (below) get a daily start of their own
        private_settings,
        config,
        "2013-07-01T00:00:00+00:00",
        "2013-08-01T00:00:00+00:00",
        unseen_share=0.4,
        days_ago=1,
    )
    report = monitor(params)
    assert report.rows == 3000 and report.champion == 1
    # summer against a model trained on winter: temperatures beyond anything it learned
    assert report.drift_detected and report.drifted[0].startswith("weather"), report.drift_reason
    assert {"temp", "dewp"} <= {d.column for d in report.drift if d.drifted}
    assert "carrier" in report.drifted  # 40% of carriers are a code training never saw
    assert "outside training" in report.drift_reason
    assert "prediction" in {d.column for d in report.drift}
    assert any("'carrier'" in p and "never seen" in p for p in report.quality_problems)
    perf = {p.model_version: p for p in report.performance}
    assert perf[1].labels == 3000 and perf[1].roc_auc is not None and 0.5 < perf[1].roc_auc < 1
    assert store.list("profiles/flights-monitored/daily")  # the window's profile, merged per day

    again = monitor(params)  # the watermark: the same window is never counted twice
    assert again.rows == 0 and "no new predictions" in again.note
    # the run that judged nothing replaced the model's latest artifact, and still shows the verdict
    from prefect.artifacts import Artifact

    from tasks.monitoring.status import model_status

    latest = Artifact.get("flights-monitored-monitoring")
    assert "no new predictions" in latest.data and "The last judged window" in latest.data
    assert "3000 predictions, retrain: drift" in latest.data, latest.data
    status = model_status(store, "flights-monitored", datetime.now(timezone.utc))
    low, high = (float(x) for x in status.live_auc.split("(")[1].rstrip(")").split(" .. "))
    assert low < perf[1].roc_auc < high and status.coverage == "3000/3000 (100%)"
    assert status.drift.startswith("detected: weather")

    api = prefect_server.cfg.api_url
    drift_events = _events(api, "driftloop.drift.detected", "flights-monitored", 1)
    assert len(drift_events) == 1 and drift_events[0]["payload"]["drifted"][0].startswith("weather")
    assert _events(api, "driftloop.data_quality.failed", "flights-monitored", 1)
    (needed,) = _events(api, "driftloop.retrain.needed", "flights-monitored", 1)
    assert needed["payload"]["reasons"] == ["drift"] == report.retrain  # inside the range: weather only

    # outcomes that contradict the model (inverted labels): a large, significant drop is a degradation
    _log_window(
        private_settings,
        config,
        "2013-07-15T00:00:00+00:00",  # other flights (days of their own), other request ids
        "2013-08-01T00:00:00+00:00",
        0.0,
        invert_outcomes=True,
    )
    worse = monitor(params)
    assert worse.degraded and worse.degraded[0].startswith("v1:") and "lower" in worse.degraded[0]
    degraded_events = _events(api, "driftloop.performance.degraded", "flights-monitored", 1)
    assert any(e["payload"]["evidence"] == worse.degraded for e in degraded_events)

    # monitoring over time: both judged windows kept, drawn as an artifact and a page in the store
    from tasks.monitoring.history import page_key, read_history

    history = read_history(store, "flights-monitored")
    assert [w.rows for w in history] == [3000, worse.rows] and history[0].drift["temp"] > 1
    assert history[1].live_auc < history[0].live_auc and history[0].held_out_auc is not None
    worse_perf = {p.model_version: p for p in worse.performance}[1]  # live figures look back further
    assert (history[1].labels, history[1].predictions) == (worse_perf.labels, worse_perf.predictions)
    assert history[1].retrain == worse.retrain
    page = store.read_bytes(page_key("flights-monitored")).decode()
    assert (
        page.count("<tr>") == 3 and '<img alt="drift per input' in page and "data:image/png;base64," in page
    )
    assert "<script" not in page and "http" not in page  # self-contained: nothing fetched
    drawn = Artifact.get("flights-monitored-monitoring-history")
    assert "2 judged windows" in drawn.data and "data:image/png;base64," in drawn.data
