"""Training: splits (by time, or stratified / random by row hash), LightGBM with early stopping,
search trials, cross-validation (expanding windows over time, else stratified k-fold).

Everything here is a deterministic function of its inputs (LightGBM runs with ``seed`` and
``deterministic=True``, category codes come from the fitted transform), so Prefect can cache and
retry these steps safely and two runs on the same snapshot give the same model.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import polars as pl
from pydantic import BaseModel

from tasks.core.config import DatasetConfig, TrainingConfig
from tasks.core.errors import BadInput, SingleClassTarget
from tasks.core.feature_spec import FeatureSpec
from tasks.core.store import ArtifactStore
from tasks.core.target import LearningTask
from tasks.data.snapshot import SnapshotManifest, load_rows, spacing
from tasks.model.calibrate import (
    Calibration,
    ThresholdChoice,
    apply_platt,
    calibrated_model_text,
    choose_threshold,
    fit_platt,
)
from tasks.model.features import FittedTransform, fit_feature_transform

# set by the loop for every fit, beside the target's objective and metrics (LearningTask.lightgbm_params:
# early stopping watches the first metric only, the objective's own loss, which keeps improving while
# a yes/no model learns the probabilities' scale: ROC-AUC can peak after 3 trees and leave a model that
# never says yes; the search still picks yes/no trials by validation ROC-AUC)
FIXED_PARAMS = {"deterministic": True, "force_row_wise": True, "verbose": -1}


def training_params(params: dict[str, Any], task: LearningTask) -> dict[str, Any]:
    """What LightGBM is given: the trial's params, the target's objective and metrics, the loop's own."""
    return {**params, **task.lightgbm_params(), **FIXED_PARAMS}


class TimeSplit(BaseModel):
    """Row ranges of a snapshot in split order (by time, or by split key): [0, train_end) train,
    [train_end, valid_end) valid, rest test. ``*_start_time`` are the time (or the split key) at which
    validation and test start."""

    train_end: int
    valid_end: int
    rows: int
    valid_start_time: str
    test_start_time: str

    @property
    def test_rows(self) -> int:
        return self.rows - self.valid_end


def time_split(times: pl.Series, target: pl.Series, valid_fraction: float, test_fraction: float) -> TimeSplit:
    """Split at timestamps so that rows sharing a timestamp never straddle two splits."""
    n = len(times)
    cut_valid = times[min(n - 1, int(n * (1 - valid_fraction - test_fraction)))]
    cut_test = times[min(n - 1, int(n * (1 - test_fraction)))]
    train_end = int(times.search_sorted(cut_valid, side="left"))
    valid_end = int(times.search_sorted(cut_test, side="left"))
    split = TimeSplit(
        train_end=train_end,
        valid_end=valid_end,
        rows=n,
        valid_start_time=str(cut_valid),
        test_start_time=str(cut_test),
    )
    for name, lo, hi in (
        ("train", 0, train_end),
        ("validation", train_end, valid_end),
        ("test", valid_end, n),
    ):
        if hi - lo == 0:
            raise BadInput(
                f"the {name} split is empty ({n} rows); widen the window or change split fractions"
            )
        if target[lo:hi].n_unique() < 2:
            raise SingleClassTarget(
                f"the {name} split ({hi - lo} rows) holds only one class; widen the window"
            )
    return split


def make_split(df: pl.DataFrame, config: DatasetConfig) -> TimeSplit:
    """The split of a snapshot (whose rows are in split order, see ``tasks.data.snapshot.order_part``)."""
    if config.split_method == "time":
        keys = df[config.time_column]
    else:  # rows are in split-key order already (tasks.data.snapshot.order_part): cut by position
        keys = pl.Series("position", np.arange(df.height) / max(1, df.height))
    return time_split(keys, df[config.target.name], config.split.valid_fraction, config.split.test_fraction)


def time_series_folds(n_rows: int, k: int) -> list[tuple[int, int, int]]:
    """Expanding-window folds over rows [0, n_rows): (train_end, valid_start, valid_end) per fold."""
    if k < 1:
        return []
    chunk = n_rows // (k + 1)
    return [(chunk * (i + 1), chunk * (i + 1), chunk * (i + 2) if i < k - 1 else n_rows) for i in range(k)]


def cv_fold(n_rows: int, k: int, fold: int, method: str) -> tuple[slice | np.ndarray, slice]:
    """(train rows, validation rows) of one fold over rows [0, n_rows) in split order. By time: an
    expanding window (train on the past, validate on what follows). Otherwise k-fold: fold ``fold``'s
    consecutive chunk validates, the rest trains; the rows are ordered by their stratified split key,
    so each chunk holds the target's share of positives (stratified k-fold)."""
    if method == "time":
        train_end, valid_start, valid_end = time_series_folds(n_rows, k)[fold]
        return slice(0, train_end), slice(valid_start, valid_end)
    bounds = [n_rows * i // k for i in range(k + 1)]
    lo, hi = bounds[fold], bounds[fold + 1]
    return np.r_[0:lo, hi:n_rows], slice(lo, hi)


def load_matrix(
    store: ArtifactStore,
    manifest: SnapshotManifest,
    transform: FittedTransform,
    target: str,
    start: int = 0,
    stop: int | None = None,
    every: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, stop) of the snapshot (every ``every``-th) as (X, y), read part by part; memoised
    per process, since trials and folds reuse the same matrix."""
    key = (store.uri, manifest.snapshot_id, transform.fingerprint(), target, start, stop, every)
    with _MATRICES_LOCK:
        hit = _MATRICES.get(key)
        if hit is None:
            _MATRICES.clear()  # keep one matrix in memory at most
            df = load_rows(manifest, store, start, stop, every)
            hit = (transform.to_matrix(df), df[target].to_numpy().astype(np.float64))
            _MATRICES[key] = hit
    return hit


# A process-local memo of the last matrix (an optimisation only: the content is a pure function of
# the key, so a fresh process recomputes the same thing).
_MATRICES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_MATRICES_LOCK = threading.Lock()


class FitResult(BaseModel):
    params: dict[str, Any]
    trial: int = 0
    pruned: bool = False  # a search trial stopped early by the pruner (its curve is partial)
    best_iteration: int
    metric: str = "auc"  # the search's metric (LearningTask.search_metric): ``valid_score`` is its value
    valid_score: float  # on validation at the best iteration
    valid_loss: float  # the objective's loss there (what early stopping watched)
    history: dict[str, dict[str, list[float]]]

    @property
    def curve(self) -> list[float]:
        """The search metric on validation, round by round."""
        return self.history["valid"][self.metric]


def fit_lightgbm(
    X: np.ndarray,
    y: np.ndarray,
    train: slice | np.ndarray,
    valid: slice | np.ndarray,
    params: dict[str, Any],
    transform: FittedTransform,
    task: LearningTask,
    training: TrainingConfig,
    num_threads: int,
    callbacks: tuple[Callable[[Any], None], ...] = (),
) -> tuple[lgb.Booster | None, FitResult]:
    """One LightGBM fit with early stopping on the validation rows. ``callbacks`` may prune it
    (``optuna.TrialPruned``): then no booster, and the result holds the curve up to there."""
    full = {**training_params(params, task), "seed": training.seed, "num_threads": num_threads}
    names = transform.feature_names
    dtrain = lgb.Dataset(
        X[train],
        label=y[train],
        feature_name=names,
        categorical_feature=transform.categorical_indices,
        free_raw_data=False,
        params={"verbose": -1},
    )
    dvalid = lgb.Dataset(X[valid], label=y[valid], reference=dtrain)
    history: dict[str, dict[str, list[float]]] = {}
    booster: lgb.Booster | None = None
    try:
        booster = lgb.train(
            full,
            dtrain,
            num_boost_round=training.num_boost_round,
            valid_sets=[dtrain, dvalid],
            valid_names=["train", "valid"],
            callbacks=[
                lgb.early_stopping(training.early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(history),
                *callbacks,
            ],
        )
        best = booster.best_iteration or booster.current_iteration()
    except optuna.TrialPruned:
        curve = np.asarray(history["valid"][task.search_metric])
        best = int(np.argmax(curve) if task.maximize else np.argmin(curve)) + 1
    result = FitResult(
        params=params,
        pruned=booster is None,
        best_iteration=best,
        metric=task.search_metric,
        valid_score=float(history["valid"][task.search_metric][best - 1]),
        valid_loss=float(history["valid"][task.loss_metric][best - 1]),
        history={k: {m: [float(x) for x in v] for m, v in d.items()} for k, d in history.items()},
    )
    return booster, result


def candidate_model_key(model_text: str) -> str:
    return f"models/candidates/{hashlib.sha256(model_text.encode()).hexdigest()[:16]}/model.txt"


def predict(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return booster.predict(X, num_iteration=booster.best_iteration or None)


class PreparedTraining(BaseModel):
    """The time split of a snapshot, the feature transform fitted on its training rows (carrying the
    target's task) and what a constant model predicts (the training rows' share of yes or of each class,
    or the number minimising the objective's loss on them)."""

    transform: FittedTransform
    split: TimeSplit
    constant: list[float]

    @property
    def task(self) -> LearningTask:
        return self.transform.task

    @property
    def base_rate(self) -> float:
        """Yes/no: the training rows' share of yes."""
        return self.constant[0]

    def constant_prediction(self, rows: int) -> np.ndarray:
        """The constant model's predictions for ``rows`` rows (a row of class shares each, for classes)."""
        c = np.asarray(self.constant)
        return np.tile(c, (rows, 1)) if self.task.kind == "multiclass" else np.full(rows, c[0])

    def search_rows(self, training: TrainingConfig) -> tuple[int, int, int]:
        """What search trials and CV folds train on: every ``k``-th row of train + validation, at most
        ``training.max_search_rows``; returns (k, train rows, train + validation rows) of that sample."""
        k = spacing(self.split.valid_end, training.max_search_rows)
        return k, -(-self.split.train_end // k), -(-self.split.valid_end // k)


def split_columns(manifest: SnapshotManifest, store: ArtifactStore, config: DatasetConfig) -> pl.DataFrame:
    """What the split is computed from, for every row: the time column (time split) and the target."""
    time = [config.time_column] if config.split_method == "time" else []
    return load_rows(manifest, store, 0, columns=[*time, config.target.name])


def prepare_training(
    manifest: SnapshotManifest, store: ArtifactStore, config: DatasetConfig
) -> PreparedTraining:
    """Split (from the time or split order column and the target only), then fit the feature transform
    on the training rows only (no test leakage): every row, or evenly spaced ones beyond
    ``training.max_fit_rows`` (medians, quantiles and frequent levels of millions of rows do not need
    them all)."""
    target, task = config.target.name, manifest.learning_task(config)
    keys = split_columns(manifest, store, config)
    split = make_split(keys, config)
    spec = FeatureSpec.from_config(config)
    every = spacing(split.train_end, config.training.max_fit_rows)
    train = load_rows(manifest, store, 0, split.train_end, every, columns=[*spec.input_columns, target])
    task.check_values(keys[target].to_numpy(), f"{config.origin}: training.params")
    y_train = keys[target].head(split.train_end).to_numpy()
    return PreparedTraining(
        transform=fit_feature_transform(train, spec).model_copy(update={"task": task}),
        split=split,
        constant=np.atleast_1d(task.constant_prediction(y_train, 1)[0]).tolist(),
    )


def threads_per_fit(parallel: int) -> int:
    """LightGBM threads for each of ``parallel`` fits running at once on this machine."""
    return max(1, (os.cpu_count() or 2) // max(1, parallel))


class TrainedModel(BaseModel):
    """A candidate model saved in the store, with its fit and feature importance; once calibrated
    (``calibrate_candidate``), its key is the calibrated model's and the threshold is chosen."""

    model_key: str
    fit: FitResult
    importance: dict[str, float]
    calibration: Calibration | None = None
    threshold: ThresholdChoice | None = None

    @property
    def files_prefix(self) -> str:
        """Where the candidate's other files (plots, profile, transform, evaluation) go beside it."""
        return self.model_key.rsplit("/", 1)[0]


def fit_on_split(
    X: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    prepared: PreparedTraining,
    training: TrainingConfig,
    num_threads: int,
    callbacks: tuple[Callable[[Any], None], ...] = (),
    bounds: tuple[int, int] | None = None,
) -> tuple[lgb.Booster | None, FitResult]:
    """Fit on the training rows, early-stopped and scored on the validation rows of the split
    (``bounds``: where training and validation end in ``X``, when it is a sample of the rows)."""
    train_end, valid_end = bounds or (prepared.split.train_end, prepared.split.valid_end)
    return fit_lightgbm(
        X,
        y,
        slice(0, train_end),
        slice(train_end, valid_end),
        params,
        prepared.transform,
        prepared.task,
        training,
        num_threads,
        callbacks,
    )


def train_candidate(
    X: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    prepared: PreparedTraining,
    training: TrainingConfig,
    store: ArtifactStore,
) -> TrainedModel:
    """The candidate: best params, early-stopped on validation; saved as LightGBM text."""
    booster, result = fit_on_split(X, y, params, prepared, training, threads_per_fit(1))
    return save_candidate(booster, result, prepared, store)


def save_candidate(
    booster: lgb.Booster, result: FitResult, prepared: PreparedTraining, store: ArtifactStore
) -> TrainedModel:
    """The fitted booster saved as LightGBM text under its content hash, with its feature importance."""
    text = booster.model_to_string(num_iteration=result.best_iteration)
    key = candidate_model_key(text)
    store.write_bytes(key, text.encode())
    gains = booster.feature_importance(importance_type="gain", iteration=result.best_iteration)
    return TrainedModel(
        model_key=key,
        fit=result,
        importance={n: float(g) for n, g in zip(prepared.transform.feature_names, gains)},
    )


MAX_CALIBRATION_ROWS = 500_000


def validation_matrix(
    store: ArtifactStore, manifest: SnapshotManifest, prepared: PreparedTraining, target: str
) -> tuple[np.ndarray, np.ndarray]:
    """The validation rows (evenly spaced, at most ``MAX_CALIBRATION_ROWS``) as (X, y)."""
    lo, hi = prepared.split.train_end, prepared.split.valid_end
    return load_matrix(
        store, manifest, prepared.transform, target, lo, hi, spacing(hi - lo, MAX_CALIBRATION_ROWS)
    )


def calibrate_candidate(
    trained: TrainedModel,
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    config: DatasetConfig,
    store: ArtifactStore,
) -> TrainedModel:
    """A yes/no candidate calibrated on the validation rows (Platt, folded into the model file, saved
    under its own content hash) with the threshold the config's rule picks on its calibrated validation
    scores (``tasks.model.calibrate``). Other kinds answer with the model's own output: unchanged."""
    if prepared.task.kind != "binary":
        return trained
    X, y = validation_matrix(store, manifest, prepared, config.target.name)
    raw = predict(load_candidate(store, trained), X)
    calibration = fit_platt(raw, y)
    text = calibrated_model_text(store.read_bytes(trained.model_key).decode(), calibration)
    key = candidate_model_key(text)
    store.write_bytes(key, text.encode())
    threshold = choose_threshold(y, apply_platt(raw, calibration), config.training.threshold)
    return trained.model_copy(update={"model_key": key, "calibration": calibration, "threshold": threshold})


def load_candidate(store: ArtifactStore, trained: TrainedModel) -> lgb.Booster:
    return lgb.Booster(model_str=store.read_bytes(trained.model_key).decode())


def write_candidate_files(
    store: ArtifactStore,
    trained: TrainedModel,
    transform: FittedTransform,
    evaluation: dict[str, Any],
    reference_keys: dict[str, str],
    plot_keys: dict[str, str],
    config_template: dict[str, Any],
    card: str,
) -> dict[str, str]:
    """Write the transform, evaluation, dataset config and model card beside the candidate's model;
    return what the registry stores for it: file name -> store key (model, transform, config, drift
    reference, evaluation, card, plots)."""
    transform_key = f"{trained.files_prefix}/transform.json"
    store.write_bytes(transform_key, transform.to_json().encode())
    config_key = f"{trained.files_prefix}/dataset_config.json"
    store.write_json(config_key, config_template)
    evaluation_key = f"{trained.files_prefix}/evaluation.json"
    store.write_json(evaluation_key, evaluation)
    card_key = f"{trained.files_prefix}/model_card.md"
    store.write_bytes(card_key, card.encode())
    return {
        "model.txt": trained.model_key,
        "transform.json": transform_key,
        "dataset_config.json": config_key,
        **reference_keys,  # the drift reference: profile and calibration
        "evaluation.json": evaluation_key,
        "model_card.md": card_key,
        **{f"plots/{k}.png": v for k, v in plot_keys.items()},
    }
