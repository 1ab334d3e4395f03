"""The held-out rows scored part by part give the metrics and the reference profile of the whole window:
the test metrics exactly, the profile's counts exactly and its quantiles within the sketch's error."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core.context import RunContext
from tasks.core.profile import profile_frame
from tasks.core.store import open_store
from tasks.data.ingest import discover_batches, ingest_batches
from tasks.data.snapshot import build_snapshot, load_rows
from tasks.model.evaluate import binary_metrics
from tasks.model.held_out import (
    CANDIDATE,
    CHAMPION,
    Scorer,
    held_out_ranges,
    merged_profile,
    reference_inputs,
    reference_sample,
    reference_spacing,
    score_held_out,
    scored_test_rows,
)
from tasks.model.train import load_candidate, load_matrix, predict, prepare_training, train_candidate


@pytest.fixture(scope="module")
def two_months(landed):
    """A January-February snapshot in 5,000-row parts (the held-out rows span several), and a model."""
    store, ctx = open_store(landed), RunContext.build(landed)
    data = ctx.config.model_dump()
    data["window"] = {"start": "2013-01-01T00:00:00Z", "end": "2013-03-01T00:00:00Z"}
    config = type(ctx.config).model_validate(data)
    sources = {
        t: ingest_batches(t, discover_batches(t, c, ctx), c, ctx)[0].valid_keys
        for t, c in config.tables.items()
    }
    manifest = build_snapshot(sources, config, store, rows_per_part=5000)
    prepared = prepare_training(manifest, store, config)
    X, y = load_matrix(store, manifest, prepared.transform, config.target.name, 0, prepared.split.valid_end)
    training = config.training.model_copy(update={"num_boost_round": 40})
    trained = train_candidate(X, y, dict(config.training.params), prepared, training, store)
    return store, config, manifest, prepared, trained


def _score(two_months, champion: Scorer | None, every: int):
    """The parts scored with the reference sample every ``every``-th held-out row."""
    store, config, manifest, prepared, trained = two_months
    held_out = manifest.rows - prepared.split.train_end
    config = config.model_copy(
        update={
            "monitoring": config.monitoring.model_copy(update={"max_reference_rows": -(-held_out // every)})
        }
    )
    assert reference_spacing(manifest, prepared, config) == every
    candidate = Scorer(model_text=store.read_bytes(trained.model_key).decode(), transform=prepared.transform)
    ranges = held_out_ranges(manifest, prepared.split.train_end)
    key = f"test-held-out/{every}/{champion is not None}/rows-{{}}.parquet"
    return ranges, [
        score_held_out(store, config, manifest, prepared, candidate, champion, r, key.format(r[0]))
        for r in ranges
    ]


def test_parts_give_the_whole_windows_metrics_and_profile(two_months):
    store, config, manifest, prepared, trained = two_months
    split = prepared.split
    ranges, parts = _score(two_months, None, every=1)
    assert len(ranges) >= 3 and ranges[0][0] == split.train_end and ranges[-1][1] == manifest.rows

    # the test window scored whole, as before parts existed
    test = load_rows(manifest, store, split.valid_end)
    whole = predict(load_candidate(store, trained), prepared.transform.to_matrix(test))
    scored = scored_test_rows(store, parts)
    assert scored.height == test.height and scored[CHAMPION].null_count() == scored.height
    assert np.allclose(scored[CANDIDATE].to_numpy(), whole)
    y = test[config.target.name].to_numpy()
    assert binary_metrics(y, scored[CANDIDATE].to_numpy(), 0.5) == binary_metrics(y, whole, 0.5)

    # the reference: the parts' profiles merged against one profile of every held-out row
    inputs = reference_inputs(prepared.transform, config)
    held = reference_sample(store, manifest, parts, split.train_end, 1, inputs)
    assert held.height == manifest.rows - split.train_end
    one = profile_frame(held).to_pandas()
    merged = merged_profile(parts).to_pandas()
    assert sorted(merged.index) == sorted(one.index) == sorted([*inputs, "prediction"])
    counts = [c for c in one.columns if c.startswith("counts/")]
    assert (merged.loc[one.index, counts] == one[counts]).all().all()
    for column in ("distance", "prediction"):
        lo, hi = one.loc[column, "distribution/min"], one.loc[column, "distribution/max"]
        assert merged.loc[column, "distribution/min"] == lo and merged.loc[column, "distribution/max"] == hi
        for q in ("distribution/q_25", "distribution/median", "distribution/q_75"):
            assert abs(merged.loc[column, q] - one.loc[column, q]) <= 0.02 * (hi - lo), (column, q)


def test_a_spaced_sample_and_the_champion_come_from_the_same_parts(two_months):
    store, config, manifest, prepared, trained = two_months
    split = prepared.split
    itself = Scorer(model_text=store.read_bytes(trained.model_key).decode(), transform=prepared.transform)
    _, parts = _score(two_months, itself, every=7)
    inputs = reference_inputs(prepared.transform, config)
    sample = reference_sample(store, manifest, parts, split.train_end, 7, inputs)
    expected = load_rows(manifest, store, split.train_end, None, 7, columns=inputs)
    assert sample.drop("prediction").equals(expected)  # every 7th held-out row, in order
    assert merged_profile(parts).to_pandas().loc["prediction", "counts/n"] == sample.height

    scored = scored_test_rows(store, parts)  # every test row, whatever the spacing
    assert scored.height == manifest.rows - split.valid_end
    assert np.allclose(scored[CHAMPION].to_numpy(), scored[CANDIDATE].to_numpy())


def test_a_champion_that_cannot_score_the_rows_says_why(two_months, landed):
    store, config, manifest, prepared, trained = two_months
    spec = prepared.transform.spec.model_copy(update={"numeric": [*prepared.transform.spec.numeric, "gone"]})
    broken = Scorer(
        model_text=store.read_bytes(trained.model_key).decode(),
        transform=prepared.transform.model_copy(update={"spec": spec}),
    )
    _, parts = _score(two_months, broken, every=1)
    with_test_rows = [p for p in parts if p.hi > prepared.split.valid_end]
    assert with_test_rows and all(p.champion_note and "gone" in p.champion_note for p in with_test_rows)
    scored = scored_test_rows(store, parts)  # the candidate's scores are all there
    assert scored[CHAMPION].null_count() == scored.height and scored[CANDIDATE].null_count() == 0

    from flows.steps.model import evaluate_champion_on_test

    verdict = evaluate_champion_on_test.fn(
        3, parts, config.model_name, RunContext.build(landed).with_config(config)
    )
    assert verdict.version == 3 and verdict.metrics is None and "champion v3 cannot score" in verdict.note
