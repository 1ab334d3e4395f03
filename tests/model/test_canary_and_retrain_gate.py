"""The retrain gate (paired bootstrap, slices) and the canary verdicts, on controlled predictions."""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.core.settings import RetrainSettings
from tasks.decisions import bootstrap_auc_gain, compare_on_holdout, decide_canary
from tasks.monitoring.performance import LivePerformance


def _preds(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 + 0.35 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    weak = np.clip(0.5 + 0.10 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return y, good, weak


def test_bootstrap_interval_brackets_the_gain():
    y, good, weak = _preds()
    mean, low, high = bootstrap_auc_gain(y, good, weak, 200)
    assert 0 < low < mean < high
    mean, low, high = bootstrap_auc_gain(y, good, good, 50)
    assert mean == 0 and low == 0 == high


def test_holdout_gate_passes_a_better_model_and_fails_a_worse_one():
    y, good, weak = _preds()
    slices = pl.DataFrame({"carrier": np.where(np.arange(len(y)) % 2 == 0, "AA", "UA")})
    better = compare_on_holdout(y, good, weak, slices, 1, 2, RetrainSettings())
    assert better.passed and better.candidate_auc > better.champion_auc and "passes" in better.reason
    worse = compare_on_holdout(y, weak, good, slices, 1, 2, RetrainSettings())
    assert not worse.passed and worse.slices_worse and "carrier=AA" in worse.reason


def test_a_single_slice_getting_worse_fails_the_gate():
    y, good, weak = _preds()
    half = np.arange(len(y)) < len(y) // 2
    candidate = np.where(half, weak, good)  # as good overall on one half, much worse on the other
    champion = np.where(half, good, good)
    slices = pl.DataFrame({"origin": np.where(half, "EWR", "JFK")})
    result = compare_on_holdout(y, candidate, champion, slices, 1, 2, RetrainSettings(min_gain_lower=-1.0))
    assert not result.passed and result.slices_worse == [
        s for s in result.slices_worse if s.startswith("origin=EWR")
    ]


def _perf(version: int, labels: int, auc: float | None) -> LivePerformance:
    return LivePerformance(
        model_version=version,
        predictions=labels,
        labels=labels,
        roc_auc=auc,
        log_loss=None,
        mean_prediction=0.3,
        positive_rate=0.2,
    )


def test_canary_verdicts():
    assert decide_canary(None, None, 200, 0.0, 0.05).outcome == "wait"
    assert decide_canary(_perf(1, 40, None), _perf(2, 40, None), 200, 0.0, 0.05).outcome == "wait"
    early = decide_canary(_perf(1, 80, 0.72), _perf(2, 80, 0.60), 200, 0.0, 0.05)
    assert early.outcome == "drop" and "stopped early" in early.reason
    assert decide_canary(_perf(1, 80, 0.70), _perf(2, 80, 0.71), 200, 0.0, 0.05).outcome == "wait"
    assert decide_canary(_perf(1, 300, 0.70), _perf(2, 300, 0.71), 200, 0.0, 0.05).outcome == "promote"
    assert decide_canary(_perf(1, 300, 0.71), _perf(2, 300, 0.70), 200, 0.0, 0.05).outcome == "drop"
