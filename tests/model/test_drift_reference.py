"""The drift reference on controlled data: noise calibrated on rows held apart, scores of windows from
the same population and of a shifted one; the held-out ROC-AUC a version's degradation fell back on."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from tasks.core.profile import load_profile, profile_frame
from tasks.core.settings import PROJECT_DIR, Settings
from tasks.monitoring.drift import calibrate_reference, drift_scores


def _population(n: int, seed: int, shift: float = 0.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "MOSTYPE": rng.integers(1, 12, n),
            "MAANTHUI": rng.normal(2 + shift, 1, n),
            "prediction": rng.beta(2, 8, n),
        }
    )


@pytest.fixture(scope="module")
def reference():
    config = Settings().load_dataset(PROJECT_DIR / "configs" / "caravan.yaml")
    held_out = _population(4_000, seed=1)
    training = _population(20_000, seed=2).lazy()
    importance = {"MOSTYPE": 0.5, "MAANTHUI": 0.5}
    _, ref = calibrate_reference(held_out, ("held-out rows", ""), training, config, importance, seed=3)
    return config, ref


def test_noise_is_calibrated_on_rows_held_apart_at_every_window_size(reference):
    config, ref = reference
    # windows of half the held-out rows at most come from the half held apart: 4,000 rows -> <= 1,000
    assert ref.calibration_sizes == [200, 1000]  # min_rows (200) and the configured sizes that fit
    assert all(c.noise > 0 for c in ref.columns.values())


@pytest.mark.parametrize("rows", [200, 1_000, 5_000])
def test_windows_of_the_same_population_do_not_drift_and_a_shifted_one_does(reference, rows):
    config, ref = reference
    for seed in range(5):  # other rows of the same population: nothing drifts
        window = load_profile(profile_frame(_population(rows, seed=100 + seed)).serialize())
        scores = drift_scores(window, ref, rows, config.monitoring)
        assert not [d.column for d in scores if d.drifted], (rows, seed)
    shifted = load_profile(profile_frame(_population(rows, seed=200, shift=1.0)).serialize())
    drifted = [d.column for d in drift_scores(shifted, ref, rows, config.monitoring) if d.drifted]
    assert drifted == ["MAANTHUI"]


def test_held_out_auc_carries_its_standard_error_from_the_test_rows():
    from flows.steps.monitoring import held_out_auc
    from tasks.model.evaluate import hanley_mcneil_se

    full = held_out_auc(
        SimpleNamespace(metrics={"roc_auc": 0.72, "test_rows": 10_000.0, "positive_rate": 0.2})
    )
    assert full.roc_auc == 0.72 and full.se == pytest.approx(hanley_mcneil_se(0.72, 2_000, 8_000))
    older = held_out_auc(SimpleNamespace(metrics={"roc_auc": 0.72}))  # registered before test_rows
    assert older.se == 0.0
    assert held_out_auc(SimpleNamespace(metrics={})) is None
