"""The prediction and feedback logs stay small and whole: the spool ships exactly what was appended,
compaction leaves one file per day (per hour today) with every row once, is idempotent and safe
while services write, retention deletes old days, the monitoring watermark survives compaction, and
a lookup by request id lists one day. On a local store and on S3 (moto server)."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from tasks.core.logs import FEEDBACK, FEEDBACK_SCHEMA, PREDICTIONS, log_keys, log_prefix, read_log
from tasks.core.store import ArtifactStore, LocalStore, open_store
from tasks.serving.compaction import compact_log, log_row_count
from tasks.serving.spool import SpooledLog

MODEL = "m"
INPUTS = {"x": pl.Float64()}


def _schema() -> dict[str, pl.DataType]:
    from tasks.core.logs import prediction_log_schema

    return prediction_log_schema(INPUTS)


def _rows(ids: list[str], ts: datetime) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "model_name": [MODEL] * n,
            "request_id": ids,
            "correlation_id": [None] * n,
            "ts": [ts] * n,
            "x": [float(i) for i in range(n)],
            "probability": [0.5] * n,
            "label": [1] * n,
            "model_version": [1] * n,
            "arm": ["champion"] * n,
            "shadow_version": [None] * n,
            "shadow_probability": [None] * n,
            "paired_version": [None] * n,
            "paired_probability": [None] * n,
            "output": [None] * n,  # a yes/no model's log leaves the classes' and numbers' columns empty
            "paired_output": [None] * n,
            "shadow_output": [None] * n,
        },
        schema=_schema(),
    )


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return open_store(request.getfixturevalue("s3_settings"))


def _ship(store: ArtifactStore, spool: Path, frames: list[pl.DataFrame], kind: str = PREDICTIONS) -> None:
    """Each frame becomes its own shipped file, as segments of a running service do."""
    schema = _schema() if kind == PREDICTIONS else FEEDBACK_SCHEMA
    log = SpooledLog(store, log_prefix(kind, MODEL), schema, spool, max_rows=10**9, max_seconds=3600)
    for frame in frames:
        log.append(frame)
        log._rotate(force=True)
    log.close()


def test_compaction_leaves_one_file_per_day_every_row_once_and_is_idempotent(store, tmp_path):
    # noon: yesterday's rows, up to 2 h earlier, stay on yesterday's date whenever the test runs
    now = datetime.now(timezone.utc).replace(hour=12, minute=30)
    yesterday, today = now - timedelta(days=1), now
    frames = [_rows([f"y{b}-{i}" for i in range(20)], yesterday - timedelta(hours=b % 3)) for b in range(12)]
    frames += [_rows([f"t{b}-{i}" for i in range(20)], today) for b in range(8)]
    _ship(store, tmp_path / "spool", frames)
    before = log_keys(store, PREDICTIONS, MODEL)
    assert len(before) >= 20
    # a compaction that died after writing its merged file but before deleting its sources leaves
    # every row twice: the next run must not keep both
    yesterday_keys = [k for k in before if f"date={yesterday:%Y-%m-%d}" in k]
    store.write_parquet(
        yesterday_keys[0].rsplit("/", 2)[0] + "/compacted-interrupted.parquet",
        store.scan_parquet(yesterday_keys).collect(),
    )

    result = compact_log(store, PREDICTIONS, MODEL, retention_days=30, now=now)
    after = log_keys(store, PREDICTIONS, MODEL)
    assert result.files_before == len(before) + 1 and result.files_after == len(after) == 2, after
    assert all("/compacted-" in k for k in after)
    assert [k for k in after if f"date={yesterday:%Y-%m-%d}/compacted-" in k]  # the day, no hour level
    assert [k for k in after if f"date={today:%Y-%m-%d}/hour={today:%H}/compacted-" in k]
    assert result.duplicates_dropped == 240
    logged = read_log(store, PREDICTIONS, MODEL, ["request_id"])["request_id"]
    assert logged.len() == 400 and logged.n_unique() == 400
    merged = store.read_parquet(next(k for k in after if f"date={yesterday:%Y-%m-%d}" in k))
    assert merged["request_id"].is_sorted()  # sorted: an id lookup reads only row groups that can hold it

    again = compact_log(store, PREDICTIONS, MODEL, retention_days=30, now=now)
    assert again.rows_rewritten == 0 and log_keys(store, PREDICTIONS, MODEL) == after


def test_compaction_while_a_service_ships_loses_and_doubles_nothing(tmp_path):
    store = LocalStore(tmp_path / "store")
    log = SpooledLog(store, log_prefix(PREDICTIONS, MODEL), _schema(), tmp_path / "spool", 50, 0.05)
    stop = threading.Event()
    appended: list[str] = []

    def writer() -> None:
        batch = 0
        while not stop.is_set():
            ids = [f"w{batch}-{i}" for i in range(10)]
            log.append(_rows(ids, datetime.now(timezone.utc)))
            appended.extend(ids)
            batch += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        import time

        deadline, runs = time.monotonic() + 4, 0
        while time.monotonic() < deadline or runs < 10:
            compact_log(store, PREDICTIONS, MODEL, retention_days=30)
            runs += 1
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
        log.close()
    compact_log(store, PREDICTIONS, MODEL, retention_days=30)
    logged = read_log(store, PREDICTIONS, MODEL, ["request_id"])["request_id"]
    assert len(appended) > 500
    assert set(logged) == set(appended) and logged.len() == len(appended)
    assert len(log_keys(store, PREDICTIONS, MODEL)) <= 2  # this hour (and the last, across an hour)


def test_retention_deletes_old_days_of_both_logs(store, tmp_path):
    now = datetime.now(timezone.utc)
    old, recent = now - timedelta(days=40), now - timedelta(days=2)
    _ship(store, tmp_path / "spool", [_rows(["old"], old), _rows(["recent"], recent)])
    feedback = pl.DataFrame(
        {"request_id": ["old"], "ts": [old], "outcome": [1], "correction": [False], "source": ["t"]},
        schema=FEEDBACK_SCHEMA,
    )
    _ship(store, tmp_path / "spool", [feedback], kind=FEEDBACK)
    result = compact_log(store, PREDICTIONS, MODEL, retention_days=30, now=now)
    assert result.partitions_expired == 1
    assert read_log(store, PREDICTIONS, MODEL)["request_id"].to_list() == ["recent"]
    assert compact_log(store, FEEDBACK, MODEL, retention_days=30, now=now).partitions_expired == 1
    assert log_row_count(store, FEEDBACK, MODEL) == 0


def test_the_rejection_log_is_compacted_and_expired_like_the_others(store, tmp_path):
    """What the contract refused at serving time: merged per day (by time: it has no request id), every
    refusal kept once, old days expired."""
    from tasks.core.logs import REJECTIONS, REJECTIONS_SCHEMA

    now = datetime.now(timezone.utc).replace(hour=12, minute=30)
    log = SpooledLog(store, log_prefix(REJECTIONS, MODEL), REJECTIONS_SCHEMA, tmp_path / "spool", 10**9, 3600)
    refusals = [
        [{"ts": now - timedelta(days=d, minutes=i), "endpoint": "/predict", "rows": 1, "reason": f"r{d}-{i}"}]
        for d in (0, 1, 45)
        for i in range(5)
    ]
    for rows in refusals:
        log.append_unsynced(rows)
        log._rotate(force=True)
    log.close()
    assert len(log_keys(store, REJECTIONS, MODEL)) == 15
    result = compact_log(store, REJECTIONS, MODEL, retention_days=30, now=now)
    assert result.partitions_expired == 1 and result.files_after == 2 and result.duplicates_dropped == 0
    kept = read_log(store, REJECTIONS, MODEL)
    assert sorted(kept["reason"]) == sorted(f"r{d}-{i}" for d in (0, 1) for i in range(5))
    assert kept.filter(pl.col("reason").str.starts_with("r1-"))["ts"].is_sorted()


def test_monitoring_watermark_is_one_timestamp_that_survives_compaction(tmp_path):
    from tasks.monitoring.window import advance_watermark, unjudged_predictions, watermark_key

    store = LocalStore(tmp_path / "store")
    now = datetime.now(timezone.utc)
    _ship(store, tmp_path / "spool", [_rows([f"a{i}" for i in range(30)], now - timedelta(minutes=5))])
    frame, through = unjudged_predictions(store, MODEL, lateness_seconds=60)
    assert frame.height == 30
    advance_watermark(store, MODEL, through)
    _ship(store, tmp_path / "spool", [_rows(["late-but-in-time"], now - timedelta(seconds=10))])
    compact_log(store, PREDICTIONS, MODEL, retention_days=30)  # new file names: the old list would rejudge
    frame, _ = unjudged_predictions(store, MODEL, lateness_seconds=60)
    assert frame.height == 0  # the 10 s old row waits for the lateness allowance; nothing is rejudged
    frame, _ = unjudged_predictions(store, MODEL, lateness_seconds=0)
    assert frame["request_id"].to_list() == ["late-but-in-time"]
    assert set(store.read_json(watermark_key(MODEL))) == {"through"}


def test_a_request_id_lookup_lists_only_its_day(tmp_path):
    from tasks.serving.request_ids import RequestIds, issued_on

    store = LocalStore(tmp_path / "store")
    now = datetime.now(timezone.utc)
    rid = RequestIds(b"k" * 32).issue(1)[0]
    days = [_rows([f"d{d}"], now - timedelta(days=d)) for d in range(1, 6)]
    _ship(store, tmp_path / "spool", [*days, _rows([rid], now)])
    issued = issued_on(rid)
    keys = log_keys(store, PREDICTIONS, MODEL, since=issued, until=issued + timedelta(days=1))
    assert len(keys) == 1 and len(log_keys(store, PREDICTIONS, MODEL)) == 6
    assert read_log(store, PREDICTIONS, MODEL, request_ids=[rid], since=issued).height == 1


def test_a_torn_spool_record_is_dropped_and_the_rest_shipped(tmp_path):
    """A worker killed inside ``write`` leaves half a record: it was never fsynced, so never answered."""
    store = LocalStore(tmp_path / "store")
    spool = tmp_path / "spool"
    log = SpooledLog(store, log_prefix(PREDICTIONS, MODEL), _schema(), spool, 10**9, 3600)
    log.append(_rows(["kept-1", "kept-2"], datetime.now(timezone.utc)))
    segment = log._segment
    log.append(_rows(["torn"], datetime.now(timezone.utc)))
    # the process dies inside the second record's write: its thread, files and lock are gone
    log._stop.set()
    log._thread.join()
    os.close(log._fd)
    os.close(log._lock_fd)  # what the kernel does when the process dies
    segment.write_bytes(segment.read_bytes()[:-7])
    fresh = SpooledLog(store, log_prefix(PREDICTIONS, MODEL), _schema(), spool, 10**9, 3600)
    fresh.close()
    assert read_log(store, PREDICTIONS, MODEL)["request_id"].to_list() == ["kept-1", "kept-2"]
    assert not segment.parent.exists()  # the dead owner's spool is shipped and removed


def test_a_window_profiled_by_date_partition_adds_up_to_the_whole(tmp_path):
    """What monitoring maps over (one step per date partition of the log, on threads or Dask workers)
    gives the whole window's rows, nulls, unseen levels and day profiles, each request id once."""
    from tasks.core.config import MonitoringConfig
    from tasks.core.feature_spec import FeatureSpec
    from tasks.core.logs import prediction_log_schema
    from tasks.core.profile import load_profile, profile_frame
    from tasks.model.features import fit_feature_transform
    from tasks.monitoring.drift import data_quality
    from tasks.monitoring.window import (
        merge_parts,
        plan_window,
        profile_partition,
        read_window,
        unjudged_predictions,
    )

    store = LocalStore(tmp_path / "store")
    spec = FeatureSpec(
        numeric=["x"],
        categorical=["c"],
        derived={},
        time=None,
        clip_quantiles=(0.0, 1.0),
        min_category_count=1,
    )
    transform = fit_feature_transform(pl.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]}), spec)
    schema = prediction_log_schema({"x": pl.Float64(), "c": pl.String()})
    now = datetime.now(timezone.utc)

    def day(offset: int, n: int, prefix: str) -> pl.DataFrame:
        ts = now - timedelta(days=offset)
        rows = _rows([f"{prefix}{i}" for i in range(n)], ts).with_columns(
            pl.when(pl.int_range(n) % 5 == 0).then(None).otherwise(pl.col("x")).alias("x"),
            pl.Series("c", [["a", "b", "z"][i % 3] for i in range(n)]),
        )
        return rows.select(list(schema)).cast(schema)

    first, second = day(2, 300, "d2-"), day(1, 200, "d1-")
    for frame, offset in ((first, 2), (second, 1)):
        date = (now - timedelta(days=offset)).date().isoformat()
        store.write_parquet(f"{log_prefix(PREDICTIONS, MODEL)}/date={date}/part-a.parquet", frame)
    date = (now - timedelta(days=2)).date().isoformat()  # a file listed beside its compacted copy
    store.write_parquet(f"{log_prefix(PREDICTIONS, MODEL)}/date={date}/compacted-x.parquet", first.head(100))

    plan = plan_window(store, MODEL, lateness_seconds=0)
    assert len(plan.partitions) == 2
    window = merge_parts(
        [
            profile_partition(read_window(store, MODEL, plan, keys), transform, None)
            for keys in plan.partitions
        ]
    )
    whole, _ = unjudged_predictions(store, MODEL, lateness_seconds=0)
    assert window.rows == whole.height == 500
    assert window.nulls["x"] == whole["x"].null_count() == 100
    assert (window.unseen["c"].values, window.unseen["c"].unseen) == (500, whole["c"].eq("z").sum())
    assert window.unseen["c"].examples == ["z"]
    assert list(window.days) == sorted({str(t.date()) for t in whole["ts"]})
    for d, data in window.days.items():
        rows = whole.filter(pl.col("ts").dt.strftime("%Y-%m-%d") == d)
        merged = load_profile(data).to_pandas()
        one = profile_frame(rows.select("x", "c", pl.col("probability").alias("prediction"))).to_pandas()
        assert (merged.loc[one.index, "counts/n"] == one["counts/n"]).all()
        assert (merged.loc[one.index, "counts/null"] == one["counts/null"]).all()
    reference = profile_frame(whole.select("x", "c", pl.col("probability").alias("prediction")))
    problems = data_quality(window, transform, reference, MonitoringConfig(max_unseen_share=0.1))
    assert any("'c'" in p and "33%" in p for p in problems), problems


def test_serving_refusals_in_the_window_are_a_data_quality_problem_above_their_share(tmp_path):
    """The service's rejection log, read for a monitoring window (start, end]: refusals outside the
    window do not count; above ``max_rejected_share`` of the requests they are a data-quality problem
    that names the most common reason, below it they are not."""
    from tasks.core.config import MonitoringConfig
    from tasks.core.logs import REJECTIONS, REJECTIONS_SCHEMA
    from tasks.monitoring.drift import refused_at_serving
    from tasks.monitoring.window import refused_in

    store = LocalStore(tmp_path / "store")
    start = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    end = start + timedelta(hours=1)
    reason = "column 'origin': rule one of ['EWR', 'JFK', 'LGA'] broken by 1 value(s), e.g. ['ZZZ']"
    rows = [
        {"ts": start - timedelta(minutes=1), "endpoint": "/predict", "rows": 1, "reason": "before"},
        *(
            {"ts": start + timedelta(minutes=i), "endpoint": "/predict", "rows": 1, "reason": reason}
            for i in range(1, 6)
        ),
        {"ts": end + timedelta(minutes=1), "endpoint": "/predict", "rows": 1, "reason": "after"},
    ]
    log = SpooledLog(store, log_prefix(REJECTIONS, MODEL), REJECTIONS_SCHEMA, tmp_path / "spool", 10**9, 3600)
    log.append(rows)
    log.close()
    window = refused_in(store, MODEL, start, end)
    assert window["reason"].to_list() == [reason] * 5
    config = MonitoringConfig(max_rejected_share=0.01)
    (problem,) = refused_at_serving(window, scored_rows=95, config=config)  # 5 of 100 requests
    assert "refused 5 request(s) (5.0%" in problem and "5x column 'origin'" in problem
    assert refused_at_serving(window, scored_rows=995, config=config) == []  # 0.5%: under the share
    assert refused_in(LocalStore(tmp_path / "empty"), MODEL, start, end).is_empty()
