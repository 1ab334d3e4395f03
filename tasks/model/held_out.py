"""The held-out rows scored part by part: the candidate's (and the champion's) test predictions and the
reference profile's sample, where the rows are.

The rows a model did not train on (validation + test) are read one snapshot part at a time, by the
step that scores that part (a mapped Prefect task: a thread, or a Dask worker with the dask engine).
Each part keeps, in one Parquet file beside the candidate:

- its test rows (target, time, slice columns) with the candidate's, the champion's and the logistic
  regression baseline's predictions:
  the test evaluation and the promotion gate read only these columns, never the whole window;
- its rows of the drift reference's sample (every ``every``-th held-out row, counted from the first,
  so the union over parts is exactly ``load_rows(manifest, store, train_end, None, every)``) with the
  candidate's predictions.

and returns a whylogs profile of its sample rows (inputs + prediction). Profiles merge (whylogs views
are mergeable sketches), so the reference profile is the parts' profiles merged in part order: the
same on either engine. No process ever holds more than one part of raw rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from tasks.core.config import DatasetConfig
from tasks.core.profile import load_profile, profile_frame
from tasks.core.store import ArtifactStore
from tasks.core.target import LearningTask
from tasks.data.snapshot import SnapshotManifest, load_rows, spacing
from tasks.model.baselines import LinearBaseline
from tasks.model.card import AttributionSums, attribution_sums
from tasks.model.features import FittedTransform
from tasks.model.train import PreparedTraining, predict

ROW, IN_TEST, IN_SAMPLE = "__row", "__test", "__sample"
CANDIDATE, CHAMPION, BASELINE = "__candidate", "__champion", "__baseline"


class HeldOutPart(BaseModel):
    """One part's held-out rows, scored: what ``scored_key`` holds is described in the module's note."""

    lo: int
    hi: int
    scored_key: str
    profile: bytes | None  # whylogs view of its reference-sample rows (None: it has none)
    champion_note: str | None = None  # why the champion could not score these rows, if it could not
    attributions: AttributionSums = AttributionSums()  # the candidate's |pred_contrib| over its test rows


class Scorer(BaseModel):
    """A model as the held-out scoring needs it: its text and its own fitted transform."""

    model_text: str
    transform: FittedTransform

    def booster(self) -> Any:
        import lightgbm as lgb

        return lgb.Booster(model_str=self.model_text)


def held_out_ranges(manifest: SnapshotManifest, start: int) -> list[tuple[int, int]]:
    """Rows [start, end of snapshot) cut at the snapshot's part boundaries: one range per part."""
    offsets = manifest.part_offsets
    return [
        (max(start, offsets[i]), offsets[i + 1])
        for i in range(len(manifest.part_keys))
        if max(start, offsets[i]) < offsets[i + 1]
    ]


def evaluated_columns(config: DatasetConfig) -> list[str]:
    """What a test evaluation reads of each row: the target, the time column and the slice columns."""
    time = [config.time_column] if config.time_column else []
    return list(dict.fromkeys([config.target.name, *time, *config.slices]))


def reference_inputs(transform: FittedTransform, config: DatasetConfig) -> list[str]:
    """The columns the drift reference profiles (besides the prediction): the model's raw inputs
    without the time column."""
    return [c for c in transform.spec.input_columns if c != config.time_column]


def reference_spacing(manifest: SnapshotManifest, prepared: PreparedTraining, config: DatasetConfig) -> int:
    """The drift reference's sample: every ``k``-th held-out row, at most ``max_reference_rows``."""
    return spacing(manifest.rows - prepared.split.train_end, config.monitoring.max_reference_rows)


def score_held_out(
    store: ArtifactStore,
    config: DatasetConfig,
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    candidate: Scorer,
    champion: Scorer | None,
    rows: tuple[int, int],
    key: str,
    baseline: LinearBaseline | None = None,
) -> HeldOutPart:
    """Score rows [lo, hi) of the snapshot (within one part; split by ``prepared``), writing the
    part's file to ``key``."""
    train_end, valid_end = prepared.split.train_end, prepared.split.valid_end
    every, (lo, hi) = reference_spacing(manifest, prepared, config), rows
    inputs = candidate.transform.spec.input_columns
    columns = list(dict.fromkeys([*inputs, *evaluated_columns(config)]))
    if champion is not None:
        columns = list(dict.fromkeys([*columns, *champion.transform.spec.input_columns]))
    df = load_rows(manifest, store, lo, hi, columns=[c for c in columns if c in manifest.columns])
    row = np.arange(lo, hi)
    in_test, in_sample = row >= valid_end, (row - train_end) % every == 0
    keep = in_test | in_sample
    df = df.filter(pl.Series(keep)).with_columns(
        pl.Series(ROW, row[keep]), pl.Series(IN_TEST, in_test[keep]), pl.Series(IN_SAMPLE, in_sample[keep])
    )
    X, booster, task = candidate.transform.to_matrix(df), candidate.booster(), candidate.transform.task
    explained = attribution_sums(booster, X[df[IN_TEST].to_numpy()], candidate.transform.feature_names)
    scores = predict(booster, X)
    missing = np.full(scores.shape, np.nan)  # a prediction's shape: a number, or a row of class shares
    df = df.with_columns(
        pl.Series(CANDIDATE, scores),
        pl.Series(BASELINE, baseline.predict(X) if baseline is not None else missing),
    )
    note, champion_scores = None, missing.copy()
    in_test = df[IN_TEST].to_numpy()
    if champion is not None and in_test.any():
        try:
            test = df.filter(pl.col(IN_TEST))
            champion_scores[in_test] = predict(champion.booster(), champion.transform.to_matrix(test))
        except Exception as exc:  # noqa: BLE001 - e.g. the champion needs columns this snapshot lacks
            note = f"cannot score this snapshot: {exc}"
    champion_column = pl.Series(CHAMPION, champion_scores)
    df = df.with_columns(champion_column.fill_nan(None) if champion_scores.ndim == 1 else champion_column)
    sample = df.filter(pl.col(IN_SAMPLE))
    profile = (
        profile_frame(
            sample.select(*reference_inputs(candidate.transform, config)).with_columns(
                pl.Series("prediction", task.answer(sample[CANDIDATE].to_numpy()))
            )
        ).serialize()
        if sample.height
        else None
    )
    store.write_parquet(
        key, df.select(ROW, IN_TEST, IN_SAMPLE, *evaluated_columns(config), CANDIDATE, CHAMPION, BASELINE)
    )
    return HeldOutPart(
        lo=lo, hi=hi, scored_key=key, profile=profile, champion_note=note, attributions=explained
    )


def scored_test_rows(store: ArtifactStore, parts: list[HeldOutPart]) -> pl.DataFrame:
    """Every test row with its target, time, slices and the candidate's (``__candidate``) and the
    champion's (``__champion``) predictions, in snapshot order."""
    return store.scan_parquet([p.scored_key for p in parts]).filter(pl.col(IN_TEST)).sort(ROW).collect()


def reference_sample(
    store: ArtifactStore,
    manifest: SnapshotManifest,
    parts: list[HeldOutPart],
    start: int,
    every: int,
    inputs: list[str],
    task: LearningTask | None = None,
) -> pl.DataFrame:
    """The reference sample: its rows' raw ``inputs`` (read from the snapshot) with the candidate's
    ``prediction`` (from the scored parts; for classes, the most probable class), in snapshot order."""
    task = task or LearningTask()
    scored = (
        store.scan_parquet([p.scored_key for p in parts])
        .filter(pl.col(IN_SAMPLE))
        .select(ROW, CANDIDATE)
        .sort(ROW)
        .collect()
    )
    answers = pl.Series("prediction", task.answer(scored[CANDIDATE].to_numpy()))
    rows = load_rows(manifest, store, start, None, every, columns=inputs)
    if rows.height != scored.height:
        raise RuntimeError(
            f"the scored parts hold {scored.height} reference rows, the snapshot {rows.height}: "
            "a part's file is from another run; rerun without the cache"
        )
    return rows.with_columns(answers)


def merged_profile(parts: list[HeldOutPart]) -> Any:
    """The parts' profiles merged in part order (whylogs ``DatasetProfileView.merge``)."""
    views = [load_profile(p.profile) for p in parts if p.profile is not None]
    merged = views[0]
    for view in views[1:]:
        merged = merged.merge(view)
    return merged
