"""The promotion gate: an explicit, testable decision about what a new model becomes.

A first model becomes champion (something has to serve). A later one becomes champion only if it
beats the champion's ROC-AUC on the same test window by the configured margin, with enough test
rows to believe it; otherwise it is registered as challenger, for a canary to decide on live data.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from tasks.model.evaluate import ChampionEvaluation, Metrics
from tasks.orchestration import cached_task
from tasks.core.settings import GateSettings, RetrainSettings


class Decision(BaseModel):
    outcome: Literal["champion", "challenger", "candidate"]
    reason: str


def decide(candidate: Metrics, champion: ChampionEvaluation, gate: GateSettings) -> Decision:
    if champion.version is None:
        return Decision(outcome="champion", reason="first model of this name: it becomes champion")
    if champion.metrics is None:
        return Decision(outcome="challenger", reason=f"{champion.note}; kept as challenger for a live comparison")
    if candidate.rows < gate.min_test_rows:
        return Decision(outcome="challenger",
                        reason=f"only {candidate.rows} test rows (gate needs {gate.min_test_rows}); not enough evidence")
    gain = candidate.roc_auc - champion.metrics.roc_auc
    verdict = (f"ROC-AUC {candidate.roc_auc:.4f} vs champion v{champion.version} {champion.metrics.roc_auc:.4f}"
               f" (gain {gain:+.4f}, margin {gate.min_auc_gain})")
    if gain >= gate.min_auc_gain:
        return Decision(outcome="champion", reason=f"beats the champion: {verdict}")
    return Decision(outcome="challenger", reason=f"does not beat the champion by the margin: {verdict}")


@cached_task(name="promotion-gate")
def decide_promotion(candidate: Metrics, champion: ChampionEvaluation, gate: GateSettings) -> Decision:
    return decide(candidate, champion, gate)


class HoldoutComparison(BaseModel):
    """A retrained model against the champion on the same recent holdout, with uncertainty."""

    rows: int
    champion_version: int
    candidate_version: int
    champion_auc: float
    candidate_auc: float
    gain_mean: float
    gain_low: float
    gain_high: float
    slices_worse: list[str]
    passed: bool
    reason: str


def bootstrap_auc_gain(y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, samples: int, seed: int = 0
                       ) -> tuple[float, float, float]:
    """Mean and 95% percentile interval of AUC(new) - AUC(old) over paired bootstrap resamples."""
    rng = np.random.default_rng(seed)
    gains = []
    n = len(y)
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        gains.append(roc_auc_score(y[idx], p_new[idx]) - roc_auc_score(y[idx], p_old[idx]))
    g = np.array(gains)
    return float(g.mean()), float(np.percentile(g, 2.5)), float(np.percentile(g, 97.5))


def compare_on_holdout(y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, slices: pl.DataFrame,
                       champion_version: int, candidate_version: int, settings: RetrainSettings,
                       min_slice_rows: int = 200) -> HoldoutComparison:
    """Pass when the gain's interval clears the non-inferiority margin and no slice gets clearly worse."""
    mean, low, high = bootstrap_auc_gain(y, p_new, p_old, settings.bootstrap_samples)
    worse = []
    for col in slices.columns:
        values = slices[col].cast(pl.String).fill_null("<missing>").to_numpy()
        for value in np.unique(values):
            mask = values == value
            if mask.sum() < min_slice_rows or len(np.unique(y[mask])) < 2:
                continue
            drop = roc_auc_score(y[mask], p_old[mask]) - roc_auc_score(y[mask], p_new[mask])
            if drop > settings.slice_tolerance:
                worse.append(f"{col}={value}: ROC-AUC {drop:.3f} lower")
    passed = low > settings.min_gain_lower and not worse
    interval = f"ROC-AUC gain {mean:+.4f} (95% interval {low:+.4f} .. {high:+.4f}, margin {settings.min_gain_lower:+.4f})"
    if passed:
        reason = f"passes: {interval}, no slice worse by more than {settings.slice_tolerance}"
    elif worse:
        reason = f"fails: slices got worse ({'; '.join(worse[:5])}); {interval}"
    else:
        reason = f"fails: {interval}"
    return HoldoutComparison(rows=len(y), champion_version=champion_version, candidate_version=candidate_version,
                             champion_auc=float(roc_auc_score(y, p_old)), candidate_auc=float(roc_auc_score(y, p_new)),
                             gain_mean=mean, gain_low=low, gain_high=high, slices_worse=worse, passed=passed,
                             reason=reason)
