"""Batch inputs (an Arrow body, a file to score) are held to the same strict types as a JSON request:
nothing is converted silently, every problem is a BadInput naming the column."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from tasks.core.errors import BadInput
from tasks.core.settings import Settings
from tasks.serving.schema import conform_inputs, input_contracts

CONFIG = Settings().load_dataset()


def _rows() -> pl.DataFrame:
    row = {
        "carrier": "UA",
        "origin": "EWR",
        "dest": "IAH",
        "distance": 1400,
        "sched_dep_time": 515,
        "sched_arr_time": 819,
        "year": 2013,
        "time_hour": "2013-01-01T10:00:00Z",
    }
    return pl.DataFrame([row, {**row, "distance": 900}])


def test_well_typed_rows_pass_and_text_is_parsed_strictly():
    out = conform_inputs(_rows(), CONFIG)
    assert out.columns == list(input_contracts(CONFIG)) and out["distance"].to_list() == [1400, 900]
    assert out["time_hour"][0] == datetime(2013, 1, 1, 10, tzinfo=timezone.utc)
    text = _rows().with_columns(pl.col("distance").cast(pl.String))
    as_text = conform_inputs(text, CONFIG, parse_text=True)
    assert as_text["distance"].to_list() == [1400, 900]  # a CSV file: text, cast strictly
    with pytest.raises(BadInput, match="column 'distance'"):  # a typed format (Arrow): "1400" is no number
        conform_inputs(text, CONFIG)


@pytest.mark.parametrize(
    "column, value, dtype",
    [
        ("distance", 1400.5, pl.Float64),  # would truncate to 1400
        ("distance", True, pl.Boolean),  # a flag is not a distance
        ("time_hour", 1357034400, pl.Int64),  # Unix seconds would be read as microseconds
        ("carrier", 7, pl.Int64),  # a number is not a carrier code
        ("distance", "1,400", pl.String),  # text that is not a number (nor a number as text)
    ],
)
def test_nothing_is_converted_silently(column, value, dtype):
    rows = _rows().with_columns(pl.lit(value, dtype=dtype).alias(column))
    with pytest.raises(BadInput, match=f"column '{column}'"):
        conform_inputs(rows, CONFIG)


def test_contracts_and_unknown_columns_are_named():
    with pytest.raises(BadInput, match="column 'distance': rule >= 0 broken by 2 value"):
        conform_inputs(_rows().with_columns(pl.lit(-5).alias("distance")), CONFIG)
    with pytest.raises(BadInput, match="unknown column"):
        conform_inputs(_rows().with_columns(pl.lit(1).alias("distnce")), CONFIG)
    assert (
        conform_inputs(_rows().with_columns(pl.lit(1).alias("row_id")), CONFIG, allow_extra=True).height == 2
    )
    with pytest.raises(BadInput, match="missing required column"):
        conform_inputs(_rows().drop("carrier"), CONFIG)


def test_each_value_rule_says_the_same_per_value_as_per_column():
    """A rule is checked per value for a single request and by Polars for a batch: both must refuse
    exactly the same values, hostile text included."""
    from tasks.core.config import ColumnContract
    from tasks.core.contract_rules import SMALL_FRAME_ROWS, broken_rules, value_rules

    cases = {
        "code": (
            ColumnContract(dtype="string", pattern="^[A-Z0-9]{2}$", max_length=5),
            ["UA", "ua", "U\x00", "U\u202e", "ABCDEFG", "", "Ü1", "9E", " UA", "UA\n"],
        ),
        "answer": (
            ColumnContract(dtype="string", allowed=["Yes", "No"]),
            ["Yes", "YES", "maybe", "No\t", "N\u2066o"],
        ),
        "minutes": (
            ColumnContract(dtype="int64", min=0, max=2359, allowed=[0, 5, 2359]),
            [-1, 0, 5, 6, 2359, 2360],
        ),
        "ratio": (ColumnContract(dtype="float64", min=-1.5, max=2.5), [-2.0, -1.5, 0.0, 2.5, 2.6]),
    }
    for name, (contract, values) in cases.items():
        batch = pl.DataFrame({name: values * (SMALL_FRAME_ROWS // len(values) + 1)})
        rules = value_rules(name, contract)
        for rule in rules:
            by_column = batch.select(rule.broken.fill_null(False))[name].to_list()[: len(values)]
            by_value = [rule.breaks(v) for v in values]
            assert by_column == by_value, (name, rule.text, values)
        small = broken_rules(pl.DataFrame({name: values}), rules)
        large = broken_rules(batch.head(len(values)).vstack(batch.head(SMALL_FRAME_ROWS)), rules)
        assert [b.rule for b in small] == [b.rule for b in large] and small, name
