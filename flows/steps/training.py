"""The training run: one typed record the training stages take and return, and the stages themselves.

A stage is a plain function over the record (``TrainingRun``) that calls the named steps through a
``StepRunner``: in the flow as Prefect tasks, mapped on the engine (``PrefectSteps``); in benchmarks
as the same steps' functions on a thread pool (``BareSteps``) or a Dask client (``DaskSteps``), with
no Prefect in the loop. So ``flows/training.py`` reads as wiring, and ``bench/`` runs the flow's own
stages instead of re-typing the spine.

Stages, in order (``TRAINING_STAGES``): ingest the tables, snapshot and prepare (split + fitted
transform), search and cross-validate, train and score the held-out rows, evaluate and decide, profile
and track, register and apply the decision.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
from pydantic import ValidationError

from flows.schemas import TrainingParams, TrainingSummary
from flows.steps.data import (
    build_dataset_snapshot,
    discover_table_batches,
    extend_snapshot_with_feedback,
    validate_table_batches,
)
from flows.steps.engine import parallel_steps, threads_per_step
from flows.steps.events import emit_model_event
from flows.steps.model import (
    calibrate_trained_model,
    cross_validate_fold,
    evaluate_candidate_on_test,
    evaluate_champion_on_test,
    fit_linear_baseline_on_train,
    fit_transform_on_train,
    gate_evidence_on_test,
    run_trial,
    score_held_out_part,
    stage_candidate_files,
    track_training,
    train_final_model,
)
from flows.steps.monitoring import profile_reference
from flows.steps.registry import (
    apply_promotion_decision,
    register_model_version,
    save_version_to_bentoml,
    start_canary,
)
from flows.steps.runtime import in_prefect_run, model_context, run_context, step_logger
from tasks.core.config import ConfigError, DatasetConfig
from tasks.core.context import RunContext
from tasks.core.settings import Settings
from tasks.data.ingest import IngestedTable
from tasks.data.snapshot import SnapshotManifest
from tasks.decisions import (
    GateEvidence,
    PromotionDecision,
    decide_labels_anyone,
    decide_promotion,
    decide_registration,
    decide_reproduced,
)
from tasks.model.baselines import LinearBaseline
from tasks.model.card import AttributionSums, CardFacts, GateRow, model_card
from tasks.model.evaluate import CandidateEvaluation, ChampionEvaluation, flat_metrics, metric_table
from tasks.model.held_out import HeldOutPart, held_out_ranges
from tasks.model.kind_metrics import KindMetrics
from tasks.model.tracking import TrackedRun, TrainingReport, model_artifact_files
from tasks.model.train import FitResult, PreparedTraining, TrainedModel
from tasks.model.tune import best_trial, run_search
from tasks.registry.versions import ModelVersion, NewVersion, Registry, VersionDecision, git_commit


# --- how steps are run ----------------------------------------------------------------------------
class StepRunner(Protocol):
    """Runs named steps: one call, a call per argument tuple (in parallel), or one step mapped over
    items with shared arguments (in parallel), always returning results in order."""

    emits_events: bool

    def call(self, step: Any, *args: Any) -> Any: ...
    def each(self, step: Any, calls: list[tuple]) -> list[Any]: ...
    def map(self, step: Any, items: Iterable[Any], *shared: Any) -> list[Any]: ...


class PrefectSteps:
    """Inside a flow: Prefect tasks on the flow's task runner (threads, or the Dask engine)."""

    emits_events = True

    def call(self, step: Any, *args: Any) -> Any:
        return step(*args)

    def each(self, step: Any, calls: list[tuple]) -> list[Any]:
        return [future.result() for future in [step.submit(*args) for args in calls]]

    def map(self, step: Any, items: Iterable[Any], *shared: Any) -> list[Any]:
        from prefect import unmapped

        items = list(items)
        return step.map(items, *[unmapped(x) for x in shared]).result() if items else []


@dataclass
class BareSteps:
    """The steps' own functions, ``threads`` at a time where the flow maps: no Prefect in the loop."""

    threads: int = 2
    emits_events: bool = False

    def call(self, step: Any, *args: Any) -> Any:
        return step.fn(*args)

    def each(self, step: Any, calls: list[tuple]) -> list[Any]:
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda args: step.fn(*args), calls))

    def map(self, step: Any, items: Iterable[Any], *shared: Any) -> list[Any]:
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda item: step.fn(item, *shared), items))


def _with_shared(item: Any, fn: Callable[..., Any], shared: tuple) -> Any:
    return fn(item, *shared)


@dataclass
class DaskSteps(BareSteps):
    """The steps' own functions, mapped on a Dask client's workers (no Prefect in the loop)."""

    client: Any = None

    def map(self, step: Any, items: Iterable[Any], *shared: Any) -> list[Any]:
        futures = self.client.map(_with_shared, list(items), fn=step.fn, shared=shared, pure=False)
        return self.client.gather(futures)


# --- the record -----------------------------------------------------------------------------------
@dataclass
class TrainingRun:
    """Everything one training run knows, filled in stage by stage."""

    ctx: RunContext
    params: TrainingParams
    ingested: dict[str, IngestedTable] = field(default_factory=dict)
    manifest: SnapshotManifest | None = None
    prepared: PreparedTraining | None = None
    trials: list[FitResult] = field(default_factory=list)
    best: FitResult | None = None
    cv: dict[str, float] = field(default_factory=dict)
    trained: TrainedModel | None = None
    baseline: LinearBaseline | None = None
    champion_version: int | None = None
    running_challenger: int | None = None
    parts: list[HeldOutPart] = field(default_factory=list)
    candidate: CandidateEvaluation | None = None
    champion: ChampionEvaluation | None = None
    gate: GateEvidence | None = None
    decision: PromotionDecision | None = None
    reference_keys: dict[str, str] = field(default_factory=dict)
    card: CardFacts | None = None
    tracked: TrackedRun | None = None
    version: ModelVersion | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    bento_tag: str | None = None

    @property
    def config(self) -> DatasetConfig:
        return self.ctx.config

    @property
    def model_name(self) -> str:
        return self.ctx.config.model_name

    @property
    def registry(self) -> Registry:
        return Registry(self.ctx.store, self.model_name)

    @property
    def log(self) -> Any:
        return step_logger("driftloop.training")


# --- the run's context ----------------------------------------------------------------------------
def resolve_config(params: TrainingParams, ctx: RunContext) -> DatasetConfig:
    """The dataset config with this run's overrides applied (to the registry's copy too), validated
    like the file itself."""
    updates: dict = {}
    if params.model_name:
        updates["model_name"] = params.model_name
    for name, value in (("start", params.window_start), ("end", params.window_end)):
        if value:
            updates.setdefault("window", {})[name] = value
    for name, value in (("n_trials", params.n_trials), ("seed", params.seed)):
        if value is not None:
            updates.setdefault("training", {})[name] = value
    if params.cv_folds is not None:
        updates.setdefault("split", {})["cv_folds"] = params.cv_folds
    try:
        return ctx.config.with_updates(updates) if updates else ctx.config
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<top>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"{ctx.config.origin} with this run's parameters is not valid: {problems}"
        ) from None


def start_training_run(params: TrainingParams, settings: Settings | None = None) -> TrainingRun:
    """The run context with this run's settings overrides, on the config with this run's overrides.

    Which config: ``dataset_config`` if given; else, for a registered ``model_name`` other than the
    settings' config's (or any, with ``config_from_registry``), the config that model was registered
    with (``model_context``); else the settings' file (a new model name trains a new model from it)."""
    settings = settings or Settings()
    updates: dict = {}
    if params.dataset_config:
        updates["dataset_config"] = Path(params.dataset_config)
    if params.on_invalid:
        updates["on_invalid"] = params.on_invalid
    if params.min_gain_lower is not None:
        updates["gate"] = settings.gate.model_copy(update={"min_gain_lower": params.min_gain_lower})
    ctx = run_context(settings.model_copy(update=updates) if updates else settings)
    if not params.dataset_config and params.model_name:
        registered = Registry(ctx.store, params.model_name).versions()
        if params.config_from_registry or (registered and params.model_name != ctx.config.model_name):
            ctx = model_context(ctx, params.model_name)
    ctx = ctx.with_config(resolve_config(params, ctx))
    _check_same_dataset(ctx)
    return TrainingRun(ctx=ctx, params=params)


def _check_same_dataset(ctx: RunContext) -> None:
    """A model name belongs to one dataset and task: training it on another config's data is an error
    (before anything is read or registered)."""
    registered = Registry(ctx.store, ctx.config.model_name).kept_config(
        ctx.settings.config_variables(os.environ)
    )
    differs = ctx.config.same_dataset_as(registered) if registered is not None else None
    if differs:
        raise ConfigError(
            f"{ctx.config.origin}: model_name {ctx.config.model_name!r} is registered for another dataset "
            f"or target ({differs}; see {registered.origin}); give this config its own model_name"
        )


# --- the stages -----------------------------------------------------------------------------------
def ingest_tables(run: TrainingRun, steps: StepRunner) -> TrainingRun:
    """Discover every table's batches, then validate the new ones (tables in parallel; failures
    quarantined or failing the run, as ``on_invalid`` says)."""
    ctx, tables = run.ctx, run.config.tables
    refs = steps.each(discover_table_batches, [(t, cfg, ctx) for t, cfg in tables.items()])
    calls = [
        (t, r, cfg, ctx, run.params.rebuild, ctx.settings.on_invalid)
        for (t, cfg), r in zip(tables.items(), refs)
    ]
    run.ingested = dict(zip(tables, steps.each(validate_table_batches, calls)))
    for t, r in run.ingested.items():
        run.log.info(
            "table %s: %d rows in %d valid batches (%d new, %d reused, %d quarantined)",
            *(t, r.rows, len(r.valid_keys), r.new_batches, r.reused_batches, len(r.quarantined)),
        )
    return run


def snapshot_and_prepare(run: TrainingRun, steps: StepRunner) -> TrainingRun:
    """The dataset snapshot (content-derived id, reused when inputs are unchanged), plus the service's
    labelled predictions when asked; then the split and the feature transform fitted on training rows."""
    sources = {t: r.valid_keys for t, r in run.ingested.items()}
    m = run.manifest = steps.call(build_dataset_snapshot, sources, run.ctx)
    run.log.info(
        "snapshot %s: %d rows, %s .. %s, %s target, %s",
        *(m.snapshot_id, m.rows, m.time_min, m.time_max, m.target_kind, m.target_summary()),
    )
    if run.params.include_feedback:
        m = run.manifest = steps.call(extend_snapshot_with_feedback, m, run.ctx)
        run.log.info(
            "with labelled predictions: snapshot %s, %d rows up to %s", m.snapshot_id, m.rows, m.time_max
        )
    run.prepared = steps.call(fit_transform_on_train, run.manifest, run.ctx)
    return run


def search_and_cross_validate(run: TrainingRun, steps: StepRunner) -> TrainingRun:
    """Optuna asks trials in batches as wide as the engine runs at once (threads or Dask workers),
    prunes hopeless ones; the best by validation AUC is cross-validated (time-ordered or stratified)."""
    settings, config = run.ctx.settings, run.config
    shared = (run.manifest, run.prepared, run.ctx, threads_per_step(settings))
    task = run.prepared.task
    run.trials = run_search(
        config.training, task, parallel_steps(settings), lambda specs: steps.map(run_trial, specs, *shared)
    )
    run.best = best_trial(run.trials, task)
    run.log.info(
        "search: %d trials (%d pruned), best validation %s %.4f (%s)",
        *(len(run.trials), sum(t.pruned for t in run.trials), task.search_metric, run.best.valid_score),
        run.best.params,
    )
    aucs = steps.map(cross_validate_fold, range(config.split.cv_folds), run.best.params, *shared)
    nan = float("nan")
    run.cv = {
        "mean": float(np.mean(aucs)) if aucs else nan,
        "std": float(np.std(aucs)) if aucs else nan,
        "folds": float(len(aucs)),
    }
    return run


def train_and_score_held_out(run: TrainingRun, steps: StepRunner) -> TrainingRun:
    """The candidate trained with the best params, calibrated on validation with its threshold chosen
    there; the logistic regression baseline; the held-out rows scored part by part where they are read
    (candidate, champion and baseline on the test rows, the drift reference's sample profiled)."""
    trained = steps.call(train_final_model, run.best, run.manifest, run.prepared, run.ctx)
    run.trained = steps.call(calibrate_trained_model, trained, run.manifest, run.prepared, run.ctx)
    run.baseline = steps.call(fit_linear_baseline_on_train, run.manifest, run.prepared, run.ctx)
    t, task = run.trained, run.prepared.task
    if t.calibration is not None and t.threshold is not None:
        run.log.info(
            "calibrated on %d validation rows (logit slope %.3f, intercept %+.3f); threshold %.4f (%s): "
            "precision %.3f, recall %.3f there",
            *(t.calibration.rows, t.calibration.slope, t.calibration.intercept, t.threshold.threshold),
            *(t.threshold.rule, t.threshold.precision, t.threshold.recall),
        )
    run.log.info(
        "%s baseline: validation %s %.4f",
        *(
            task.linear_name,
            "ROC-AUC" if task.maximize else f"mean {task.loss_name}",
            run.baseline.valid_score,
        ),
    )
    aliases = run.registry.alias_doc().aliases
    run.champion_version, run.running_challenger = aliases.get("champion"), aliases.get("challenger")
    ranges = held_out_ranges(run.manifest, run.prepared.split.train_end)
    shared = (
        *(run.trained, run.manifest, run.prepared, run.model_name, run.champion_version, run.baseline),
        run.ctx,
    )
    run.parts = steps.map(score_held_out_part, ranges, *shared)
    return run


def evaluate_and_decide(run: TrainingRun, steps: StepRunner) -> TrainingRun:
    """Test metrics, baseline, slices and plots for the candidate; the champion on the same rows; the
    promotion gate, and what the caller asked the version to become."""
    run.candidate = steps.call(evaluate_candidate_on_test, run.trained, run.parts, run.prepared, run.ctx)
    run.champion = steps.call(
        evaluate_champion_on_test, run.champion_version, run.parts, run.model_name, run.ctx
    )
    e = run.gate = steps.call(
        gate_evidence_on_test, run.trained, run.parts, run.prepared, run.champion, run.ctx
    )
    useless = decide_labels_anyone(run.trained.threshold, e.test_flagged, e.test_rows)
    gate = decide_promotion(run.champion, e.comparison, e.baselines, useless, run.running_challenger)
    run.decision = decide_registration(gate, run.params.register_as)
    return run


def gate_rows(gate: GateEvidence) -> list[GateRow]:
    """The gate's comparisons as the model card shows them: each baseline, then the champion."""
    rows = [
        GateRow(
            against=g.against, metric=g.metric, other_auc=g.other_score, auc=g.score, gain=g.gain, low=g.low,
            high=g.high,
        )
        for g in gate.baselines
        if g is not None
    ]  # fmt: skip
    c = gate.comparison
    if c is not None:
        rows.append(
            GateRow(
                against=f"champion v{c.champion_version}",
                metric=c.metric,
                other_auc=c.champion_auc,
                auc=c.candidate_auc,
                gain=c.gain_mean,
                low=c.gain_low,
                high=c.gain_high,
            )
        )
    return rows


def card_facts(run: TrainingRun) -> CardFacts:
    """What the model card says, from what the run has measured and decided so far."""
    explained = AttributionSums()
    for part in run.parts:
        explained = explained.plus(part.attributions)
    m = run.manifest
    return CardFacts(
        model_name=run.model_name,
        dataset=run.config.name,
        decision=run.decision.outcome,
        reason=run.decision.reason,
        evaluation=run.candidate.evaluation,
        champion=run.champion.metrics,
        champion_version=run.champion.version,
        gate=gate_rows(run.gate),
        test_flagged=run.gate.test_flagged,
        snapshot_id=m.snapshot_id,
        snapshot_rows=m.rows,
        time_range=(m.time_min, m.time_max),
        sources={t: len(r.valid_keys) for t, r in run.ingested.items()},
        split_method=run.config.with_target_kind(m.target_kind).split_method,  # as the snapshot split
        cv=run.cv,
        params=run.trained.fit.params,
        git_commit=git_commit(run.ctx.settings.git_commit),
        attributions=explained.mean_abs(),
        plot_names=list(run.candidate.plot_keys),
    )


def run_config(run: TrainingRun) -> dict[str, Any]:
    """What identifies this run in W&B and the registry."""
    return {
        "model_name": run.model_name,
        "snapshot_id": run.manifest.snapshot_id,
        "git_commit": git_commit(run.ctx.settings.git_commit),
        "params": run.best.params,
        "best_iteration": run.trained.fit.best_iteration,
        "dataset": run.config.name,
        "window": run.config.window.model_dump(mode="json"),
        "n_trials": len(run.trials),
    }


def training_report(run: TrainingRun, files: dict[str, str]) -> TrainingReport:
    """What W&B gets: this run's identity, curves, metrics, plots, trials and slices, the snapshot, and
    the model's files as the registry will hold them (``files``: registry name -> store key)."""
    evaluation, snapshot_id = run.candidate.evaluation, run.manifest.snapshot_id
    return TrainingReport(
        name=f"{run.model_name}-{snapshot_id}",
        group=f"{run.model_name}-{snapshot_id}-seed{run.config.training.seed}",
        config=run_config(run),
        files=model_artifact_files(files),
        history=run.trained.fit.history,
        summary={
            **{f"test/{k}": v for k, v in flat_metrics(evaluation.test).items()},
            **{f"baseline/{k}": v for k, v in flat_metrics(evaluation.baseline).items()},
            f"cv/{run.best.metric}_mean": run.cv["mean"],
            f"cv/{run.best.metric}_std": run.cv["std"],
        },
        dataset_uri=_as_link(run.ctx.store.url(f"snapshots/{run.manifest.snapshot_id}")),
        dataset_metadata={
            "snapshot_id": run.manifest.snapshot_id,
            "rows": run.manifest.rows,
            "time_min": run.manifest.time_min,
            "time_max": run.manifest.time_max,
            "content_sha256": run.manifest.content_sha256,
            "sources": {t: len(keys) for t, keys in run.manifest.sources.items()},
        },
        trials=[t.model_dump() for t in run.trials],
        slices=[s.model_dump() for s in evaluation.slices],
    )


def profile_and_describe(run: TrainingRun, steps: StepRunner) -> TrainingRun:
    """The drift reference (the parts' profiles merged, calibrated) and the model card's facts."""
    run.card = card_facts(run)
    run.reference_keys = steps.call(
        profile_reference, run.trained, run.manifest, run.prepared, run.parts, run.ctx
    )
    return run


def version_metrics(run: TrainingRun) -> dict[str, float]:
    """What the registry records of the version's test and CV (and, yes/no, its calibration and
    threshold): names as each kind's metrics are called."""
    test, trained = run.candidate.evaluation.test, run.trained
    metrics = {
        **{k: v for k, v in flat_metrics(test).items() if k != "rows"},
        "test_rows": float(test.rows),  # with positive_rate: the held-out AUC's uncertainty
        f"cv_{run.best.metric}_mean": run.cv["mean"],
        f"cv_{run.best.metric}_std": run.cv["std"],
        "cbpe_day_sd": run.candidate.evaluation.day_sd,
    }
    if isinstance(test, KindMetrics):  # the mean loss monitoring compares live losses with, and its se
        held_out = test.metrics["log_loss" if test.kind == "multiclass" else "mean_loss"]
        metrics |= {"loss": held_out.value, "loss_se": (held_out.high - held_out.low) / (2 * 1.96)}
    if trained.calibration is not None and trained.threshold is not None:
        metrics |= {  # the calibration folded into model.txt, and how its threshold was chosen
            "calibration_slope": trained.calibration.slope,
            "calibration_intercept": trained.calibration.intercept,
            "validation_precision": trained.threshold.precision,
            "validation_recall": trained.threshold.recall,
        }
    return metrics


def new_version_record(run: TrainingRun) -> NewVersion:
    return NewVersion(
        snapshot_id=run.manifest.snapshot_id,
        wandb_run=run.tracked.path if run.tracked else None,
        git_commit=run_config(run)["git_commit"],
        params=run.best.params,
        metrics=version_metrics(run),
        test_window=run.candidate.evaluation.test_window,
        feature_names=run.prepared.transform.feature_names,
        input_columns=run.prepared.transform.spec.input_columns,
    )


def register_and_apply(run: TrainingRun, steps: StepRunner) -> TrainingRun:
    """Track the run in W&B, register the version with everything that explains it (its card among
    them), carry out the decision (a version this
    run only reproduced changes nothing), make it buildable as a bento, and say so in an event."""
    ctx, registry, name = run.ctx, run.registry, run.model_name
    explained = {
        "candidate": run.candidate.evaluation.model_dump(mode="json"),
        "cv": run.cv,
        "champion": run.champion.model_dump(mode="json"),
        "gate": run.gate.model_dump(mode="json"),
        "target": run.prepared.task.model_dump(),
        "calibration": run.trained.calibration.model_dump() if run.trained.calibration else None,
        "threshold": run.trained.threshold.model_dump() if run.trained.threshold else None,
        "baseline": {
            "kind": run.prepared.task.linear_name,
            "c": run.baseline.c,
            "valid_score": run.baseline.valid_score,
        },
        "decision": run.decision.model_dump(),
    }
    files = steps.call(
        stage_candidate_files,
        *(run.trained, run.prepared, run.candidate, run.reference_keys, explained, model_card(run.card), ctx),
    )
    run.tracked = steps.call(track_training, training_report(run, files), ctx)  # one W&B run
    known = set(registry.versions())
    decided = VersionDecision(**run.decision.model_dump())
    run.version = v = steps.call(register_model_version, name, files, new_version_record(run), decided, ctx)
    then = v.decision.outcome if v.decision else None
    reproduced = decide_reproduced(v.version, v.version in known, registry.decision_applied(v), then)
    run.decision = reproduced or run.decision
    if run.decision.outcome == "champion" and run.config.approval.first_champion:
        run.decision = first_champion_approval(run, v.version)
    if run.decision.outcome == "champion":
        run.aliases = steps.call(
            apply_promotion_decision, name, v.version, "champion", run.decision.reason, ctx
        )
    elif run.decision.outcome == "challenger":  # a canary decides on live traffic
        why = f"{run.params.reason}: {run.decision.reason}" if run.params.reason else run.decision.reason
        run.aliases = steps.call(start_canary, name, v.version, why, ctx)
    else:  # rejected, reproduced, or a candidate for the caller: no alias moves
        run.aliases = registry.alias_doc().aliases
    run.bento_tag = steps.call(save_version_to_bentoml, name, v.version, ctx)
    if run.decision.outcome != "reproduced" and steps.emits_events:
        payload = {"version": v.version, "decision": run.decision.outcome, "reason": run.decision.reason}
        payload |= {"snapshot_id": run.manifest.snapshot_id, **headline(run)}
        emit_model_event("driftloop.model.registered", name, payload, target=ctx.target)
    run.log.info(
        "registered %s v%d as %s (%s); aliases now %s; BentoML model %s",
        *(name, v.version, run.decision.outcome, run.decision.reason, run.aliases, run.bento_tag),
    )
    return run


def first_champion_approval(run: TrainingRun, version: int) -> PromotionDecision:
    """The config asks a person to approve a model's first champion: ask in the Prefect UI (outside
    Prefect nobody can answer: the version stays a candidate to promote by hand)."""
    if not in_prefect_run():
        return PromotionDecision(
            outcome="candidate",
            reason=f"{run.decision.reason}; approval.first_champion asks a person, and this run is outside "
            f"Prefect: promote it by hand (driftloop promote {version})",
        )
    from flows.steps.approval import ApprovalTimedOut, ask_for_approval

    evidence = {**headline(run), "test_rows": run.candidate.evaluation.test.rows}
    evidence["snapshot_id"] = run.manifest.snapshot_id
    question = f"make it the first champion of {run.model_name}? The gate says: {run.decision.reason}"
    answer = ask_for_approval(run.ctx, run.model_name, version, question, evidence)
    if answer.outcome == "timed-out":
        raise ApprovalTimedOut(f"{run.model_name} v{version}: {answer.reason}; promote it by hand later")
    if answer.outcome == "rejected":
        return PromotionDecision(outcome="rejected", reason=f"rejected by {answer.by}: {answer.reason}")
    return PromotionDecision(
        outcome="champion", reason=f"{run.decision.reason}; approved by {answer.by}: {answer.reason}"
    )


HEADLINE = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def headline(run: TrainingRun) -> dict[str, float]:
    """The one test metric an event or an approval form names: ROC-AUC, log loss or RMSE."""
    name = HEADLINE[run.prepared.task.kind]
    return {name: flat_metrics(run.candidate.evaluation.test)[name]}


TRAINING_STAGES = (
    ingest_tables,
    snapshot_and_prepare,
    search_and_cross_validate,
    train_and_score_held_out,
    evaluate_and_decide,
    profile_and_describe,
    register_and_apply,
)


def summarize(run: TrainingRun) -> TrainingSummary:
    evaluation = run.candidate.evaluation
    return TrainingSummary(
        model_name=run.model_name,
        version=run.version.version,
        decision=run.decision.outcome,
        reason=run.decision.reason,
        snapshot_id=run.manifest.snapshot_id,
        snapshot_rows=run.manifest.rows,
        kind=run.prepared.task.kind,
        test=evaluation.test,
        baseline=evaluation.baseline,
        champion_before=run.champion.version,
        threshold=run.trained.threshold.threshold if run.trained.threshold else None,
        threshold_rule=run.trained.threshold.rule if run.trained.threshold else None,
        baselines=run.gate.baselines,
        comparison=run.gate.comparison,
        cv_metric=run.best.metric,
        cv_auc_mean=run.cv["mean"],
        cv_auc_std=run.cv["std"],
        wandb_run=(run.tracked.url or run.tracked.path) if run.tracked else None,
        registry_entry=run.registry.version_url(run.version.version),
        store_uri=run.ctx.store.uri,
        quarantined=[q for r in run.ingested.values() for q in r.quarantined],
    )


def publish_training_artifacts(run: TrainingRun, summary: TrainingSummary) -> None:
    """The metrics table, the model card (with its plots), and links to the registry entry and W&B run."""
    if not in_prefect_run():
        return
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    candidate, champion, ctx = run.candidate, run.champion, run.ctx
    key = summary.model_name.replace("_", "-")
    rows = []
    for label, model, baseline, champ in metric_table(summary.test, summary.baseline, champion.metrics):
        row = {"metric": label, "model": round(model, 5), "baseline": round(baseline, 5)}
        if champ is not None:
            row[f"champion v{champion.version}"] = round(champ, 5)
        rows.append(row)
    create_table_artifact(
        key=f"{key}-metrics",
        table=rows,
        description=f"Test metrics of {summary.model_name} v{summary.version}",
    )
    pngs = {k: ctx.store.read_bytes(v) for k, v in candidate.plot_keys.items()}
    tracked = summary.wandb_run or "not tracked"
    where = f"Registered as **v{summary.version}** ({summary.registry_entry}); W&B run: {tracked}."
    card = model_card(run.card, inline_plots=pngs).replace("\n\n", f"\n\n{where}\n\n", 1)
    create_markdown_artifact(key=f"{key}-model-card", markdown=card, description="Model card")
    create_link_artifact(
        key=f"{key}-registry",
        link=_as_link(summary.registry_entry),
        link_text=f"registry entry v{summary.version}",
        description="Model registry entry",
    )
    if summary.wandb_run:
        create_link_artifact(
            key=f"{key}-wandb",
            link=_as_link(summary.wandb_run),
            link_text="W&B run",
            description="Weights & Biases run (offline runs: upload with `wandb sync <dir>`)",
        )


def _as_link(location: str) -> str:
    return location if "://" in location else Path(location).resolve().as_uri()


def run_training(params: TrainingParams, steps: StepRunner, settings: Settings | None = None) -> TrainingRun:
    """Every stage in order: the flow's computation, for callers that run it without the flow."""
    run = start_training_run(params, settings)
    for stage in TRAINING_STAGES:
        run = stage(run, steps)
    return run
