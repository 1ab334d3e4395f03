"""A column contract's value rules, stated once.

Ingestion (a landed batch), every serving endpoint (JSON records, columns, Arrow, files to score) and
the OpenAPI document read a column's rules from here, so a value refused in one place is refused in
every place, in the same words: ``column 'origin': one of ['EWR', 'JFK', 'LGA']``. Each rule is a
Polars expression, true where a value breaks it, evaluated for a whole column at once (a 10,000-row
batch costs about what one row does), beside the JSON Schema keywords that state it in the API
document. Nulls never break a value rule: whether a column may be null is a rule of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from tasks.core.config import ColumnContract, TimeConfig

# C0 and C1 control characters and the bidirectional overrides/isolates that make text display as
# something other than what it is (Trojan Source); as a Rust regex class for Polars and as the JSON
# Schema (ECMA) pattern of text free of them
CONTROL_CLASS = r"[\x00-\x1F\x7F-\x9F\x{202A}-\x{202E}\x{2066}-\x{2069}]"
CONTROL_FREE_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$"
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
    """One rule every non-null value of a column must meet."""

    column: str
    text: str  # what a value must be, as errors and reports say it
    broken: pl.Expr  # true where a value breaks the rule (null where the value is null)
    schema: dict[str, Any] = field(default_factory=dict)  # the JSON Schema keywords that state it


def value_rules(column: str, contract: ColumnContract) -> list[ValueRule]:
    """The value rules of ``column`` under ``contract``, in the order they are checked."""
    c = pl.col(column)
    rules: list[ValueRule] = []
    if contract.dtype in NUMERIC and contract.min is not None:
        low = _number(contract.min)
        rules.append(ValueRule(column, f">= {low}", c < contract.min, {"minimum": low}))
    if contract.dtype in NUMERIC and contract.max is not None:
        high = _number(contract.max)
        rules.append(ValueRule(column, f"<= {high}", c > contract.max, {"maximum": high}))
    if contract.allowed is not None:
        allowed = pl.Series(contract.allowed, strict=False)
        if contract.dtype in NUMERIC:
            allowed = allowed.cast(pl.Float64, strict=False)
            broken = ~c.cast(pl.Float64).is_in(allowed.implode())
        else:
            broken = ~c.cast(pl.String).is_in(allowed.cast(pl.String).implode())
        rules.append(ValueRule(column, f"one of {contract.allowed}", broken, {"enum": contract.allowed}))
    if contract.dtype == "string":
        if contract.pattern is not None:
            rules.append(
                ValueRule(
                    column,
                    f"matches pattern {contract.pattern!r}",
                    ~c.str.contains(contract.pattern),
                    {"pattern": contract.pattern},
                )
            )
        rules.append(
            ValueRule(
                column,
                f"at most {contract.max_length} characters",
                c.str.len_chars() > contract.max_length,
                {"maxLength": contract.max_length},
            )
        )
        if not contract.control_characters:
            rules.append(
                ValueRule(
                    column,
                    CONTROL_RULE,
                    c.str.contains(CONTROL_CLASS),
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


def broken_rules(frame: pl.DataFrame, rules: list[ValueRule], limit: int | None = None) -> list[BrokenRule]:
    """The rules of ``rules`` that some row of ``frame`` breaks, counted in one pass over the frame;
    with ``limit``, stop collecting examples after that many broken rules (serving needs the first)."""
    present = [r for r in rules if r.column in frame.columns]
    if not present or frame.height == 0:
        return []
    counts = frame.select(r.broken.fill_null(False).sum().alias(f"{i}") for i, r in enumerate(present)).row(0)
    out = []
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
