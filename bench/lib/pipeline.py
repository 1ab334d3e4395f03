"""The training pipeline without Prefect: each step's ``.fn`` in the flow's order, with the same
parallelism (a 2-thread pool where the flow maps tasks). The baseline of the orchestration benchmark,
and a quick way for the serving benchmarks to get a registered model without a Prefect server."""

from __future__ import annotations

import time

from tasks.core.settings import Settings


def run_bare(settings: Settings, params) -> float:
    """The flow's computation, step by step, with no Prefect in the loop."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from flows.steps import model as model_steps
    from flows.steps.data import build_dataset_snapshot, discover_table_batches, validate_table_batches
    from flows.steps.engine import parallel_steps, threads_per_step
    from flows.steps.monitoring import profile_reference
    from flows.steps.registry import apply_promotion_decision, register_model_version, save_version_to_bentoml
    from flows.training import resolve_config
    from tasks.core.context import RunContext
    from tasks.decisions import decide_promotion
    from tasks.model.held_out import held_out_ranges
    from tasks.model.tune import best_trial, run_search
    from tasks.registry.versions import NewVersion, Registry, VersionDecision

    t0 = time.perf_counter()
    base = RunContext.build(settings)
    ctx = base.with_config(resolve_config(params, base))
    config = ctx.config
    pool = ThreadPoolExecutor(max_workers=2)  # the same parallelism as the flow's task runner

    def ingest(t: str) -> list[str]:
        cfg = config.tables[t]
        refs = discover_table_batches.fn(t, cfg, ctx)
        return validate_table_batches.fn(t, refs, cfg, ctx, False, settings.on_invalid).valid_keys

    sources = dict(zip(config.tables, pool.map(ingest, config.tables)))
    manifest = build_dataset_snapshot.fn(sources, ctx)
    prepared = model_steps.fit_transform_on_train.fn(manifest, ctx)
    threads = threads_per_step(settings)
    trials = run_search(
        config.training,
        parallel_steps(settings),
        lambda specs: list(
            pool.map(lambda spec: model_steps.run_trial.fn(spec, manifest, prepared, ctx, threads), specs)
        ),
    )
    best = best_trial(trials)
    folds = list(
        pool.map(
            lambda f: model_steps.cross_validate_fold.fn(f, best.params, manifest, prepared, ctx, threads),
            range(config.split.cv_folds),
        )
    )
    pool.shutdown()
    trained = model_steps.train_final_model.fn(best, manifest, prepared, ctx)
    champion_version = Registry(ctx.store, config.model_name).alias_doc().aliases.get("champion")
    with ThreadPoolExecutor(max_workers=2) as pool:
        parts = list(
            pool.map(
                lambda rows: model_steps.score_held_out_part.fn(
                    rows, trained, manifest, prepared, config.model_name, champion_version, ctx
                ),
                held_out_ranges(manifest, prepared.split.train_end),
            )
        )
    candidate = model_steps.evaluate_candidate_on_test.fn(trained, parts, prepared, ctx)
    champion = model_steps.evaluate_champion_on_test.fn(champion_version, parts, ctx)
    decision = decide_promotion(candidate.evaluation.test, champion, settings.gate)
    reference_keys = profile_reference.fn(trained, manifest, prepared, parts, ctx)
    model_steps.track_training.fn(
        ctx,
        name="bare",
        group="bench-bare",
        config={"model_name": config.model_name, "snapshot_id": manifest.snapshot_id, "params": best.params},
        model_key=trained.model_key,
        transform_json=prepared.transform.to_json(),
        history=trained.fit.history,
        summary={"cv": float(np.mean(folds)) if folds else float("nan")},
        plot_keys=candidate.plot_keys,
        trials=[t.model_dump() for t in trials],
        slices=[s.model_dump() for s in candidate.evaluation.slices],
    )
    files = model_steps.stage_candidate_files.fn(trained, prepared, candidate, reference_keys, {}, ctx)
    record = NewVersion(
        snapshot_id=manifest.snapshot_id,
        git_commit="bench",
        params=best.params,
        metrics={},
        test_window=candidate.evaluation.test_window,
        feature_names=prepared.transform.feature_names,
        input_columns=prepared.transform.spec.input_columns,
    )
    mv = register_model_version.fn(
        config.model_name, files, record, VersionDecision(**decision.model_dump()), ctx
    )
    if decision.outcome == "champion":
        apply_promotion_decision.fn(config.model_name, mv.version, decision.outcome, decision.reason, ctx)
    save_version_to_bentoml.fn(config.model_name, mv.version, ctx)
    return time.perf_counter() - t0
