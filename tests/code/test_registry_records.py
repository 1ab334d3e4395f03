"""Registry records as a service elsewhere reads them back: what could not be measured, who was champion."""

from __future__ import annotations

import json

from tasks.registry.versions import AliasChange, AliasDoc, NewVersion


def test_a_metric_that_could_not_be_measured_is_left_out_not_written_as_null():
    """A model trained with cv_folds 0 has no CV mean (NaN): its record must read back (a packaged bento
    validates it), so the metric is left out rather than becoming null, which no float accepts."""
    record = NewVersion(
        snapshot_id="s",
        git_commit="g",
        params={},
        metrics={"test_auc": 0.71, "cv_auc_mean": float("nan")},
        test_window=("a", "b"),
        feature_names=["x"],
        input_columns=["x"],
    )
    assert record.metrics == {"test_auc": 0.71}
    written = json.loads(record.model_dump_json())
    written["metrics"]["cv_auc_mean"] = None  # a record written before: NaN dumped as null
    assert NewVersion.model_validate(written).metrics == {"test_auc": 0.71}


def test_past_champions_are_the_fallbacks_most_recent_first():
    def change(version, previous):
        return AliasChange(
            alias="champion", version=version, previous=previous, at="t", reason="r", actor="a"
        )

    doc = AliasDoc(
        aliases={"champion": 4},
        history=[change(1, None), change(2, 1), change(3, 2), change(2, 3), change(4, 2)],
    )
    assert doc.past_champions() == [2, 3, 1]
    assert AliasDoc().past_champions() == []
