"""Final training over a Dask cluster: ``lightgbm.dask`` on the snapshot's parts, where they are.

Each part of the snapshot becomes one block of a Dask array: a worker reads that part from the store
and applies the fitted feature transform to it (the same ``FittedTransform`` as everywhere: no
train/serve skew), so no process ever holds the whole matrix. ``DaskLGBMClassifier`` then trains
data-parallel over the workers holding blocks. Dask's LightGBM does not early-stop (each worker
would see only its own validation blocks), so the final fit runs the best trial's early-stopped
number of rounds, and its validation AUC is measured afterwards on all validation rows.

Where each part lives decides the model: data-parallel LightGBM finds bins from each worker's rows
and concatenates a worker's parts in the order it gets them, and the scheduler's own placement
changes from run to run (the same data gave validation AUCs 0.626, 0.628, 0.638). So parts are
placed by hand, round-robin over the workers sorted by address (part i on worker i mod n). A
worker concatenates its parts, and LightGBM ranks the workers, in the order in which
``Client.who_has`` lists the parts: the order of a Python set (a random one per process), and the
rank decides which worker's rows bin which features. ``PartOrderClient`` lists them in part order.
The same data on the same number of workers trains the same model (``tests/integration/
test_dask_engine.py`` checks).

Blocks are float32 (LightGBM bins features anyway; half the bytes of float64 on every worker). A
worker lost in the middle (out of memory: Dask's nanny restarts it) would leave LightGBM's tasks,
which are pinned to the workers they started on, waiting forever: a watchdog fails the fit instead,
with a message saying what happened and what to change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import metrics as skm

from tasks.core.context import RunContext
from tasks.core.errors import BadInput
from tasks.data.snapshot import SnapshotManifest, load_rows
from tasks.model.train import FIXED_PARAMS, FitResult, PreparedTraining


def part_matrix(
    ctx: RunContext, manifest: SnapshotManifest, prepared: PreparedTraining, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows [lo, hi) of the snapshot (within one part) as (X, y), transformed on the worker that runs
    this."""
    df = load_rows(manifest, ctx.store, lo, hi)
    X = prepared.transform.to_matrix(df).astype(np.float32)
    return X, df[ctx.config.target.name].to_numpy().astype(np.float32)


def row_range(
    client: Any,
    workers: list[str],
    ctx: RunContext,
    manifest: SnapshotManifest,
    prepared: PreparedTraining,
    start: int,
    stop: int,
) -> tuple[Any, Any]:
    """Rows [start, stop) of the snapshot as Dask arrays (X, y), one block per part they touch, the
    i-th read and transformed on ``workers[i % len(workers)]`` and kept there (see the module's note).
    Blocks stay one part each: a worker's share as one block was copied whole when Dask spilled it,
    and a 30x fit lost a worker to its memory limit."""
    import operator

    import dask.array as da

    offsets = manifest.part_offsets
    width = len(prepared.transform.feature_names)
    xs, ys = [], []
    for i in range(len(manifest.part_keys)):
        a, b = max(start, offsets[i]), min(stop, offsets[i + 1])
        if a >= b:
            continue
        on = {"workers": [workers[len(xs) % len(workers)]], "allow_other_workers": False, "pure": True}
        block = client.submit(part_matrix, ctx, manifest, prepared, a, b, **on)
        xs.append(
            da.from_delayed(client.submit(operator.itemgetter(0), block, **on), (b - a, width), np.float32)
        )
        ys.append(da.from_delayed(client.submit(operator.itemgetter(1), block, **on), (b - a,), np.float32))
    return da.concatenate(xs), da.concatenate(ys)


class PartOrderClient:
    """A Dask client whose ``who_has`` lists the futures it is asked about in the order given, so
    ``lightgbm.dask`` ranks the workers in block order (see the module's note); all else is the
    client's own."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def who_has(self, futures: Any = None, **kwargs: Any) -> dict:
        found = self._client.who_has(futures, **kwargs)
        if futures is None:
            return found
        order = [f.key for f in self._client.futures_of(futures)]
        return {key: found[key] for key in dict.fromkeys(order) if key in found}


def _scores(block: np.ndarray, booster: Any) -> np.ndarray:
    return booster.predict(block)


def _workers(client: Any) -> set[str]:
    """The workers' addresses, asked of the scheduler now. (Not ``scheduler_info()``: it returns a
    cached copy the client's own periodic refresh overwrites with an empty worker list, which a
    thread reading it at the wrong moment took for every worker gone.)"""
    return set(client.nthreads())


class WorkerLost(RuntimeError):
    """A Dask worker left the cluster in the middle of distributed training."""


def unless_a_worker_is_lost(
    client: Any, memory_limit: str, work: Callable[[], Any], poll: float = 1.0
) -> Any:
    """``work()`` run in a helper thread while this one watches the cluster: if a worker present at the
    start leaves (out of memory, killed), raise ``WorkerLost`` here. The helper, blocked on tasks pinned
    to the lost worker, is abandoned (a daemon thread: it ends with the process)."""
    before = _workers(client)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with client.as_current():  # lightgbm.dask waits on the default client: this one, here
                outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the watching thread
            outcome["error"] = exc

    helper = threading.Thread(target=run, name="distributed-fit", daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(poll)
        lost = before - _workers(client)
        if lost and helper.is_alive():
            raise WorkerLost(
                f"Dask worker(s) {sorted(lost)} left the cluster during distributed training (most often: "
                f"out of memory, over memory_limit={memory_limit}); LightGBM cannot finish without them. "
                "Give workers more memory (DRIFTLOOP_DASK__MEMORY_LIMIT) or add workers "
                "(DRIFTLOOP_DASK__N_WORKERS); the step is retried"
            )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


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
    if prepared.task.kind != "binary":
        raise BadInput(
            f"the dask engine's final fit trains yes/no targets only; this target is {prepared.task.kind}: "
            "train it with DRIFTLOOP_ENGINE=local (one machine), which handles every kind"
        )
    options = {k: v for k, v in {**params, **FIXED_PARAMS}.items() if k not in {"metric", "objective"}}
    model = lgb.DaskLGBMClassifier(
        client=PartOrderClient(client),
        n_estimators=rounds,
        random_state=training.seed,  # threads: each worker's own (lightgbm.dask ignores n_jobs)
        **options,
    )

    def fit_and_score() -> tuple[Any, np.ndarray, np.ndarray]:
        workers = sorted(_workers(client))
        X_train, y_train = row_range(client, workers, ctx, manifest, prepared, 0, split.train_end)
        X_valid, y_valid = row_range(
            client, workers, ctx, manifest, prepared, split.train_end, split.valid_end
        )
        model.fit(
            X_train,
            y_train,
            feature_name=prepared.transform.feature_names,
            categorical_feature=prepared.transform.categorical_indices,
        )
        booster = model.booster_  # scored block by block with the Booster (what the registry saves)
        scores = X_valid.map_blocks(_scores, booster, drop_axis=1, meta=np.array((), dtype=np.float64))
        p, y = client.compute([scores, y_valid], sync=True)
        return booster, p, y

    booster, p, y = unless_a_worker_is_lost(client, ctx.settings.dask.memory_limit, fit_and_score)
    p = np.clip(p, 1e-7, 1 - 1e-7)
    result = FitResult(
        params=params,
        best_iteration=rounds,
        valid_score=float(skm.roc_auc_score(y, p)),
        valid_loss=float(skm.log_loss(y, p, labels=[0, 1])),
        history={},  # no per-round curve: the search trials' curves are in W&B
    )
    return booster, result
