"""Simple baselines trained in the same run as the candidate, on the same rows, so the first model of a
name has to show it is worth its complexity: a constant (the majority class: ROC-AUC 0.5, "no better
than chance"; the class shares; the training mean) and a regularised linear model on the same fitted
feature matrix (logistic regression for yes/no, multinomial for classes, ridge for a number).

The linear model is fitted with scikit-learn on the training rows (evenly spaced, at most
``max_rows``), its regularisation chosen on the validation rows; what it learned is kept as plain
numbers (``LinearBaseline``), so it travels to every held-out part (a thread or a Dask worker) as a
small JSON-able record and scores there with one matrix product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from tasks.core.target import Kind, LearningTask

if TYPE_CHECKING:
    from tasks.core.config import DatasetConfig
    from tasks.core.store import ArtifactStore
    from tasks.data.snapshot import SnapshotManifest
    from tasks.model.train import PreparedTraining

BASELINE_CS = (0.01, 0.1, 1.0)  # inverse L2 strengths tried; the best on validation is kept
MAX_LEVELS = 50  # most frequent levels of a categorical column one-hot encoded; the rest share none


class LinearBaseline(BaseModel):
    """A fitted linear model over the transform's matrix: numeric columns standardised (missing values
    at the training mean, plus a missing indicator), categorical codes one-hot encoded. ``coef`` and
    ``intercept`` hold one row / value per class for classes."""

    numeric: list[int]  # column indices in the feature matrix
    means: list[float]
    scales: list[float]
    missing: list[int]  # numeric columns (indices into ``numeric``) that had missing values
    categorical: list[int]
    levels: list[list[float]]  # per categorical column, the codes that get their own coefficient
    coef: list[float] | list[list[float]]
    intercept: float | list[float]
    c: float  # the chosen inverse regularisation strength
    kind: Kind = "binary"
    valid_score: float  # validation ROC-AUC (yes/no, higher is better), else mean loss (lower is better)

    def design(self, X: np.ndarray) -> np.ndarray:
        """The regression's inputs from the transform's matrix."""
        num = X[:, self.numeric]
        nan = np.isnan(num)
        z = (np.where(nan, np.asarray(self.means), num) - np.asarray(self.means)) / np.asarray(self.scales)
        blocks = [z, nan[:, self.missing].astype(np.float64)]
        for col, levels in zip(self.categorical, self.levels):
            blocks.append((X[:, [col]] == np.asarray(levels)[None, :]).astype(np.float64))
        return np.hstack(blocks) if blocks else np.zeros((len(X), 0))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Yes/no: the probability of yes; classes: each class's probability (rows x classes); a number:
        the prediction."""
        D = self.design(X)
        if self.kind == "multiclass":
            z = D @ np.asarray(self.coef).T + np.asarray(self.intercept)
            z = np.exp(z - z.max(axis=1, keepdims=True))
            return z / z.sum(axis=1, keepdims=True)
        out = D @ np.asarray(self.coef) + float(self.intercept)  # type: ignore[arg-type]
        return out if self.kind == "regression" else 1.0 / (1.0 + np.exp(-np.clip(out, -35, 35)))


def fit_linear_baseline(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    categorical: list[int],
    task: LearningTask | None = None,
) -> LinearBaseline:
    """Fit the linear model for each strength in ``BASELINE_CS`` and keep the best on validation
    (ROC-AUC for yes/no, the objective's mean loss otherwise)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import roc_auc_score

    task = task or LearningTask()

    numeric = [i for i in range(X_train.shape[1]) if i not in set(categorical)]
    num = X_train[:, numeric]
    means = np.nan_to_num(np.nanmean(num, axis=0)) if len(num) else np.zeros(len(numeric))
    filled = np.where(np.isnan(num), means, num)
    scales = filled.std(axis=0)
    scales = np.where(scales > 0, scales, 1.0)
    missing = [j for j in range(len(numeric)) if np.isnan(num[:, j]).any()]
    levels = []
    for col in categorical:
        codes, counts = np.unique(X_train[:, col][~np.isnan(X_train[:, col])], return_counts=True)
        levels.append(sorted(codes[np.argsort(-counts)][:MAX_LEVELS].tolist()))
    shell = LinearBaseline(
        numeric=numeric,
        means=means.tolist(),
        scales=scales.tolist(),
        missing=missing,
        categorical=list(categorical),
        levels=levels,
        coef=[],
        intercept=0.0,
        c=0.0,
        kind=task.kind,
        valid_score=float("nan"),
    )
    D_train = shell.design(X_train)
    best: LinearBaseline | None = None
    for c in BASELINE_CS:
        if task.kind == "regression":
            fit = Ridge(alpha=1.0 / c).fit(D_train, y_train)
            coef, intercept = fit.coef_.tolist(), float(fit.intercept_)
        else:
            fit = LogisticRegression(C=c, max_iter=500).fit(D_train, y_train.astype(int))
            if task.kind == "binary":
                coef, intercept = fit.coef_[0].tolist(), float(fit.intercept_[0])
            else:  # classes absent from the training rows get no coefficients: they stay impossible
                coef_all = np.full((len(task.classes), D_train.shape[1]), 0.0)
                intercept_all = np.full(len(task.classes), -50.0)
                coef_all[fit.classes_.astype(int)] = fit.coef_
                intercept_all[fit.classes_.astype(int)] = fit.intercept_
                coef, intercept = coef_all.tolist(), intercept_all.tolist()
        candidate = shell.model_copy(update={"coef": coef, "intercept": intercept, "c": c})
        if task.kind == "binary":
            score = float(roc_auc_score(y_valid, candidate.predict(X_valid)))
            better = best is None or score > best.valid_score
        else:
            score = float(np.mean(task.row_loss(y_valid, candidate.predict(X_valid))))
            better = best is None or score < best.valid_score
        if better:
            best = candidate.model_copy(update={"valid_score": score})
    assert best is not None
    return best


MAX_BASELINE_ROWS = 50_000  # a linear model of a few hundred inputs settles long before this many rows


def fit_baseline_on_split(
    manifest: SnapshotManifest, prepared: PreparedTraining, config: DatasetConfig, store: ArtifactStore
) -> LinearBaseline:
    """The linear baseline fitted on the training rows (evenly spaced, at most
    ``MAX_BASELINE_ROWS``), its strength chosen on the validation rows, both from the same snapshot
    and fitted transform as the candidate."""
    from tasks.data.snapshot import spacing
    from tasks.model.train import load_matrix, validation_matrix

    target, end = config.target.name, prepared.split.train_end
    X, y = load_matrix(store, manifest, prepared.transform, target, 0, end, spacing(end, MAX_BASELINE_ROWS))
    X, y = X.copy(), y.copy()  # the memo keeps one matrix: the validation rows replace it
    X_valid, y_valid = validation_matrix(store, manifest, prepared, target)
    return fit_linear_baseline(X, y, X_valid, y_valid, prepared.transform.categorical_indices, prepared.task)
