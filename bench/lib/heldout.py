"""A model trained on nycflights13 January-August without Prefect, for benchmarks of the decisions
that judge models (canary, drift): the same steps the training flow runs, in a throw-away store."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl


@dataclass
class HeldOutModel:
    config: Any  # DatasetConfig
    snapshot: pl.DataFrame  # every row, in split order (by time, or by split key)
    prepared: Any  # PreparedTraining: the split and the fitted transform
    trained: Any  # TrainedModel
    booster: Any
    X: np.ndarray
    y: np.ndarray
    manifest: Any  # SnapshotManifest
    ctx: Any  # RunContext

    @property
    def held_out(self) -> slice:
        """The rows the model did not train on (validation + test)."""
        return slice(self.prepared.split.train_end, None)

    @property
    def test(self) -> slice:
        """The rows that played no part in training at all (not even early stopping)."""
        return slice(self.prepared.split.valid_end, None)


def train_january_august(root: Path, calibrated: bool = False) -> HeldOutModel:
    """Land the demo data under ``root``, build the January-August snapshot and train one model."""
    from tasks.data.landing import land_nycflights13

    return train_from_config(
        root,
        None,
        lambda store, settings: land_nycflights13(store, settings.sources_dir, range(1, 9)),
        calibrated,
    )


def train_from_config(
    root: Path, config_path: Path | None, land: Callable[[Any, Any], Any], calibrated: bool = False
) -> HeldOutModel:
    """Land data with ``land(store, settings)`` under ``root``, snapshot it as the dataset config at
    ``config_path`` (default: the settings') says, and train one model with the config's params
    (``calibrated``: then calibrated on validation with its threshold chosen, as the flow does)."""
    os.environ.update(
        {"DRIFTLOOP_STORE_URI": str(root / "store"), "DRIFTLOOP_SOURCES_DIR": str(root / "sources")}
    )
    if config_path is not None:
        os.environ["DRIFTLOOP_DATASET_CONFIG"] = str(config_path)
    from flows.schemas import TrainingParams
    from flows.steps.model import calibrate_trained_model, train_final_model
    from flows.steps.training import BareSteps, ingest_tables, snapshot_and_prepare, start_training_run
    from tasks.core.settings import Settings
    from tasks.data.snapshot import load_snapshot
    from tasks.model.train import FitResult, load_candidate, load_matrix

    settings = Settings()
    run = start_training_run(TrainingParams(), settings)  # the training flow's own stages, no search
    land(run.ctx.store, settings)
    steps = BareSteps()
    run = snapshot_and_prepare(ingest_tables(run, steps), steps)
    ctx, config, manifest, prepared = run.ctx, run.config, run.manifest, run.prepared
    snapshot = load_snapshot(manifest, ctx.store)
    X, y = load_matrix(ctx.store, manifest, prepared.transform, config.target.name)
    with_config_params = FitResult(
        params=dict(config.training.params),
        best_iteration=0,
        valid_score=float("nan"),
        valid_loss=float("nan"),
        history={},
    )
    trained = steps.call(train_final_model, with_config_params, manifest, prepared, ctx)
    if calibrated:
        trained = steps.call(calibrate_trained_model, trained, manifest, prepared, ctx)
    booster = load_candidate(ctx.store, trained)
    return HeldOutModel(config, snapshot, prepared, trained, booster, X, y, manifest, ctx)


def drift_reference(model: HeldOutModel) -> Any:
    """The model's ``DriftReference`` made as the training flow makes it: the held-out rows scored and
    profiled part by part (``score_held_out_part``), the profiles merged and calibrated
    (``profile_reference``)."""
    from flows.steps.model import score_held_out_part
    from flows.steps.monitoring import profile_reference
    from tasks.model.held_out import held_out_ranges
    from tasks.monitoring.drift import DriftReference

    parts = [
        score_held_out_part.fn(
            rows,
            model.trained,
            model.manifest,
            model.prepared,
            model.config.model_name,
            None,
            None,
            model.ctx,
        )
        for rows in held_out_ranges(model.manifest, model.prepared.split.train_end)
    ]
    keys = profile_reference.fn(model.trained, model.manifest, model.prepared, parts, model.ctx)
    return DriftReference.model_validate_json(model.ctx.store.read_bytes(keys["drift_reference.json"]))


def reference_apart(model: HeldOutModel, rng: np.random.Generator) -> tuple[Any, pl.DataFrame]:
    """A drift reference calibrated as the training flow calibrates one, but on a random half of the
    held-out rows, and the other half: windows drawn from rows the reference never saw, as live
    traffic is (a window drawn from the reference's own rows resembles it more than traffic can)."""
    from tasks.model.held_out import reference_inputs
    from tasks.model.train import predict
    from tasks.monitoring.drift import calibrate_reference, input_importance

    held = model.snapshot[model.held_out]
    order = rng.permutation(held.height)
    half, apart = held[np.sort(order[: held.height // 2])], held[np.sort(order[held.height // 2 :])]
    inputs = reference_inputs(model.prepared.transform, model.config)
    scored = half.select(inputs).with_columns(
        pl.Series("prediction", predict(model.booster, model.prepared.transform.to_matrix(half)))
    )
    _, reference = calibrate_reference(
        scored,
        ("a random half of the held-out rows", ""),
        model.snapshot.select(inputs),
        model.config,
        input_importance(model.prepared.transform.spec, model.trained.importance),
        seed=model.config.training.seed,
    )
    return reference, apart
