"""A column contract's value rules, stated once.

Ingestion (a landed batch), every serving endpoint (JSON records, columns, Arrow, files to score) and
the OpenAPI document read a column's rules from here, so a value refused in one place is refused in
every place, in the same words: ``column 'origin': one of ['EWR', 'JFK', 'LGA']``. Each rule is a
Polars expression, true where a value breaks it, evaluated for a whole column at once (a 10,000-row
batch costs about what one row does), beside the JSON Schema keywords that state it in the API
document. Nulls never break a value rule: whether a column may be null is a rule of its own.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable
from zoneinfo import ZoneInfo

import polars as pl

from tasks.core.config import ColumnContract, TimeConfig

# C0 and C1 control characters and the bidirectional overrides/isolates that make text display as
# something other than what it is (Trojan Source); as a Rust regex class for Polars and as the JSON
# Schema (ECMA) pattern of text free of them
CONTROL_CLASS = r"[\x00-\x1F\x7F-\x9F\x{202A}-\x{202E}\x{2066}-\x{2069}]"
CONTROL_FREE_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # CONTROL_CLASS for Python
CONTROL_RULE = "no control or bidirectional-override characters"
# what the time column's ``naive: refuse`` asks of a time a caller sends
NAIVE_RULE = "a time with its UTC offset, e.g. 2013-07-01T09:00:00Z (time.naive: refuse)"
NUMERIC = ("int64", "float64")
# an ISO 8601 time that says its offset from UTC ends in Z or +HH:MM / -HHMM / +HH
HAS_OFFSET = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
_HAS_OFFSET = re.compile(HAS_OFFSET)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class ValueRule:
    """One rule every non-null value of a column must meet, said once and evaluated two ways: as a
    Polars expression over a whole column (batches, ingestion) and as a Python predicate per value (a
    single request, where a Polars query's fixed cost, ~1.8 ms for 49 rules, would dominate). Both
    come from the same contract field here, and a test holds them equal on hostile values."""

    column: str
    text: str  # what a value must be, as errors and reports say it
    broken: pl.Expr  # true where a value breaks the rule (null where the value is null)
    breaks: Callable[[Any], bool]  # the same, for one non-null value
    schema: dict[str, Any] = field(default_factory=dict)  # the JSON Schema keywords that state it


def _misses(pattern: str) -> Callable[[str], bool]:
    """Whether one value does not match ``pattern``, by Polars' regex engine (as the column check),
    remembered for the last 4,096 values: the values of a categorical column repeat, and a Polars call
    costs ~0.2 ms where a cached answer costs nothing."""

    @functools.lru_cache(maxsize=4096)
    def misses(value: str) -> bool:
        return not pl.Series([value], dtype=pl.String).str.contains(pattern).item()

    return misses


def value_rules(column: str, contract: ColumnContract) -> list[ValueRule]:
    """The value rules of ``column`` under ``contract``, in the order they are checked."""
    c = pl.col(column)
    rules: list[ValueRule] = []
    if contract.dtype in NUMERIC and contract.min is not None:
        low = _number(contract.min)
        rules.append(ValueRule(column, f">= {low}", c < low, lambda v: v < low, {"minimum": low}))
    if contract.dtype in NUMERIC and contract.max is not None:
        high = _number(contract.max)
        rules.append(ValueRule(column, f"<= {high}", c > high, lambda v: v > high, {"maximum": high}))
    if contract.allowed is not None:
        if contract.dtype in NUMERIC:
            numbers = {float(a) for a in contract.allowed}
            broken = ~c.cast(pl.Float64).is_in(pl.Series(sorted(numbers), dtype=pl.Float64).implode())
            breaks: Callable[[Any], bool] = lambda v: float(v) not in numbers  # noqa: E731
        else:
            texts = {str(a) for a in contract.allowed}
            broken = ~c.cast(pl.String).is_in(pl.Series(sorted(texts), dtype=pl.String).implode())
            breaks = lambda v: str(v) not in texts  # noqa: E731
        rules.append(
            ValueRule(column, f"one of {contract.allowed}", broken, breaks, {"enum": contract.allowed})
        )
    if contract.dtype == "string":
        if contract.pattern is not None:
            pattern = contract.pattern  # Polars' (Rust) regex for both: Python's differs (its $ also
            # matches before a final newline), and one engine means one answer
            rules.append(
                ValueRule(
                    column,
                    f"matches pattern {pattern!r}",
                    ~c.str.contains(pattern),
                    _misses(pattern),
                    {"pattern": pattern},
                )
            )
        longest = contract.max_length
        rules.append(
            ValueRule(
                column,
                f"at most {longest} characters",
                c.str.len_chars() > longest,
                lambda v: len(v) > longest,
                {"maxLength": longest},
            )
        )
        if not contract.control_characters:
            rules.append(
                ValueRule(
                    column,
                    CONTROL_RULE,
                    c.str.contains(CONTROL_CLASS),
                    lambda v: _CONTROL.search(v) is not None,
                    {"allOf": [{"pattern": CONTROL_FREE_PATTERN}]},
                )
            )
    return rules


def json_schema(contract: ColumnContract) -> dict[str, Any]:
    """The JSON Schema keywords of every value rule of ``contract`` (for a request field)."""
    out: dict[str, Any] = {}
    for rule in value_rules("_", contract):
        for key, value in rule.schema.items():
            out[key] = [*out.get(key, []), *value] if key == "allOf" else value
    return out


@dataclass(frozen=True)
class BrokenRule:
    """The first value rule a frame breaks: which, how often, with a few of the values."""

    column: str
    rule: str
    rows: int
    examples: list[Any]

    def message(self) -> str:
        return (
            f"column {self.column!r}: rule {self.rule} broken by {self.rows} value(s), "
            f"e.g. {[_shown(v) for v in self.examples]}"
        )


def _shown(value: Any) -> Any:
    """A value as an error may quote it: long text cut, control characters escaped."""
    if not isinstance(value, str):
        return value
    shown = value.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 40 else f"{shown[:37]}..."


SMALL_FRAME_ROWS = 32  # up to this many rows, rules are checked per value in Python (no query cost)


def broken_rules(frame: pl.DataFrame, rules: list[ValueRule], limit: int | None = None) -> list[BrokenRule]:
    """The rules of ``rules`` that some row of ``frame`` breaks: counted in one Polars pass over the
    frame, or per value for a small one (the same rules, see ``ValueRule``); with ``limit``, stop after
    that many broken rules (serving needs the first)."""
    columns = set(frame.columns)
    present = [r for r in rules if r.column in columns]
    if not present or frame.height == 0:
        return []
    out = []
    if frame.height <= SMALL_FRAME_ROWS:
        values = {name: frame[name].to_list() for name in {r.column for r in present}}
        for rule in present:
            bad = [v for v in values[rule.column] if v is not None and rule.breaks(v)]
            if bad:
                out.append(BrokenRule(rule.column, rule.text, len(bad), bad[:3]))
                if limit is not None and len(out) >= limit:
                    break
        return out
    counts = frame.select(r.broken.fill_null(False).sum().alias(f"{i}") for i, r in enumerate(present)).row(0)
    for rule, count in zip(present, counts):
        if not count:
            continue
        examples = frame.filter(rule.broken.fill_null(False))[rule.column].head(3).to_list()
        out.append(BrokenRule(rule.column, rule.text, int(count), examples))
        if limit is not None and len(out) >= limit:
            break
    return out


# --- times sent by callers --------------------------------------------------------------------------
def naive_zone(time: TimeConfig) -> tzinfo | None:
    """The zone a time without an offset is read in (None: such times are refused)."""
    if time.naive == "refuse":
        return None
    return timezone.utc if time.naive == "utc" else ZoneInfo(time.timezone)


def aware(value: datetime, time: TimeConfig) -> datetime:
    """A caller's time with its zone: as sent when it has one, else per ``time.naive`` (a ValueError
    naming the rule when naive times are refused)."""
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value
    zone = naive_zone(time)
    if zone is None:
        raise ValueError(NAIVE_RULE)
    return value.replace(tzinfo=zone)


def text_has_offset(text: str) -> bool:
    return bool(_HAS_OFFSET.search(text.strip()))


def times_from_text(series: pl.Series, time: TimeConfig) -> pl.Series:
    """ISO 8601 text as UTC datetimes, each read per its own offset, or per ``time.naive`` when it has
    none (refused: a ValueError naming the rule and how many). Text that is not a time raises too."""
    has_offset = series.str.strip_chars().str.contains(HAS_OFFSET).fill_null(True)
    zone = naive_zone(time)
    naive_rows = int((~has_offset).sum())
    if naive_rows and zone is None:
        examples = series.filter(~has_offset).head(3).to_list()
        raise ValueError(f"{NAIVE_RULE} ({naive_rows} value(s) are not, e.g. {examples})")
    with_offset = series.zip_with(has_offset, pl.Series([None], dtype=pl.String))
    parsed = with_offset.str.to_datetime(time_zone="UTC", strict=True)
    if naive_rows:
        naive = series.zip_with(~has_offset, pl.Series([None], dtype=pl.String))
        local = naive.str.to_datetime(strict=True).dt.replace_time_zone(str(zone)).dt.convert_time_zone("UTC")
        parsed = parsed.zip_with(has_offset, local)
    return parsed.cast(pl.Datetime("us", "UTC"))


def times_from_datetimes(series: pl.Series, time: TimeConfig) -> pl.Series:
    """Datetimes (an Arrow batch, a Parquet file) as UTC: zoned ones converted, naive ones per
    ``time.naive``."""
    if isinstance(series.dtype, pl.Datetime) and series.dtype.time_zone is not None:
        return series.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    zone = naive_zone(time)
    if zone is None and series.null_count() < series.len():
        raise ValueError(f"{NAIVE_RULE} (a datetime column without a time zone)")
    as_datetime = series.cast(pl.Datetime("us"))
    return as_datetime.dt.replace_time_zone(str(zone or "UTC")).dt.convert_time_zone("UTC")
