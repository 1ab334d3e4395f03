"""The training pipeline without Prefect: each task's ``.fn`` in the flow's order, with the same
parallelism (a 2-thread pool where the flow maps tasks). The baseline of the orchestration benchmark,
and a quick way for the serving benchmarks to get a registered model without a Prefect server."""

from __future__ import annotations

import time

from tasks.core.settings import Settings


def run_bare(settings: Settings, params) -> float:
    """The flow's computation, task by task, with no Prefect in the loop."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from flows.training import resolve_config
    from tasks.core.store import open_store
    from tasks.data.ingest import discover_table_batches, validate_table_batches
    from tasks.data.snapshot import build_dataset_snapshot
    from tasks.decisions import decide_promotion
    from tasks.model.evaluate import evaluate_candidate, evaluate_champion
    from tasks.model.tracking import track_training
    from tasks.model.train import (
        cross_validate_fold,
        fit_transform_on_train,
        run_trial,
        sample_trial_params,
        threads_per_fit,
        train_final_model,
    )
    from tasks.monitoring.profile import profile_reference
    from tasks.registry.versions import (
        apply_promotion_decision,
        register_model_version,
        save_version_to_bentoml,
    )

    t0 = time.perf_counter()
    config = resolve_config(params, settings)
    pool = ThreadPoolExecutor(max_workers=2)  # the same parallelism as the flow's task runner

    def ingest(t: str) -> list[str]:
        cfg = config.tables[t]
        refs = discover_table_batches.fn(t, cfg, settings)
        return validate_table_batches.fn(t, refs, cfg, settings, False, settings.on_invalid).valid_keys

    sources = dict(zip(config.tables, pool.map(ingest, config.tables)))
    manifest = build_dataset_snapshot.fn(sources, config, settings)
    prepared = fit_transform_on_train.fn(manifest, config, settings)
    threads = threads_per_fit(2)
    trial_params = sample_trial_params(config.training, config.training.n_trials, config.training.seed)
    trials = list(
        pool.map(
            lambda ip: run_trial.fn(ip[0], ip[1], manifest, prepared, config, settings, threads),
            enumerate(trial_params),
        )
    )
    best = max(trials, key=lambda r: r.valid_auc)
    folds = list(
        pool.map(
            lambda f: cross_validate_fold.fn(f, best.params, manifest, prepared, config, settings, threads),
            range(config.split.cv_folds),
        )
    )
    pool.shutdown()
    trained = train_final_model.fn(best.params, manifest, prepared, config, settings)
    candidate = evaluate_candidate.fn(trained, manifest, prepared, config, settings)
    champion = evaluate_champion.fn(config.model_name, manifest, prepared, config, settings)
    decision = decide_promotion.fn(candidate.evaluation.test, champion, settings.gate)
    profile_key = profile_reference.fn(trained, manifest, prepared, config, settings)
    track_training.fn(
        settings,
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
    store = open_store(settings)
    prefix = trained.model_key.rsplit("/", 1)[0]
    store.write_bytes(f"{prefix}/transform.json", prepared.transform.to_json().encode())
    files = {
        "model.txt": trained.model_key,
        "transform.json": f"{prefix}/transform.json",
        "reference_profile.bin": profile_key,
    }
    record = {
        "snapshot_id": manifest.snapshot_id,
        "git_commit": "bench",
        "params": best.params,
        "metrics": {},
        "test_window": candidate.evaluation.test_window,
        "feature_names": prepared.transform.feature_names,
        "input_columns": prepared.transform.spec.input_columns,
    }
    mv = register_model_version.fn(config.model_name, files, record, settings)
    apply_promotion_decision.fn(config.model_name, mv.version, decision.outcome, decision.reason, settings)
    save_version_to_bentoml.fn(config.model_name, mv.version, settings)
    return time.perf_counter() - t0
