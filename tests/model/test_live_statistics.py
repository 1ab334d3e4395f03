"""The monitoring statistics on fixed evidence: what each returns, and that sparse labels (one positive,
one class) are "not enough yet" instead of an error that stops the monitor or the canary flow."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from tasks.model.evaluate import paired_auc_difference
from tasks.monitoring.performance import canary_evidence, live_performance

T0 = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)


def _predictions(probabilities, version=1, paired=None, paired_version=None) -> pl.DataFrame:
    n = len(probabilities)
    frame = {
        "request_id": [f"r{i}" for i in range(n)],
        "model_version": [version] * n,
        "probability": list(probabilities),
        "ts": [T0 + timedelta(minutes=i) for i in range(n)],
    }
    if paired is not None:
        frame |= {"paired_version": [paired_version] * n, "paired_probability": list(paired)}
    return pl.DataFrame(frame)


def _feedback(outcomes: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "request_id": [f"r{i}" for i in outcomes],
            "ts": [T0 + timedelta(hours=1)] * len(outcomes),
            "outcome": list(outcomes.values()),
            "correction": [False] * len(outcomes),
            "source": ["test"] * len(outcomes),
        }
    )


def test_live_performance_is_the_roc_auc_of_the_labelled_rows():
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.7, 0.4])
    y = np.array([1, 1, 0, 0, 0, 0, 1, 1])
    (result,) = live_performance(_predictions(p), _feedback(dict(enumerate(y))), min_labels=4)
    assert result.labels == 8 and result.roc_auc == pytest.approx(roc_auc_score(y, p))
    assert result.positive_rate == 0.5 and 0 < result.roc_auc_se < 0.3


@pytest.mark.parametrize("outcomes", [{0: 1, 1: 0, 2: 0, 3: 0, 4: 0}, {0: 0, 1: 0, 2: 0, 3: 0}, {}])
def test_one_positive_or_one_class_is_not_enough_labels_not_an_error(outcomes):
    p = [0.9, 0.1, 0.2, 0.3, 0.4]
    (result,) = live_performance(_predictions(p), _feedback(outcomes), min_labels=1)
    assert result.roc_auc is None and result.roc_auc_se is None and result.labels == len(outcomes)
    evidence = canary_evidence(
        _predictions(p, version=1, paired=[0.5] * 5, paired_version=2), _feedback(outcomes), 1, 2, hours=3
    )
    assert evidence.paired is None and evidence.champion_labels == len(outcomes)


def test_canary_evidence_pairs_both_models_on_the_same_rows():
    y = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 0])
    champion = np.array([0.6, 0.5, 0.4, 0.3, 0.7, 0.2, 0.6, 0.5, 0.1, 0.4])
    challenger = np.where(y == 1, 0.9, 0.1)  # separates perfectly
    evidence = canary_evidence(
        _predictions(champion, version=1, paired=challenger, paired_version=2),
        _feedback(dict(enumerate(y))),
        champion=1,
        challenger=2,
        hours=5,
    )
    paired = evidence.paired
    assert paired is not None and paired.rows == 10
    assert paired.auc_a == pytest.approx(roc_auc_score(y, champion)) and paired.auc_b == 1.0
    assert paired.gain == pytest.approx(1.0 - roc_auc_score(y, champion)) and paired.se > 0


def _shadow_log(champion, challenger) -> pl.DataFrame:
    """Shadow mode: the champion (v1) answers every row, the challenger (v2) scores it on the side."""
    frame = _predictions(champion, version=1)
    return frame.with_columns(
        pl.lit(2, dtype=pl.Int64).alias("shadow_version"),
        pl.Series("shadow_probability", list(challenger), dtype=pl.Float64),
        pl.lit(None, dtype=pl.Int64).alias("paired_version"),
        pl.lit(None, dtype=pl.Float64).alias("paired_probability"),
    )


def test_a_shadow_canary_is_judged_on_the_challengers_shadow_scores_and_can_be_promoted():
    from tasks.core.settings import RetrainSettings
    from tasks.decisions import decide_canary

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 600)
    champion = np.clip(0.5 + 0.15 * (2 * y - 1) + rng.normal(0, 0.25, 600), 0.01, 0.99)  # weak
    challenger = np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.15, 600), 0.01, 0.99)  # strong
    evidence = canary_evidence(
        _shadow_log(champion, challenger), _feedback(dict(enumerate(y))), 1, 2, hours=50
    )
    assert evidence.champion_labels == evidence.challenger_labels == 600  # the shadow's rows count
    assert evidence.paired is not None and evidence.paired.rows == 600
    assert evidence.paired.auc_b == pytest.approx(roc_auc_score(y, challenger))
    assert decide_canary(evidence, RetrainSettings()).outcome == "promote"


def test_the_expected_auc_is_what_labels_drawn_from_the_probabilities_show():
    from sklearn.metrics import roc_auc_score

    from tasks.monitoring.estimate import estimate_performance, expected_auc

    rng = np.random.default_rng(7)
    p = np.round(rng.beta(2, 5, 4000), 2)  # rounded: many ties
    draws = [roc_auc_score(rng.random(len(p)) < p, p) for _ in range(300)]
    assert abs(expected_auc(p) - np.mean(draws)) < 0.002
    est = estimate_performance(p, threshold=0.3)
    assert abs(est.roc_auc - np.mean(draws)) < 0.002
    inside = np.mean([(est.low <= d <= est.high) for d in draws])
    assert 0.9 <= inside <= 0.99  # a 95% band
    assert est.precision == pytest.approx(p[p >= 0.3].mean()) and est.positive_rate == pytest.approx(p.mean())
    assert estimate_performance(np.full(10, 0.05), 0.3) is None  # half an expected positive: no AUC


def test_degradation_checks_start_at_each_midnight_and_judge_day_by_day():
    from datetime import datetime, timedelta, timezone

    from tasks.monitoring.performance import CalibratedVersion, HeldOutAuc, degradation_checks

    rng = np.random.default_rng(8)
    n = 3 * 24 * 20  # three days, 20 predictions an hour
    start = datetime(2013, 9, 1, tzinfo=timezone.utc)
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < p).astype(int)
    day = np.arange(n) // 480
    y_stormy = np.where(day == 1, (rng.random(n) < 0.9).astype(int), y)  # everyone late on day two
    ts = pl.Series("ts", [start + timedelta(minutes=3 * i) for i in range(n)])
    predictions = _predictions(p).with_columns(ts)
    calibrated = {1: CalibratedVersion(threshold=0.3, day_sd=0.02)}
    checks = degradation_checks(predictions, _feedback(dict(enumerate(y))), calibrated, window_days=7)
    assert [c.since[:10] for c in checks] == ["2013-09-01", "2013-09-02", "2013-09-03"]
    assert [(c.labels, c.days) for c in checks] == [(n, 3), (n - 480, 2), (n - 960, 1)]
    assert {c.expected_from for c in checks} == {"calibration"}
    assert all(abs(c.gap) < 3 * c.se for c in checks)  # calibrated: no drop
    assert checks[2].se > (0.02**2) ** 0.5  # one day: its own noise plus the between-day spread
    # a day whose outcomes all go one way says little about ranking: judged within the day, not pooled
    pooled_auc = roc_auc_score(y_stormy, p)
    stormy = degradation_checks(predictions, _feedback(dict(enumerate(y_stormy))), calibrated, 7)
    assert stormy[0].realised > pooled_auc + 0.02 and abs(stormy[0].gap) < 3 * stormy[0].se
    # a replay: every request made within one hour, the events spread over three days (the dataset's
    # time column): one start, the gaps taken per event day
    replay = _predictions(p).with_columns(
        pl.Series("ts", [start + timedelta(seconds=i / 2) for i in range(n)]), ts.alias("event_time")
    )
    (compressed,) = degradation_checks(replay, _feedback(dict(enumerate(y))), calibrated, 7, "event_time")
    assert (compressed.days, compressed.labels, compressed.since) == (3, n, "2013-09-01")
    old = degradation_checks(
        predictions, _feedback(dict(enumerate(y))), {1: HeldOutAuc(roc_auc=0.9, se=0.01)}, 7
    )
    assert {c.expected for c in old} == {0.9} and all(c.gap < -0.1 for c in old)


def test_feedback_that_depends_on_the_answer_is_weighted_back():
    """A/A: both models equally good, the champion answers and flags its top rows; callers report the
    outcome of every flagged row but of only 5% of the others. On the labelled rows alone the
    challenger looks better (the champion's flagged rows are where its own errors were cut away);
    weighted by the labelling propensity per answer, the gain is back near zero."""
    rng = np.random.default_rng(11)
    n = 20_000
    latent = rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(latent - 1.2)))).astype(int)
    champion = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.8, n) - 1.2)))
    challenger = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.8, n) - 1.2)))
    flagged = champion >= 0.3
    labelled = flagged | (rng.random(n) < 0.05)
    log = _predictions(champion, version=1, paired=challenger, paired_version=2).with_columns(
        pl.Series("label", flagged.astype(np.int8))
    )
    outcomes = {i: int(y[i]) for i in np.flatnonzero(labelled)}
    evidence = canary_evidence(log, _feedback(outcomes), champion=1, challenger=2, hours=5)
    naive = paired_auc_difference(y[labelled], champion[labelled], challenger[labelled])
    assert naive.gain > 3 * naive.se  # the bias the weights undo
    assert abs(evidence.paired.gain) < 2 * evidence.paired.se
    # and each model's ROC-AUC is the whole traffic's again (on the labelled rows alone: 0.62 vs 0.69)
    assert (
        abs(evidence.paired.auc_a - roc_auc_score(y, champion))
        < 0.02
        < abs(naive.auc_a - roc_auc_score(y, champion))
    )
    assert evidence.labelling == {"v1 answered 0": pytest.approx(0.05, abs=0.01), "v1 answered 1": 1.0}
    assert evidence.paired.rows < labelled.sum()  # uneven weights: fewer effective rows


def test_answers_that_never_get_an_outcome_make_the_canary_wait():
    from tasks.core.settings import RetrainSettings
    from tasks.decisions import decide_canary

    p = np.linspace(0.01, 0.99, 400)
    log = _predictions(p, version=1, paired=p[::-1], paired_version=2).with_columns(
        pl.Series("label", (p >= 0.5).astype(np.int8))
    )
    flagged_only = {i: int(i % 3 == 0) for i in range(400) if p[i] >= 0.5}
    evidence = canary_evidence(log, _feedback(flagged_only), champion=1, challenger=2, hours=5)
    assert evidence.unlabelled == ["v1 answered 0 (200 rows)"]
    verdict = decide_canary(evidence, RetrainSettings(canary_min_labels=10))
    assert verdict.outcome == "wait" and "labels are selective" in verdict.reason
    late = decide_canary(evidence.model_copy(update={"hours": 80.0}), RetrainSettings(canary_min_labels=10))
    assert late.outcome == "drop" and "v1 answered 0" in late.reason
