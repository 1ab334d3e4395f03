"""The holdout gate (DeLong intervals, slices) and the canary verdicts, on controlled predictions."""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.core.settings import GateSettings, RetrainSettings
from tasks.decisions import auc_gain_interval, canary_radius, compare_on_holdout, decide_canary
from tasks.model.evaluate import PairedAucDifference, paired_auc_difference
from tasks.monitoring.performance import CanaryEvidence


def _preds(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 + 0.35 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    weak = np.clip(0.5 + 0.10 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return y, good, weak


def _twins(n: int = 4000):
    """Two equally good models: one latent score, each with its own noise of the same size."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, n)
    latent = 0.35 * (y - 0.5) + rng.normal(0, 0.2, n)
    return y, latent + rng.normal(0, 0.05, n), latent + rng.normal(0, 0.05, n)


def test_gain_interval_brackets_the_gain():
    y, good, weak = _preds()
    g = auc_gain_interval(y, good, weak, "champion v1", 0.05)
    assert 0 < g.low < g.gain < g.high and g.score > g.other_score and g.positives == int(y.sum())
    same = auc_gain_interval(y, good, good, "champion v1", 0.05)
    assert same.gain == 0 and same.low == 0 == same.high
    assert auc_gain_interval(np.r_[1, 0, 0, 0], good[:4], weak[:4], "x", 0.05) is None  # one positive


def test_holdout_gate_passes_a_better_model_and_fails_a_worse_one():
    y, good, weak = _preds()
    slices = pl.DataFrame({"carrier": np.where(np.arange(len(y)) % 2 == 0, "AA", "UA")})
    better = compare_on_holdout(y, good, weak, slices, 1, 2, GateSettings())
    assert better.passed and better.candidate_auc > better.champion_auc and "passes" in better.reason
    worse = compare_on_holdout(y, weak, good, slices, 1, 2, GateSettings())
    assert not worse.passed and worse.slices_worse and "carrier=AA" in worse.reason


def test_an_equal_model_on_few_positives_is_not_waved_through():
    """40 positives: the interval of an equally good model's gain is wide, so it does not clear the
    non-inferiority margin (no fixed row minimum: the positives set the width); on 4,000 rows it does."""
    y, twin, good = _twins()
    few = np.r_[np.flatnonzero(y == 1)[:40], np.flatnonzero(y == 0)[:400]]
    small = compare_on_holdout(y[few], twin[few], good[few], pl.DataFrame(), 1, 2, GateSettings())
    assert not small.passed and small.positives == 40 and "not shown at least as good" in small.reason
    large = compare_on_holdout(y, twin, good, pl.DataFrame(), 1, 2, GateSettings())
    assert large.passed
    one = compare_on_holdout(np.r_[1, 0, 0, 0, 0], good[:5], good[:5], pl.DataFrame(), 1, 2, GateSettings())
    assert not one.passed and "1 positive(s)" in one.reason


def test_a_single_slice_getting_worse_fails_the_gate():
    y, good, weak = _preds()
    half = np.arange(len(y)) < len(y) // 2
    candidate = np.where(half, weak, good)  # as good overall on one half, much worse on the other
    champion = np.where(half, good, good)
    slices = pl.DataFrame({"origin": np.where(half, "EWR", "JFK")})
    result = compare_on_holdout(y, candidate, champion, slices, 1, 2, GateSettings(min_gain_lower=-1.0))
    assert not result.passed and result.slices_worse == [
        s for s in result.slices_worse if s.startswith("origin=EWR")
    ]


def test_slices_of_an_equally_good_model_do_not_fail_it():
    """Forty slices of 100 rows each: the drops of an equally good model scatter by chance, and the
    intervals (Bonferroni over the slices) keep every one from counting as clearly worse."""
    y, twin, good = _twins()
    slices = pl.DataFrame({"tail": (np.arange(len(y)) % 40).astype(str)})
    result = compare_on_holdout(y, twin, good, slices, 1, 2, GateSettings(min_gain_lower=-1.0))
    assert result.slices_worse == [] and result.passed


def _evidence(
    gain: float, se: float, labels: int = 300, hours: float = 1.0, rows: int = 600
) -> CanaryEvidence:
    paired = PairedAucDifference(rows=rows, auc_a=0.70, auc_b=0.70 + gain, gain=gain, se=se, se_a=se, se_b=se)
    return CanaryEvidence(
        champion_version=1,
        challenger_version=2,
        champion_labels=labels,
        challenger_labels=labels,
        hours=hours,
        paired=paired,
    )


def test_canary_verdicts():
    policy = RetrainSettings(
        canary_min_labels=200, canary_alpha=0.05, canary_planned_labels=600, canary_max_hours=72
    )
    z = canary_radius(600, 0.05, 600)
    assert 3.0 < z < 3.1  # wider than one look's 1.96: it holds over every look at once
    nothing = CanaryEvidence(
        champion_version=1, challenger_version=2, champion_labels=0, challenger_labels=0, hours=1, paired=None
    )
    assert decide_canary(nothing, policy).outcome == "wait"
    assert decide_canary(_evidence(0.05, 0.01, labels=40), policy).outcome == "wait"  # too few labels per arm
    early = decide_canary(_evidence(-0.05, 0.01), policy)
    assert early.outcome == "drop" and "stopped early" in early.reason
    assert decide_canary(_evidence(0.01, 0.005), policy).outcome == "wait"  # +0.01 at z*se=0.013: not shown
    early_days = decide_canary(_evidence(0.02, 0.005), policy)
    assert early_days.outcome == "wait" and "judged after 48 h" in early_days.reason
    assert decide_canary(_evidence(0.02, 0.005, hours=49), policy).outcome == "promote"
    late = decide_canary(_evidence(0.01, 0.005, hours=80), policy)
    assert late.outcome == "drop" and "champion stays" in late.reason
    assert decide_canary(nothing.model_copy(update={"hours": 80}), policy).outcome == "drop"
    identical = decide_canary(_evidence(0.0, 0.0), policy)
    assert identical.outcome == "wait"  # an identical challenger is never promoted


def test_the_canary_radius_is_tightest_where_planned_and_valid_everywhere():
    radii = {n: canary_radius(n, 0.05, 5000) for n in (100, 1000, 5000, 50_000, 500_000)}
    assert min(radii, key=radii.get) == 5000
    assert all(r > 2.4 for r in radii.values())  # never below a one-look bound, however many looks
    assert radii[100] > radii[1000] and radii[500_000] > radii[50_000]  # widens away from the plan
    assert canary_radius(5000, 0.01, 5000) > canary_radius(5000, 0.05, 5000)


def test_paired_auc_difference_matches_sklearn_and_the_bootstrap():
    from sklearn.metrics import roc_auc_score

    y, good, weak = _preds()
    paired = paired_auc_difference(y, weak, good)
    assert (
        abs(paired.auc_a - roc_auc_score(y, weak)) < 1e-9
        and abs(paired.auc_b - roc_auc_score(y, good)) < 1e-9
    )
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(300):
        i = rng.integers(0, len(y), len(y))
        gains.append(roc_auc_score(y[i], good[i]) - roc_auc_score(y[i], weak[i]))
    assert abs(paired.gain - np.mean(gains)) < 0.005 and 0.8 < paired.se / np.std(gains) < 1.25
    same = paired_auc_difference(y, good, good)
    assert same.gain == 0 and same.se == 0


def _day(gain: float, se: float = 0.004) -> PairedAucDifference:
    return PairedAucDifference(rows=5000, auc_a=0.7, auc_b=0.7 + gain, gain=gain, se=se, se_a=se, se_b=se)


def test_a_challenger_better_only_on_some_days_is_not_promoted():
    """Pooled over 15,000 rows the gain looks clear (+0.013, se 0.0023); by day it swings +0.03, -0.02,
    +0.03: the days' spread is in the bound, and the challenger waits. The same pooled gain on three
    days that agree is promoted."""
    policy = RetrainSettings(canary_min_hours=48, canary_planned_labels=5000)
    pooled = _evidence(0.013, 0.0023, labels=5000, hours=60, rows=15000)
    swinging = pooled.model_copy(update={"daily": [_day(0.03), _day(-0.02), _day(0.03)]})
    steady = pooled.model_copy(update={"daily": [_day(0.013), _day(0.012), _day(0.014)]})
    assert decide_canary(swinging, policy).outcome == "wait"
    assert decide_canary(steady, policy).outcome == "promote"
