"""Test metrics of a class or number target, with bootstrap intervals, and the paired loss comparison
the promotion gate reads for them.

Yes/no models keep their own metrics and DeLong's interval (``tasks.model.evaluate``). For classes
(macro ROC-AUC one-vs-rest, log loss, accuracy, each class's recall) and numbers (RMSE, MAE, R^2 and the
objective's own mean loss) each value comes with a 95% percentile bootstrap interval over the test rows
(scikit-learn computes every metric; the resampling is ours). The gate compares two models on the same
rows through their per-row losses (``LearningTask.row_loss``): the relative reduction of the mean loss,
``1 - mean(loss_new) / mean(loss_old)``, resampled pairwise, so the margin reads the same (a share of the
loss) whatever the target's scale.

Rows are resampled independently: with a time column, neighbouring rows share conditions and the
intervals are somewhat narrower than the truth.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel
from sklearn import metrics as skm

from tasks.core.target import Kind, LearningTask

METRIC_RESAMPLES = 200  # per metric shown: enough for a 95% interval's ends to two digits
GAIN_RESAMPLES = 2000  # the gate's interval: a tail quantile needs more
MAX_RESAMPLED_CELLS = 4_000_000  # rows x resamples drawn at once (memory), for the gain's resampling


class MetricValue(BaseModel):
    value: float
    low: float
    high: float


class KindMetrics(BaseModel):
    """A model's (or a baseline's) metrics on the test rows, each with its 95% bootstrap interval."""

    kind: Kind
    rows: int
    metrics: dict[str, MetricValue]

    def value(self, name: str) -> float:
        return self.metrics[name].value


def metric_values(task: LearningTask, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The kind's metrics of predictions ``pred`` (rows x classes of probabilities, or numbers)."""
    y = np.asarray(y, dtype=np.float64)
    loss = float(np.mean(task.row_loss(y, pred)))
    if task.kind == "regression":
        return {
            "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
            "mae": float(np.mean(np.abs(y - pred))),
            "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else float("nan"),
            "mean_loss": loss,
        }
    labels = list(range(len(task.classes)))
    codes = y.astype(int)
    chosen = np.argmax(pred, axis=1)
    present = np.unique(codes)
    out = {
        "macro_roc_auc": (
            float(skm.roc_auc_score(codes, pred[:, present] / pred[:, present].sum(axis=1, keepdims=True),
                                    multi_class="ovr", average="macro", labels=present))
            if len(present) > 2 else float("nan")
        ),
        "log_loss": loss,
        "accuracy": float(np.mean(chosen == codes)),
    }  # fmt: skip
    recall = skm.recall_score(codes, chosen, labels=labels, average=None, zero_division=np.nan)
    out |= {f"recall[{c}]": float(r) for c, r in zip(task.classes, recall)}
    return out


def kind_metrics(task: LearningTask, y: np.ndarray, pred: np.ndarray, seed: int = 0) -> KindMetrics:
    """The metrics with 95% percentile intervals over ``METRIC_RESAMPLES`` row resamples (seeded)."""
    point = metric_values(task, y, pred)
    rng = np.random.default_rng(seed)
    n = len(y)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(METRIC_RESAMPLES if n > 1 else 0):
        rows = rng.integers(0, n, n)
        for k, v in metric_values(task, y[rows], pred[rows]).items():
            draws[k].append(v)
    metrics = {}
    for k, v in point.items():
        finite = np.asarray([d for d in draws[k] if np.isfinite(d)])
        low, high = np.quantile(finite, [0.025, 0.975]) if len(finite) else (np.nan, np.nan)
        metrics[k] = MetricValue(value=v, low=float(low), high=float(high))
    return KindMetrics(kind=task.kind, rows=n, metrics=metrics)


class LossGain(BaseModel):
    """The relative reduction of the mean loss from ``old`` to ``new`` on the same rows, with the
    bootstrap's one-sided bounds at ``alpha``."""

    rows: int
    loss_new: float
    loss_old: float
    gain: float  # 1 - loss_new / loss_old: positive when the new model's loss is lower
    low: float
    high: float


def paired_loss_gain(
    task: LearningTask, y: np.ndarray, new: np.ndarray, old: np.ndarray, alpha: float, seed: int = 0
) -> LossGain | None:
    """The relative loss reduction of ``new`` over ``old`` with one-sided bounds from ``GAIN_RESAMPLES``
    paired row resamples (both models' losses on the same resampled rows); None with fewer than two
    rows or a zero loss (nothing to compare)."""
    a, b = task.row_loss(y, new), task.row_loss(y, old)
    n = len(a)
    if n < 2 or float(np.mean(b)) <= 0:
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_RESAMPLED_CELLS // n)
    gains = []
    for start in range(0, GAIN_RESAMPLES, chunk):
        rows = rng.integers(0, n, (min(chunk, GAIN_RESAMPLES - start), n))
        gains.append(1.0 - a[rows].mean(axis=1) / np.maximum(b[rows].mean(axis=1), 1e-300))
    resampled = np.concatenate(gains)
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    return LossGain(
        rows=n,
        loss_new=float(np.mean(a)),
        loss_old=float(np.mean(b)),
        gain=float(1.0 - np.mean(a) / np.mean(b)),
        low=float(low),
        high=float(high),
    )
