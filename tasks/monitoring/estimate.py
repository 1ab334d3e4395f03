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


def expected_auc(p: np.ndarray) -> float:
    """The ROC-AUC expected when each row's label is drawn from its probability (pairs weighted by the
    chance that one is positive and the other negative; ties count half), in O(n log n): the centre
    the sequential degradation check compares the realised ROC-AUC with."""
    p = np.sort(np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0))
    neg = 1.0 - p
    _, start = np.unique(p, return_index=True)
    pos_g, neg_g = np.add.reduceat(p, start), np.add.reduceat(neg, start)
    within = 0.5 * (pos_g * neg_g - np.add.reduceat(p * neg, start))  # pairs i != j in a tie group
    numerator = float(np.sum(pos_g * (np.cumsum(neg_g) - neg_g)) + within.sum())
    denominator = float(p.sum() * neg.sum() - np.sum(p * neg))
    return numerator / denominator if denominator > 0 else float("nan")


def day_to_day_spread(y: np.ndarray, p: np.ndarray, day: np.ndarray) -> float:
    """The standard deviation, between days, of (realised - expected) ROC-AUC beyond each day's own
    sampling noise: DerSimonian-Laird's between-study variance (days as studies), taken at its upper 95%
    confidence bound for a variance with (days - 1) degrees of freedom, so a short test window does not
    understate it; 0 when the days agree as well as independent labels would."""
    from scipy.stats import chi2

    from tasks.model.evaluate import auc_standard_error

    gaps, variances = [], []
    for d in np.unique(day):
        on = day == d
        positives = int(y[on].sum())
        if positives < 5 or on.sum() - positives < 5:
            continue
        from sklearn.metrics import roc_auc_score

        gaps.append(roc_auc_score(y[on], p[on]) - expected_auc(p[on]))
        variances.append(max(auc_standard_error(y[on], p[on]), 1e-4) ** 2)
    if len(gaps) < 3:
        return 0.0
    g, w = np.array(gaps), 1 / np.array(variances)
    centre = np.sum(w * g) / np.sum(w)
    q = float(np.sum(w * (g - centre) ** 2))
    tau2 = max(0.0, (q - (len(g) - 1)) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    dof = len(g) - 1
    return float((tau2 * dof / chi2.ppf(0.05, dof)) ** 0.5)
