"""Performance before the labels arrive: confidence-based performance estimation (CBPE).

A calibrated model's probabilities say how often it will be right: if a row's probability is 0.3, the
row is positive with chance 0.3. So over a window of predictions, before any label exists, the ROC-AUC
the labels will show is a known distribution: draw each row's label from its probability and compute
the AUC. Its mean is the estimate; its spread is the band the realised value falls in when the
model's calibration holds for this window (a window of other cases than training's, with the
model still right about them: covariate shift). A realised value below the band says the model got
worse on these very rows; an estimate below the held-out figure says the rows changed towards cases
the model is less sure about, and is known before any label.

Labels are not independent draws everywhere: flight delays come in days (a storm delays everyone), so
a day's realised ROC-AUC strays from its expectation by more than sampling noise. That between-day
spread is measured on the test window when a version is trained (``day_to_day_spread``) and widens
the band (and the degradation check's uncertainty) by ``day_sd**2 / days``.

The probabilities are calibrated on validation when the model is trained (``tasks.model.calibrate``),
so this holds for every version trained since; ``bench/cbpe_accuracy.py`` checks it on the flights
replay against the realised values.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel
from scipy.stats import rankdata

from tasks.model.evaluate import day_to_day_spread, expected_auc  # noqa: F401 - re-exported: CBPE's centre

DRAWS = 400  # label draws for the band (its quantiles move by < 0.002 beyond this at 1,000 rows)


class EstimatedPerformance(BaseModel):
    """What a window's calibrated probabilities promise, and (once labels arrive) what happened."""

    rows: int
    roc_auc: float  # expected ROC-AUC
    low: float  # 95% band of the realised ROC-AUC if calibration holds
    high: float
    positive_rate: float  # expected share of positives
    precision: float | None  # expected, at the threshold (None: nothing flagged)
    recall: float
    threshold: float
    days: int = 1  # distinct days the window spans (the between-day spread shrinks with them)


def _auc_from_ranks(ranks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``labels`` (draws x rows, 0/1) for scores whose midranks are ``ranks``."""
    m = labels.sum(axis=1)
    n = labels.shape[1] - m
    with np.errstate(invalid="ignore", divide="ignore"):
        return (labels @ ranks - m * (m + 1) / 2) / (m * n)


def estimate_performance(
    p: np.ndarray, threshold: float, day_sd: float = 0.0, days: int = 1, draws: int = DRAWS, seed: int = 0
) -> EstimatedPerformance | None:
    """The estimate for one window of calibrated probabilities ``p``; None when the window is too small
    for a ROC-AUC to mean anything (fewer than 2 expected positives or negatives). ``day_sd``: how far
    a day's realised ROC-AUC strays from its expectation beyond sampling noise (``day_to_day_spread``,
    measured on the test window when the version was trained); the band widens by it over ``days``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    expected_positives = float(p.sum())
    if expected_positives < 2 or len(p) - expected_positives < 2:
        return None
    ranks = rankdata(p)
    rng = np.random.default_rng(seed)
    aucs = []
    for start in range(0, draws, 50):  # 50 draws at a time bounds memory at 50 x rows
        labels = (rng.random((min(50, draws - start), len(p))) < p).astype(np.float64)
        aucs.append(_auc_from_ranks(ranks, labels))
    auc = np.concatenate(aucs)
    auc = auc[np.isfinite(auc)]
    flagged = p >= threshold
    true_positives = float(p[flagged].sum())
    half = 1.96 * float(np.sqrt(auc.var() + day_sd**2 / max(1, days)))
    return EstimatedPerformance(
        rows=len(p),
        roc_auc=float(auc.mean()),
        low=float(auc.mean()) - half,
        high=float(auc.mean()) + half,
        positive_rate=expected_positives / len(p),
        precision=true_positives / flagged.sum() if flagged.any() else None,
        recall=true_positives / expected_positives,
        threshold=threshold,
        days=days,
    )
