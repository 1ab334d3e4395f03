"""The target's kind and what follows from it, on controlled inputs: inference from values, objectives,
per-row losses, constant baselines, bootstrap intervals, the gate's paired loss reduction, the canary's
weighted paired loss difference and the loss degradation check."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from tasks.core.errors import BadInput
from tasks.core.target import LearningTask, canonical_objective, infer_kind, learning_task


@pytest.mark.parametrize(
    ("dtype", "values", "kind"),
    [
        (pl.Boolean, [False, True], "binary"),
        (pl.Int64, [0, 1], "binary"),
        (pl.String, ["No", "Yes"], "binary"),
        (pl.String, ["Yes", "no", " YES "], "binary"),  # yes/no text, however spelled
        (pl.String, ["Fair", "Good", "Ideal"], "multiclass"),
        (pl.Float64, [0.5, 1.25, 3.0], "regression"),
        (pl.Int64, list(range(326, 400)), "regression"),  # more whole numbers than classes could be
    ],
)
def test_the_kind_is_read_from_the_values_where_they_leave_no_doubt(dtype, values, kind):
    assert infer_kind(dtype, values, len(values), "y", "cfg") == kind


def test_a_few_whole_numbers_could_be_counts_or_classes_and_the_error_asks_which():
    with pytest.raises(BadInput, match=r"'y' holds 5 distinct whole numbers .*target.kind: regression or"):
        infer_kind(pl.Int64, [1, 2, 3, 4, 5], 5, "y", "cfg")
    with pytest.raises(BadInput, match="holds 60 distinct text values"):
        infer_kind(pl.String, [f"c{i}" for i in range(60)], 60, "y", "cfg")


def test_an_objective_is_checked_against_the_kind_and_its_parameters_kept():
    task = learning_task("regression", [], {"objective": "l1", "alpha": 0.3})
    assert task.objective == "regression_l1" and task.loss_metric == "l1" and not task.maximize
    assert task.lightgbm_params()["metric"] == ["l1", "l2"]
    huber = learning_task("regression", [], {"objective": "huber", "alpha": 2.0})
    assert huber.objective_params == {"alpha": 2.0}
    assert canonical_objective("softmax") == "multiclass"
    with pytest.raises(
        BadInput, match="objective 'binary' contradicts the target.*target.kind is 'regression'"
    ):
        learning_task("regression", [], {"objective": "binary"})
    classes = learning_task("multiclass", ["a", "b", "c"], {})
    assert classes.lightgbm_params() == {
        "objective": "multiclass", "metric": ["multi_logloss", "multi_error"], "num_class": 3
    }  # fmt: skip
    assert LearningTask().search_metric == "auc" and classes.search_metric == "multi_logloss"


def test_a_count_objective_refuses_negative_targets_naming_them():
    y = np.array([3.0, 0.0, -2.0, -5.0])
    with pytest.raises(
        BadInput, match=r"cfg: objective 'poisson' needs targets >= 0; 2 of 4 rows .*lowest -5"
    ):
        learning_task("regression", [], {"objective": "poisson"}).check_values(y, "cfg")
    with pytest.raises(BadInput, match=r"objective 'gamma' needs targets > 0; 3 of 4"):
        learning_task("regression", [], {"objective": "gamma"}).check_values(y, "cfg")
    learning_task("regression", [], {"objective": "tweedie"}).check_values(np.array([0.0, 4.0]), "cfg")
    learning_task("regression", [], {}).check_values(y, "cfg")  # L2 takes any number


def test_row_losses_are_the_objectives_own():
    y = np.array([1.0, 3.0, 10.0])
    pred = np.array([2.0, 3.0, 6.0])
    assert learning_task("regression", [], {}).row_loss(y, pred).tolist() == [1.0, 0.0, 16.0]
    assert learning_task("regression", [], {"objective": "mae"}).row_loss(y, pred).tolist() == [1.0, 0.0, 4.0]
    huber = learning_task("regression", [], {"objective": "huber", "alpha": 2.0}).row_loss(y, pred)
    assert huber.tolist() == [0.5, 0.0, 2.0 * (4.0 - 1.0)]
    pinball = learning_task("regression", [], {"objective": "quantile", "alpha": 0.9}).row_loss(y, pred)
    assert pinball == pytest.approx([0.1, 0.0, 3.6])  # under-predicting costs 9x over-predicting
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    task = learning_task("multiclass", ["a", "b", "c"], {})
    assert task.row_loss(np.array([0.0, 1.0]), probs) == pytest.approx([-np.log(0.7), -np.log(0.1)])
    assert task.answer(probs).tolist() == ["a", "c"]


def test_the_constant_baseline_minimises_the_objectives_loss():
    y = np.array([1.0, 2.0, 3.0, 100.0])
    assert learning_task("regression", [], {}).constant_prediction(y, 2).tolist() == [26.5, 26.5]
    assert learning_task("regression", [], {"objective": "l1"}).constant_prediction(y, 1).tolist() == [2.5]
    shares = learning_task("multiclass", ["a", "b", "c"], {}).constant_prediction(np.array([0, 0, 1, 2]), 2)
    assert shares.tolist() == [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]


def _regression(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.normal(100, 20, n)
    return y, y + rng.normal(0, 5, n)


def test_metrics_carry_bootstrap_intervals_around_them():
    from tasks.model.kind_metrics import kind_metrics

    task = learning_task("regression", [], {})
    y, pred = _regression(2000, 1)
    m = kind_metrics(task, y, pred, seed=0)
    rmse = m.metrics["rmse"]
    assert rmse.low < rmse.value < rmse.high and 4.6 < rmse.value < 5.4 and rmse.high - rmse.low < 0.5
    assert m.metrics["mean_loss"].value == pytest.approx(rmse.value**2)
    assert m.metrics["r2"].value > 0.9


def test_the_gate_reads_a_paired_loss_reduction_that_is_zero_for_equal_models():
    from tasks.decisions import loss_gain_interval

    task = learning_task("regression", [], {})
    y, pred = _regression(3000, 2)
    rng = np.random.default_rng(3)
    other = y + rng.normal(0, 5, len(y))  # equally good, its own errors
    same = loss_gain_interval(task, y, pred, other, "champion v1", 0.05)
    assert same.low < 0 < same.high and same.metric == "squared error"
    worse = y + rng.normal(0, 6, len(y))  # 44% more squared error
    better = loss_gain_interval(task, y, pred, worse, "champion v1", 0.05)
    assert 0.2 < better.low < better.gain < better.high and better.gain == pytest.approx(0.3, abs=0.05)


def test_the_canary_loss_difference_matches_a_direct_computation_and_is_flat_for_equal_weights():
    from tasks.model.evaluate import weighted_paired_loss_difference

    rng = np.random.default_rng(4)
    a, b = rng.exponential(1.0, 5000), rng.exponential(0.9, 5000)
    d = weighted_paired_loss_difference(a, b, np.ones(5000), "mean squared error")
    assert d.auc_a == pytest.approx(a.mean()) and d.auc_b == pytest.approx(b.mean())
    assert d.gain == pytest.approx(1 - b.mean() / a.mean())
    boot = [1 - b[i].mean() / a[i].mean() for i in rng.integers(0, 5000, (400, 5000))]
    assert d.se == pytest.approx(np.std(boot), rel=0.15)  # the delta method agrees with resampling
    doubled = weighted_paired_loss_difference(a, b, np.full(5000, 2.0), "mean squared error")
    assert doubled.gain == pytest.approx(d.gain) and doubled.se == pytest.approx(d.se)


def test_a_canary_verdict_on_losses_says_which_loss_and_how_much_lower():
    from tasks.core.settings import RetrainSettings
    from tasks.decisions import decide_canary
    from tasks.model.evaluate import weighted_paired_loss_difference
    from tasks.monitoring.performance import CanaryEvidence

    rng = np.random.default_rng(5)
    a, b = rng.exponential(1.0, 20000), rng.exponential(0.7, 20000)
    paired = weighted_paired_loss_difference(a, b, np.ones(20000), "mean log loss")
    evidence = CanaryEvidence(
        champion_version=1, challenger_version=2, champion_labels=18000, challenger_labels=2000,
        hours=50.0, paired=paired, daily=[paired],
    )  # fmt: skip
    verdict = decide_canary(evidence, RetrainSettings())
    assert verdict.outcome == "promote", verdict.reason
    assert (
        "live mean log loss on the same 20000 labelled rows" in verdict.reason and "% lower" in verdict.reason
    )


def _logs(losses_scale: float, days: int, per_day: int, seed: int):
    """A price model's prediction and feedback logs: predictions exact up to N(0, 10) noise scaled."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ts = [start + timedelta(hours=24 * i / per_day) for i in range(n)]
    y = rng.normal(1000, 100, n)
    pred = y + rng.normal(0, 10 * losses_scale, n)
    ids = [f"r{i}" for i in range(n)]
    predictions = pl.DataFrame(
        {
            "request_id": ids,
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "model_version": [1] * n,
            "output": pl.Series([[p] for p in pred], dtype=pl.List(pl.Float64)),
        }
    )
    feedback = pl.DataFrame({"request_id": ids, "ts": predictions["ts"], "outcome": y, "correction": False})
    return predictions, feedback


@pytest.mark.parametrize(("scale", "degraded"), [(1.0, False), (1.3, True)])
def test_a_loss_well_above_the_held_out_one_is_degradation(scale, degraded):
    """Held-out squared error 100 (noise sd 10): the same noise live is fine; noise sd 13 (69% more
    squared error) over a week of 300 labels a day clears the sequential bound."""
    from tasks.decisions import decide_degradation
    from tasks.monitoring.loss_performance import HeldOutLoss, loss_degradation_checks

    task = learning_task("regression", [], {})
    predictions, feedback = _logs(scale, 7, 300, seed=6)
    checks = loss_degradation_checks(
        predictions, feedback, {1: HeldOutLoss(loss=100.0, se=2.0)}, {1: task}, 7
    )
    assert checks and all(c.metric == "mean squared error" for c in checks)
    verdict = decide_degradation(checks, 0.10, 0.05, 28, 5000)
    assert (verdict.outcome == "degraded") == degraded, verdict.reason
    if degraded:
        assert "v1: live mean squared error" in verdict.reason and "held-out" in verdict.reason
