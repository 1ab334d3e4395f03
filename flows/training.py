"""The training flow: raw tables to a registered, tracked, profiled model.

Reads top to bottom as the story of one training run:

1. ingest each table (discover batches, validate the new ones, quarantine failures);
2. build the dataset snapshot (content-derived id; reused when inputs are unchanged);
3. split (by time; without a time column, stratified by the target) and fit the feature transform
   on the training rows;
4. search hyperparameters (trials mapped in parallel), then cross-validate the best (expanding
   windows over time, or stratified k-fold);
5. train the candidate; score the held-out rows part by part (mapped); evaluate it against a baseline
   and the current champion;
6. profile its inputs and predictions (the drift reference), track everything in W&B;
7. register the version, apply the promotion gate's decision, save it to the BentoML store.

Run it: ``python flows/training.py --n_trials 6`` or ``prefect deployment run 'training/local'``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import ValidationError

from flows.schemas import TrainingParams, TrainingSummary
from flows.steps.data import (
    build_dataset_snapshot,
    discover_table_batches,
    extend_snapshot_with_feedback,
    validate_table_batches,
)
from flows.steps.engine import EngineTaskRunner, parallel_steps, threads_per_step
from flows.steps.events import emit_model_event
from flows.steps.model import (
    cross_validate_fold,
    evaluate_candidate_on_test,
    evaluate_champion_on_test,
    fit_transform_on_train,
    run_trial,
    score_held_out_part,
    stage_candidate_files,
    track_training,
    train_final_model,
)
from flows.steps.monitoring import profile_reference
from flows.steps.registry import apply_promotion_decision, register_model_version, save_version_to_bentoml
from flows.steps.runtime import FLOW_GUARDS, in_prefect_run, model_context, publish, run_context, run_name
from tasks.core.config import ConfigError, DatasetConfig
from tasks.core.context import RunContext
from tasks.core.settings import Settings
from tasks.data.ingest import IngestedTable
from tasks.decisions import decide_promotion
from tasks.model.evaluate import metric_table, model_card
from tasks.model.held_out import held_out_ranges
from tasks.model.tune import best_trial, run_search
from tasks.registry.versions import NewVersion, Registry, VersionDecision, git_commit


def resolve_config(params: TrainingParams, ctx: RunContext) -> DatasetConfig:
    """The dataset config with this run's overrides applied (to the registry's copy too), validated
    like the file itself."""
    updates: dict = {}
    if params.model_name:
        updates["model_name"] = params.model_name
    if params.window_start:
        updates.setdefault("window", {})["start"] = params.window_start
    if params.window_end:
        updates.setdefault("window", {})["end"] = params.window_end
    if params.n_trials is not None:
        updates.setdefault("training", {})["n_trials"] = params.n_trials
    if params.seed is not None:
        updates.setdefault("training", {})["seed"] = params.seed
    if params.cv_folds is not None:
        updates.setdefault("split", {})["cv_folds"] = params.cv_folds
    try:
        return ctx.config.with_updates(updates) if updates else ctx.config
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<top>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"{ctx.config.origin} with this run's parameters is not valid: {problems}"
        ) from None


def training_context(params: TrainingParams) -> RunContext:
    """The run context with this run's settings overrides, on the config with this run's overrides.

    Which config: ``dataset_config`` if given; else, for a registered ``model_name`` other than the
    settings' config's (or any, with ``config_from_registry``), the config that model was registered
    with; else the settings' file (a new model name trains a new model from it)."""
    settings = Settings()
    updates: dict = {}
    if params.dataset_config:
        updates["dataset_config"] = Path(params.dataset_config)
    if params.on_invalid:
        updates["on_invalid"] = params.on_invalid
    if params.min_auc_gain is not None:
        updates["gate"] = settings.gate.model_copy(update={"min_auc_gain": params.min_auc_gain})
    ctx = run_context(settings.model_copy(update=updates) if updates else settings)
    if not params.dataset_config and params.model_name:
        registered = Registry(ctx.store, params.model_name).versions()
        if params.config_from_registry or (registered and params.model_name != ctx.config.model_name):
            ctx = model_context(ctx, params.model_name)
    ctx = ctx.with_config(resolve_config(params, ctx))
    _check_same_dataset(ctx)
    return ctx


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


def _progress(artifact_id: str | None, value: float) -> None:
    if artifact_id:
        update_progress_artifact(artifact_id, progress=value)


@flow(
    name="training",
    **FLOW_GUARDS,
    flow_run_name=run_name("training"),
    log_prints=True,
    persist_result=True,
    task_runner=EngineTaskRunner(),
)
def training(params: TrainingParams = TrainingParams()) -> TrainingSummary:
    """Train, evaluate, register and (maybe) promote a model from the configured sources."""
    logger = get_run_logger()
    ctx = training_context(params)
    config, settings = ctx.config, ctx.settings
    model_name = config.model_name
    progress = publish(
        create_progress_artifact, progress=0.0, key="training-progress", description=f"training {model_name}"
    )

    # 1. ingest: discover every table's batches, then validate the new ones (tables in parallel)
    refs = {t: discover_table_batches.submit(t, cfg, ctx) for t, cfg in config.tables.items()}
    ingested: dict[str, IngestedTable] = {
        t: validate_table_batches.submit(t, refs[t], cfg, ctx, params.rebuild, settings.on_invalid)
        for t, cfg in config.tables.items()
    }
    ingested = {t: f.result() for t, f in ingested.items()}
    for t, r in ingested.items():
        logger.info(
            "table %s: %d rows in %d valid batches (%d new, %d reused, %d quarantined)",
            t,
            r.rows,
            len(r.valid_keys),
            r.new_batches,
            r.reused_batches,
            len(r.quarantined),
        )
    _progress(progress, 15)

    # 2. snapshot, 3. split + transform
    manifest = build_dataset_snapshot({t: r.valid_keys for t, r in ingested.items()}, ctx)
    logger.info(
        "snapshot %s: %d rows, %s .. %s, positive rate %.3f",
        manifest.snapshot_id,
        manifest.rows,
        manifest.time_min,
        manifest.time_max,
        manifest.positive_rate,
    )
    if params.include_feedback:
        manifest = extend_snapshot_with_feedback(manifest, ctx)
        logger.info(
            "with labelled predictions: snapshot %s, %d rows up to %s",
            manifest.snapshot_id,
            manifest.rows,
            manifest.time_max,
        )
    prepared = fit_transform_on_train(manifest, ctx)
    _progress(progress, 25)

    # 4. search: Optuna asks trials in batches as wide as the engine runs at once (trials are mapped
    # tasks: threads here, or Dask workers), hopeless ones are pruned; best by validation AUC; CV of it
    shared = [unmapped(x) for x in (manifest, prepared, ctx, threads_per_step(settings))]
    trials = run_search(
        config.training, parallel_steps(settings), lambda specs: run_trial.map(specs, *shared).result()
    )
    best = best_trial(trials)
    logger.info(
        "search: %d trials (%d pruned), best validation AUC %.4f (%s)",
        len(trials),
        sum(t.pruned for t in trials),
        best.valid_auc,
        best.params,
    )
    _progress(progress, 55)
    folds = list(range(config.split.cv_folds))
    fold_aucs = cross_validate_fold.map(folds, unmapped(best.params), *shared).result() if folds else []
    cv = {
        "mean": float(np.mean(fold_aucs)) if fold_aucs else float("nan"),
        "std": float(np.std(fold_aucs)) if fold_aucs else float("nan"),
        "folds": float(len(fold_aucs)),
    }
    _progress(progress, 70)

    # 5. candidate; the held-out rows scored part by part on the engine (candidate and champion on the
    # test rows, the drift reference's sample profiled); evaluation, champion on the same window, gate
    trained = train_final_model(best, manifest, prepared, ctx)
    champion_version = Registry(ctx.store, model_name).alias_doc().aliases.get("champion")
    parts = score_held_out_part.map(
        held_out_ranges(manifest, prepared.split.train_end),
        *[unmapped(x) for x in (trained, manifest, prepared, model_name, champion_version, ctx)],
    ).result()
    candidate = evaluate_candidate_on_test(trained, parts, prepared, ctx)
    champion = evaluate_champion_on_test(champion_version, parts, ctx)
    decision = decide_promotion(candidate.evaluation.test, champion, settings.gate)
    _progress(progress, 80)

    # 6. reference profile (the parts' profiles merged, calibrated) and experiment tracking
    reference_keys = profile_reference(trained, manifest, prepared, parts, ctx)
    test = candidate.evaluation.test
    run_config = {
        "model_name": model_name,
        "snapshot_id": manifest.snapshot_id,
        "git_commit": git_commit(settings.git_commit),
        "params": best.params,
        "best_iteration": trained.fit.best_iteration,
        "dataset": config.name,
        "window": config.window.model_dump(mode="json"),
        "n_trials": len(trials),
    }
    tracked = track_training(
        ctx,
        name=f"{model_name}-{manifest.snapshot_id}",
        group=f"{model_name}-{manifest.snapshot_id}-seed{config.training.seed}",
        config=run_config,
        model_key=trained.model_key,
        transform_json=prepared.transform.to_json(),
        history=trained.fit.history,
        summary={
            **{f"test/{k}": v for k, v in test.model_dump().items()},
            **{f"baseline/{k}": v for k, v in candidate.evaluation.baseline.model_dump().items()},
            "cv/auc_mean": cv["mean"],
            "cv/auc_std": cv["std"],
        },
        plot_keys=candidate.plot_keys,
        trials=[t.model_dump() for t in trials],
        slices=[s.model_dump() for s in candidate.evaluation.slices],
    )
    _progress(progress, 88)

    # 7. register, apply the decision, make it buildable as a bento
    files = stage_candidate_files(
        trained,
        prepared,
        candidate,
        reference_keys,
        {
            "candidate": candidate.evaluation.model_dump(mode="json"),
            "cv": cv,
            "champion": champion.model_dump(mode="json"),
            "decision": decision.model_dump(),
        },
        ctx,
    )
    record = NewVersion(
        snapshot_id=manifest.snapshot_id,
        wandb_run=tracked.path if tracked else None,
        git_commit=run_config["git_commit"],
        params=best.params,
        metrics={
            **{k: v for k, v in test.model_dump().items() if isinstance(v, float)},
            "test_rows": float(test.rows),  # with positive_rate: the held-out AUC's uncertainty
            "cv_auc_mean": cv["mean"],
            "cv_auc_std": cv["std"],
        },
        test_window=candidate.evaluation.test_window,
        feature_names=prepared.transform.feature_names,
        input_columns=prepared.transform.spec.input_columns,
    )
    if params.register_as == "candidate":  # the caller (e.g. retraining) decides what the new version becomes
        decision = decision.model_copy(
            update={
                "outcome": "candidate",
                "reason": f"registered without an alias; the promotion gate would say: {decision.reason}",
            }
        )
    registry = Registry(ctx.store, model_name)
    known = set(registry.versions())
    version = register_model_version(model_name, files, record, VersionDecision(**decision.model_dump()), ctx)
    if version.version in known and registry.decision_applied(version):
        # this run reproduced (from cache) a version registered before, and its gate was applied then
        decision = decision.model_copy(
            update={
                "outcome": "reproduced",
                "reason": (
                    f"v{version.version} was registered before from the same data, code and settings "
                    f"({version.decision.outcome if version.decision else 'no decision recorded'}); "
                    "nothing changes"
                ),
            }
        )
        aliases = registry.alias_doc().aliases
    elif decision.outcome == "champion":
        aliases = apply_promotion_decision(
            model_name, version.version, decision.outcome, decision.reason, ctx
        )
    else:  # rejected, or a candidate for the caller: registered with no alias, never served
        aliases = registry.alias_doc().aliases
    bento_tag = save_version_to_bentoml(model_name, version.version, ctx)
    if decision.outcome != "reproduced":
        emit_model_event(
            "driftloop.model.registered",
            model_name,
            {
                "version": version.version,
                "decision": decision.outcome,
                "reason": decision.reason,
                "snapshot_id": manifest.snapshot_id,
                "roc_auc": test.roc_auc,
            },
            target=ctx.target,
        )
    logger.info(
        "registered %s v%d as %s (%s); aliases now %s; BentoML model %s",
        model_name,
        version.version,
        decision.outcome,
        decision.reason,
        aliases,
        bento_tag,
    )

    summary = TrainingSummary(
        model_name=model_name,
        version=version.version,
        decision=decision.outcome,
        reason=decision.reason,
        snapshot_id=manifest.snapshot_id,
        snapshot_rows=manifest.rows,
        test=test,
        baseline=candidate.evaluation.baseline,
        champion_before=champion.version,
        cv_auc_mean=cv["mean"],
        cv_auc_std=cv["std"],
        wandb_run=tracked.url or tracked.path if tracked else None,
        registry_entry=registry.version_url(version.version),
        store_uri=ctx.store.uri,
        quarantined=[q for r in ingested.values() for q in r.quarantined],
    )
    _publish_artifacts(summary, candidate, champion, trained, ctx, cv)
    _progress(progress, 100)
    return summary


def _publish_artifacts(summary, candidate, champion, trained, ctx, cv) -> None:
    if not in_prefect_run():
        return
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
    card = model_card(
        model_name=summary.model_name,
        version=summary.version,
        decision=summary.decision,
        reason=summary.reason,
        evaluation=candidate.evaluation,
        champion=champion.metrics,
        snapshot_id=summary.snapshot_id,
        params=trained.fit.params,
        cv=cv,
        wandb_url=summary.wandb_run,
        pngs=pngs,
    )
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


if __name__ == "__main__":
    from pydantic_settings import CliApp

    from deployments.console import print_training_summary

    cli_params = CliApp.run(TrainingParams)
    print_training_summary(training(cli_params))
