"""Prefect steps of the model stage: fit the transform, search, cross-validate, train, evaluate, track.

Each step is a named Prefect task over the domain functions of ``tasks.model``. Steps whose inputs
fully determine their output are cached on inputs + code (a rerun of a failed flow reuses them);
the snapshot's matrix is shared between steps of one process by ``load_matrix``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flows.steps.engine import cluster_client
from flows.steps.runtime import cached_task, io_task, wandb_api_key
from tasks.core.context import RunContext
from tasks.data.snapshot import SnapshotManifest
from tasks.decisions import GateEvidence, auc_gain_interval, compare_on_holdout, loss_gain_interval
from tasks.model.baselines import LinearBaseline, fit_baseline_on_split
from tasks.model.distributed import train_on_cluster
from tasks.model.evaluate import (
    CandidateEvaluation,
    ChampionEvaluation,
    evaluate_candidate,
    evaluate_champion,
)
from tasks.model.held_out import (
    BASELINE,
    CANDIDATE,
    CHAMPION,
    HeldOutPart,
    Scorer,
    score_held_out,
    scored_test_rows,
)
from tasks.model.tracking import TrackedRun, TrainingReport, log_training_run
from tasks.model.train import (
    FitResult,
    PreparedTraining,
    TrainedModel,
    calibrate_candidate,
    cv_fold,
    fit_lightgbm,
    fit_on_split,
    load_matrix,
    prepare_training,
    save_candidate,
    train_candidate,
    write_candidate_files,
)
from tasks.model.tune import TrialSpec, pruning_callback
from tasks.registry.versions import Registry


@cached_task(name="fit-feature-transform")
def fit_transform_on_train(manifest: SnapshotManifest, ctx: RunContext) -> PreparedTraining:
    """Split (by time, or stratified), then fit the feature transform on the training rows only."""
    return prepare_training(manifest, ctx.store, ctx.config)


@cached_task(name="train-trial", task_run_name="trial-{spec.number}")
def run_trial(
    spec: TrialSpec,
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    ctx: RunContext,
    num_threads: int,
) -> FitResult:
    """One search trial: train on the train split, early-stop and score on validation; pruned by
    Optuna's median rule against the trials finished before it (``tasks.model.tune``). On a large
    snapshot: on evenly spaced rows of train + validation (``PreparedTraining.search_rows``)."""
    every, train_end, valid_end = prepared.search_rows(ctx.config.training)
    X, y = load_matrix(
        ctx.store, manifest, prepared.transform, ctx.config.target.name, 0, prepared.split.valid_end, every
    )
    _, result = fit_on_split(
        X,
        y,
        spec.params,
        prepared,
        ctx.config.training,
        num_threads,
        (pruning_callback(spec.pruning),),
        (train_end, valid_end),
    )
    return result.model_copy(update={"trial": spec.number})


@cached_task(name="cv-fold", task_run_name="cv-fold-{fold}")
def cross_validate_fold(
    fold: int,
    params: dict[str, Any],
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    ctx: RunContext,
    num_threads: int,
) -> float:
    """The search metric on validation (ROC-AUC, or the objective's loss) of one fold over train +
    validation rows (an expanding window over time, or one part of a k-fold, stratified for classes),
    on the same rows as the search trials."""
    every, _, valid_end = prepared.search_rows(ctx.config.training)
    X, y = load_matrix(
        ctx.store, manifest, prepared.transform, ctx.config.target.name, 0, prepared.split.valid_end, every
    )
    train, valid = cv_fold(valid_end, ctx.config.split.cv_folds, fold, ctx.config.split_method)
    _, result = fit_lightgbm(
        X,
        y,
        train,
        valid,
        params,
        prepared.transform,
        prepared.task,
        ctx.config.training,
        num_threads,
    )
    return result.valid_score


@cached_task(name="train-final-model")
def train_final_model(
    best: FitResult, manifest: SnapshotManifest, prepared: PreparedTraining, ctx: RunContext
) -> TrainedModel:
    """The candidate with the best trial's params, saved as LightGBM text. Local engine: early-stopped
    on validation in this process. Dask engine: ``lightgbm.dask`` over the snapshot's parts on the
    cluster, for the best trial's early-stopped number of rounds (``tasks.model.distributed``)."""
    if ctx.settings.engine == "dask":
        with cluster_client() as client:
            booster, result = train_on_cluster(
                client, best.params, best.best_iteration, manifest, prepared, ctx
            )
        return save_candidate(booster, result, prepared, ctx.store)
    X, y = load_matrix(
        ctx.store, manifest, prepared.transform, ctx.config.target.name, 0, prepared.split.valid_end
    )
    return train_candidate(X, y, best.params, prepared, ctx.config.training, ctx.store)


@cached_task(name="calibrate-candidate")
def calibrate_trained_model(
    trained: TrainedModel, manifest: SnapshotManifest, prepared: PreparedTraining, ctx: RunContext
) -> TrainedModel:
    """Platt scaling on the validation rows, folded into the model file, and the threshold the config's
    rule picks there (``tasks.model.calibrate``)."""
    return calibrate_candidate(trained, manifest, prepared, ctx.config, ctx.store)


@cached_task(name="fit-linear-baseline")
def fit_linear_baseline_on_train(
    manifest: SnapshotManifest, prepared: PreparedTraining, ctx: RunContext
) -> LinearBaseline:
    """The regularised logistic regression the first model of a name must not be worse than."""
    return fit_baseline_on_split(manifest, prepared, ctx.config, ctx.store)


@cached_task(name="score-held-out-part", task_run_name="score-held-out-rows-{rows[0]}")
def score_held_out_part(
    rows: tuple[int, int],
    trained: TrainedModel,
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    model_name: str,
    champion_version: int | None,
    baseline: LinearBaseline | None,
    ctx: RunContext,
) -> HeldOutPart:
    """One part of the held-out rows scored where it is read (``tasks.model.held_out``): the test rows
    by the candidate and by the champion (``champion_version``, with its own saved transform), the
    drift reference's sample rows by the candidate and profiled."""
    store = ctx.store
    champion, problem = None, None
    if champion_version is not None:
        registry = Registry(store, model_name)
        try:
            mv = registry.get(champion_version)
            champion = Scorer(
                model_text=registry.read_file(mv, "model.txt").decode(), transform=registry.load_transform(mv)
            )
        except Exception as exc:  # noqa: BLE001 - its files are unreadable: it cannot be compared
            problem = f"cannot be loaded: {exc}"
    candidate = Scorer(model_text=store.read_bytes(trained.model_key).decode(), transform=prepared.transform)
    key = f"{trained.files_prefix}/held_out/rows-{rows[0]:012d}.parquet"
    part = score_held_out(store, ctx.config, manifest, prepared, candidate, champion, rows, key, baseline)
    return part.model_copy(update={"champion_note": problem}) if problem else part


@cached_task(name="evaluate-candidate")
def evaluate_candidate_on_test(
    trained: TrainedModel, parts: list[HeldOutPart], prepared: PreparedTraining, ctx: RunContext
) -> CandidateEvaluation:
    """Test-window metrics, baselines, slices and plots for the candidate, from its scored parts."""
    test = scored_test_rows(ctx.store, parts)
    return evaluate_candidate(
        test[CANDIDATE].to_numpy(),
        test[ctx.config.target.name].to_numpy().astype(np.float64),
        test,
        prepared.constant_prediction(test.height),
        test[BASELINE].to_numpy(),
        trained.threshold.threshold if trained.threshold else 0.5,
        trained.importance,
        prepared.task,
        ctx.config,
        ctx.store,
        f"{trained.files_prefix}/plots",
    )


@io_task(name="evaluate-champion")
def evaluate_champion_on_test(
    champion_version: int | None, parts: list[HeldOutPart], model_name: str, ctx: RunContext
) -> ChampionEvaluation:
    """The champion's metrics on the candidate's test window (at its own registered threshold), from
    the scored parts."""
    problem = next((p.champion_note for p in parts if p.champion_note), None)
    if champion_version is None or problem:
        return evaluate_champion(champion_version, np.array([]), None, problem, 0.5)
    test = scored_test_rows(ctx.store, parts)
    registry = Registry(ctx.store, model_name)
    mv = registry.get(champion_version)
    return evaluate_champion(
        champion_version,
        test[ctx.config.target.name].to_numpy(),
        test[CHAMPION].to_numpy(),
        None,
        mv.metrics.get("threshold", 0.5),
        registry.load_transform(mv).task,
    )


@io_task(name="gate-evidence")
def gate_evidence_on_test(
    trained: TrainedModel,
    parts: list[HeldOutPart],
    prepared: PreparedTraining,
    champion: ChampionEvaluation,
    ctx: RunContext,
) -> GateEvidence:
    """The intervals the promotion gate decides on, from the scored test rows: yes/no by ROC-AUC
    (DeLong), classes and numbers by the relative reduction of the objective's mean loss (paired
    bootstrap); each against the constant, the linear baseline and, if one scored them, the champion."""
    test = scored_test_rows(ctx.store, parts)
    task, gate = prepared.task, ctx.settings.gate
    y = test[ctx.config.target.name].to_numpy().astype(np.float64)
    p = test[CANDIDATE].to_numpy()
    if task.kind == "binary":
        y = y.astype(int)
        constant = np.full(len(y), float(y.mean()) if len(y) else 0.0)
        baselines = [
            auc_gain_interval(y, p, constant, task.constant_name, gate.alpha),
            auc_gain_interval(y, p, test[BASELINE].to_numpy(), task.linear_name, gate.alpha),
        ]
    else:
        baselines = [
            loss_gain_interval(
                task, y, p, prepared.constant_prediction(len(y)), task.constant_name, gate.alpha
            ),
            loss_gain_interval(task, y, p, test[BASELINE].to_numpy(), task.linear_name, gate.alpha),
        ]
    comparison = None
    if champion.metrics is not None and champion.version is not None:
        comparison = compare_on_holdout(
            y,
            p,
            test[CHAMPION].to_numpy(),
            test.select(ctx.config.slices),
            champion.version,
            None,
            gate,
            task,
        )
    threshold = trained.threshold.threshold if trained.threshold else 0.5
    flagged = int((p >= threshold).sum()) if task.kind == "binary" else len(y)
    return GateEvidence(baselines=baselines, comparison=comparison, test_flagged=flagged, test_rows=len(y))


@io_task(name="stage-candidate-files")
def stage_candidate_files(
    trained: TrainedModel,
    prepared: PreparedTraining,
    candidate: CandidateEvaluation,
    reference_keys: dict[str, str],
    evaluation: dict[str, Any],
    card: str,
    ctx: RunContext,
) -> dict[str, str]:
    """Everything that explains the candidate, beside it in the store; registry file name -> store key."""
    return write_candidate_files(
        ctx.store,
        trained,
        prepared.transform,
        evaluation,
        reference_keys,
        candidate.plot_keys,
        ctx.config.template(),
        card,
    )


@cached_task(name="track-in-wandb")
def track_training(report: TrainingReport, ctx: RunContext) -> TrackedRun | None:
    """One W&B run for this training, built from the report (plots and model files read from the store).

    The report holds the model's facts, not the gate's verdict (which depends on whichever champion
    serves now): a rerun reproducing a tracked model reuses its run. Aliases come with the registry's
    moves (``flows.steps.registry.mirror_aliases_in_wandb``)."""
    store = ctx.store
    files = {name: store.read_bytes(key) for name, key in report.files.items()}
    pngs = {
        n.removeprefix("plots/").removesuffix(".png"): v for n, v in files.items() if n.startswith("plots/")
    }
    api_key = wandb_api_key(ctx.settings) if ctx.settings.tracking.mode != "disabled" else None
    return log_training_run(ctx.settings, api_key, report, pngs, files)
