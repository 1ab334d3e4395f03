"""Final training over a Dask cluster: ``lightgbm.dask`` on the snapshot's parts, where they are.

Each part of the snapshot becomes one block of a Dask array: a worker reads that part from the store
and applies the fitted feature transform to it (the same ``FittedTransform`` as everywhere: no
train/serve skew), so no process ever holds the whole matrix. ``DaskLGBMClassifier`` then trains
data-parallel over the workers holding blocks. Dask's LightGBM does not early-stop (each worker
would see only its own validation blocks), so the final fit runs the best trial's early-stopped
number of rounds, and its validation AUC is measured afterwards on all validation rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

from tasks.core.context import RunContext
from tasks.data.snapshot import SnapshotManifest, load_snapshot_part
from tasks.model.train import FIXED_PARAMS, FitResult, PreparedTraining


def part_matrix(
    ctx: RunContext, manifest: SnapshotManifest, index: int, prepared: PreparedTraining, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows [lo, hi) of part ``index`` as (X, y), transformed on the worker that runs this."""
    df = load_snapshot_part(manifest, ctx.store, index).slice(lo, hi - lo)
    return prepared.transform.to_matrix(df), df[ctx.config.target.name].to_numpy().astype(np.float64)


def row_range(
    ctx: RunContext, manifest: SnapshotManifest, prepared: PreparedTraining, start: int, stop: int
) -> tuple[Any, Any]:
    """Rows [start, stop) of the snapshot as lazy Dask arrays (X, y), one block per part they touch."""
    import dask
    import dask.array as da

    offsets = manifest.part_offsets
    width = len(prepared.transform.feature_names)
    xs, ys = [], []
    for i in range(len(manifest.part_keys)):
        a, b = max(start, offsets[i]), min(stop, offsets[i + 1])
        if a >= b:
            continue
        block = dask.delayed(part_matrix, nout=2, pure=True)(
            ctx, manifest, i, prepared, a - offsets[i], b - offsets[i]
        )
        xs.append(da.from_delayed(block[0], shape=(b - a, width), dtype=np.float64))
        ys.append(da.from_delayed(block[1], shape=(b - a,), dtype=np.float64))
    return da.concatenate(xs), da.concatenate(ys)


def train_on_cluster(
    client: Any,
    params: dict[str, Any],
    rounds: int,
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    ctx: RunContext,
) -> tuple[Any, FitResult]:
    """``rounds`` boosting rounds of LightGBM over the training rows, data-parallel on the cluster.
    Returns the booster and its fit, scored on every validation row."""
    import lightgbm as lgb

    split, training = prepared.split, ctx.config.training
    X_train, y_train = row_range(ctx, manifest, prepared, 0, split.train_end)
    X_valid, y_valid = row_range(ctx, manifest, prepared, split.train_end, split.valid_end)
    X_train, y_train = client.persist([X_train, y_train])
    options = {k: v for k, v in {**params, **FIXED_PARAMS}.items() if k not in {"metric", "objective"}}
    model = lgb.DaskLGBMClassifier(
        client=client,
        n_estimators=rounds,
        random_state=training.seed,
        n_jobs=ctx.settings.dask.threads_per_worker,
        **options,
    )
    model.fit(
        X_train,
        y_train,
        feature_name=prepared.transform.feature_names,
        categorical_feature=prepared.transform.categorical_indices,
    )
    booster = model.booster_
    p = model.predict_proba(X_valid)[:, 1]
    p, y = client.compute([p, y_valid], sync=True)
    p = np.clip(p, 1e-7, 1 - 1e-7)
    result = FitResult(
        params=params,
        best_iteration=rounds,
        valid_auc=float(skm.roc_auc_score(y, p)),
        valid_logloss=float(skm.log_loss(y, p, labels=[0, 1])),
        history={},  # no per-round curve: the search trials' curves are in W&B
    )
    return booster, result
