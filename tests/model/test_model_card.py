"""The model card: attributions from LightGBM's own contributions, and wording true to the config."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from tasks.model.card import AttributionSums, CardFacts, GateRow, attribution_sums, model_card
from tasks.model.evaluate import Evaluation, Metrics


def _booster(rows: int = 4000) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(rows, 3))
    y = (X[:, 0] * 2 + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 8, "seed": 1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=40), X


def test_attributions_rank_what_drives_the_score_and_parts_add_up():
    booster, X = _booster()
    names = ["strong", "weak", "noise"]
    whole = attribution_sums(booster, X, names)
    assert [name for name, _ in whole.mean_abs()] == ["strong", "weak", "noise"]
    halves = attribution_sums(booster, X[:2000], names).plus(attribution_sums(booster, X[2000:], names))
    assert halves.rows == whole.rows == 4000
    assert all(abs(halves.sums[n] - whole.sums[n]) < 1e-6 * max(1.0, whole.sums[n]) for n in names)
    # LightGBM's contributions sum to the raw score, row by row: they are the model's own account
    contrib = booster.predict(X[:50], pred_contrib=True)
    assert np.allclose(contrib.sum(axis=1), booster.predict(X[:50], raw_score=True))
    assert attribution_sums(booster, X[:0], names) == AttributionSums()


def _facts(split_method: str, folds: float) -> CardFacts:
    m = Metrics(
        rows=1000,
        positive_rate=0.2,
        roc_auc=0.8,
        pr_auc=0.5,
        log_loss=0.4,
        brier=0.1,
        precision=0.5,
        recall=0.6,
        threshold=0.3,
    )
    return CardFacts(
        model_name="m",
        dataset="d",
        decision="champion",
        reason="beat its baselines",
        evaluation=Evaluation(test=m, baseline=m, slices=[], test_window=("0", "999")),
        champion=None,
        champion_version=None,
        gate=[GateRow(against="logistic regression", other_auc=0.7, auc=0.8, gain=0.1, low=0.05, high=0.15)],
        test_flagged=120,
        snapshot_id="abc",
        snapshot_rows=5000,
        time_range=(None, None),
        sources={"t": 2},
        split_method=split_method,
        cv={"mean": 0.79, "std": 0.01, "folds": folds},
        params={"num_leaves": 8},
        git_commit="deadbeef",
        attributions=[("x", 0.5), ("y", 0.1)],
        plot_names=["roc"],
    )


def test_the_card_names_the_cv_the_config_used():
    stratified = model_card(_facts("stratified", 3))
    assert "stratified k-fold CV ROC-AUC: 0.7900 ± 0.0100 over 3 folds" in stratified
    assert "time-ordered" not in stratified
    assert "time-ordered CV (expanding windows)" in model_card(_facts("time", 3))
    assert "not run (cv_folds 0)" in model_card(_facts("time", 0))


def test_the_card_shows_the_gate_evidence_attributions_and_its_plots():
    card = model_card(_facts("stratified", 3))
    assert "| logistic regression | 0.7000 | 0.8000 | +0.1000 | +0.0500 .. +0.1500 |" in card
    assert "labels 120 of 1,000 test rows positive" in card
    assert "| x | 0.5000 | ████████████████████ |" in card and "| y | 0.1000 | ████ |" in card
    assert "![roc](plots/roc.png)" in card
    inlined = model_card(_facts("stratified", 3), inline_plots={"roc": b"\x89PNG"})
    assert "![roc](data:image/png;base64,iVBORw==)" in inlined and "plots/roc.png" not in inlined
