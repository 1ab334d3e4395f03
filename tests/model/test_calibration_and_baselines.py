"""Calibration folded into the model file, thresholds chosen by rule, the logistic regression baseline."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from tasks.core.config import ThresholdRule, TrainingConfig
from tasks.model.baselines import fit_linear_baseline
from tasks.model.calibrate import (
    Calibration,
    apply_platt,
    calibrated_model_text,
    choose_threshold,
    fit_platt,
    logit,
)


def _data(n: int = 6000, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    p = 1 / (1 + np.exp(-(1.5 * X[:, 0] - X[:, 1] - 2)))
    return X, (rng.random(n) < p).astype(int), p


def test_platt_recovers_a_known_miscalibration():
    _, y, p = _data(40_000)
    squeezed = 1 / (
        1 + np.exp(-(0.5 * logit(p) - 1.0))
    )  # under-confident, too low: a model that never says yes
    c = fit_platt(squeezed, y)
    assert c.slope == pytest.approx(2.0, rel=0.05) and c.intercept == pytest.approx(2.0, rel=0.1)
    assert np.abs(apply_platt(squeezed, c) - p).max() < 0.05


def test_calibration_inside_the_model_file_is_exact_and_keeps_the_ranking():
    X, y, _ = _data()
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7}, lgb.Dataset(X, y), 30)
    c = Calibration(slope=0.7, intercept=-0.4, rows=len(y))
    calibrated = lgb.Booster(model_str=calibrated_model_text(booster.model_to_string(), c))
    raw = booster.predict(X)
    assert np.abs(calibrated.predict(X) - apply_platt(raw, c)).max() < 1e-12
    assert roc_auc_score(y, calibrated.predict(X)) == roc_auc_score(y, raw)
    regression = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, y.astype(float)), 3)
    with pytest.raises(ValueError, match="only a binary"):
        calibrated_model_text(regression.model_to_string(), c)


def test_each_threshold_rule_does_what_it_says():
    _, y, p = _data()
    f1 = choose_threshold(y, p, ThresholdRule(rule="f1"))
    assert 0 < f1.threshold < 0.5 and f1.problem is None and f1.flagged_share > 0  # rare positives: below 0.5
    cost = choose_threshold(y, p, ThresholdRule(rule="cost", false_negative_cost=4))
    assert cost.threshold == pytest.approx(0.2)  # flag when p * 4 >= (1 - p) * 1
    precise = choose_threshold(y, p, ThresholdRule(rule="precision", value=0.7))
    assert precise.precision >= 0.7 and precise.threshold > f1.threshold
    recall = choose_threshold(y, p, ThresholdRule(rule="recall", value=0.9))
    assert recall.recall >= 0.9 and recall.threshold < f1.threshold
    fixed = choose_threshold(y, p, ThresholdRule(rule="fixed", value=0.5))
    assert fixed.threshold == 0.5
    rng = np.random.default_rng(5)
    vague = rng.uniform(0.1, 0.6, 5000)  # no row is more than 60% sure
    y_vague = (rng.random(5000) < vague).astype(int)
    unreachable = choose_threshold(y_vague, vague, ThresholdRule(rule="precision", value=0.95))
    assert unreachable.problem and "no threshold reaches precision 0.95" in unreachable.problem


def test_a_bare_number_in_the_config_is_a_fixed_threshold():
    assert TrainingConfig(threshold=0.3).threshold == ThresholdRule(rule="fixed", value=0.3)
    assert TrainingConfig().threshold.rule == "f1"


def test_the_linear_baseline_scores_like_scikit_learn_and_handles_missing_and_categories():
    rng = np.random.default_rng(4)
    n = 5000
    X = np.c_[rng.normal(size=n), rng.normal(size=n), rng.integers(0, 5, n).astype(float)]
    X[rng.random(n) < 0.1, 1] = np.nan
    logit_true = X[:, 0] + np.where(np.isnan(X[:, 1]), 1.0, 0.0) + np.where(X[:, 2] == 3, 1.5, 0.0) - 1
    y = (rng.random(n) < 1 / (1 + np.exp(-logit_true))).astype(int)
    base = fit_linear_baseline(X[:4000], y[:4000], X[4000:], y[4000:], categorical=[2])
    design = base.design(X[4000:])
    assert design.shape[1] == 2 + 1 + 5  # two standardised, one missing indicator, five levels
    refit = LogisticRegression(C=base.c, max_iter=500).fit(base.design(X[:4000]), y[:4000])
    assert np.abs(base.predict(X[4000:]) - refit.predict_proba(design)[:, 1]).max() < 1e-9
    assert roc_auc_score(y[4000:], base.predict(X[4000:])) > 0.75 and base.valid_score > 0.75
