"""Simple baselines trained in the same run as the candidate, on the same rows, so the first model of a
name has to show it is worth its complexity: the majority class (a constant: ROC-AUC 0.5, "no better
than chance") and a regularised logistic regression on the same fitted feature matrix.

The regression is fitted with scikit-learn on the training rows (evenly spaced, at most
``max_rows``), its regularisation chosen on the validation rows; what it learned is kept as plain
numbers (``LinearBaseline``), so it travels to every held-out part (a thread or a Dask worker) as a
small JSON-able record and scores there with one matrix product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

if TYPE_CHECKING:
    from tasks.core.config import DatasetConfig
    from tasks.core.store import ArtifactStore
    from tasks.data.snapshot import SnapshotManifest
    from tasks.model.train import PreparedTraining

BASELINE_CS = (0.01, 0.1, 1.0)  # inverse L2 strengths tried; the best on validation ROC-AUC is kept
MAX_LEVELS = 50  # most frequent levels of a categorical column one-hot encoded; the rest share none


class LinearBaseline(BaseModel):
    """A fitted logistic regression over the transform's matrix: numeric columns standardised (missing
    values at the training mean, plus a missing indicator), categorical codes one-hot encoded."""

    numeric: list[int]  # column indices in the feature matrix
    means: list[float]
    scales: list[float]
    missing: list[int]  # numeric columns (indices into ``numeric``) that had missing values
    categorical: list[int]
    levels: list[list[float]]  # per categorical column, the codes that get their own coefficient
    coef: list[float]
    intercept: float
    c: float  # the chosen inverse regularisation strength
    valid_auc: float

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
        logit = self.design(X) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -35, 35)))


def fit_linear_baseline(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    categorical: list[int],
) -> LinearBaseline:
    """Fit the regression for each strength in ``BASELINE_CS`` and keep the best on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

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
        valid_auc=float("nan"),
    )
    D_train, D_valid = shell.design(X_train), shell.design(X_valid)
    best: LinearBaseline | None = None
    for c in BASELINE_CS:
        fit = LogisticRegression(C=c, max_iter=500).fit(D_train, y_train)
        auc = float(roc_auc_score(y_valid, fit.decision_function(D_valid)))
        if best is None or auc > best.valid_auc:
            best = shell.model_copy(
                update={
                    "coef": fit.coef_[0].tolist(),
                    "intercept": float(fit.intercept_[0]),
                    "c": c,
                    "valid_auc": auc,
                }
            )
    assert best is not None
    return best


MAX_BASELINE_ROWS = 50_000  # a linear model of a few hundred inputs settles long before this many rows


def fit_baseline_on_split(
    manifest: SnapshotManifest, prepared: PreparedTraining, config: DatasetConfig, store: ArtifactStore
) -> LinearBaseline:
    """The logistic regression baseline fitted on the training rows (evenly spaced, at most
    ``MAX_BASELINE_ROWS``), its strength chosen on the validation rows, both from the same snapshot
    and fitted transform as the candidate."""
    from tasks.data.snapshot import spacing
    from tasks.model.train import load_matrix, validation_matrix

    target, end = config.target.name, prepared.split.train_end
    X, y = load_matrix(store, manifest, prepared.transform, target, 0, end, spacing(end, MAX_BASELINE_ROWS))
    X, y = X.copy(), y.copy()  # the memo keeps one matrix: the validation rows replace it
    X_valid, y_valid = validation_matrix(store, manifest, prepared, target)
    return fit_linear_baseline(X, y, X_valid, y_valid, prepared.transform.categorical_indices)
