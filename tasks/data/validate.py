"""Data contracts: check a batch against its table's contract before anything is joined.

Column presence and types are checked here (so the message can name the column and show the values
that would not parse); nullability and key uniqueness within the batch are checked by pandera's Polars
backend; the value rules (ranges, allowed values, patterns, text length, control characters) by the
expressions serving applies too (``tasks.core.contract_rules``), and row-level rules by Polars. The result
is a ``ValidationReport`` that names table, batch, column, rule and example rows: it goes to quarantine
with the batch and into a Prefect table artifact.

Types are strict: a typed source (Parquet, SQL, JSON) must deliver each column as its declared type
or one that converts without loss (any integer to int64, integers and floats to float64, whole floats
to int64, dates to datetimes). Text where a number, flag or date is declared fails the batch unless the
column says ``coerce: true``. Text sources (CSV files, hive partition values in paths) carry no types,
so their text is parsed as the declared type, and a value that does not parse fails the batch.
"""

from __future__ import annotations

from typing import Any

import pandera.polars as pa
import polars as pl
from pydantic import BaseModel

from tasks.core.config import ColumnContract, TableContract
from tasks.core.contract_rules import value_rules
from tasks.core.errors import BadInput

POLARS_DTYPES: dict[str, pl.DataType] = {
    "int64": pl.Int64(),
    "float64": pl.Float64(),
    "string": pl.String(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us", "UTC"),
}
MAX_EXAMPLES = 5


class ContractFailure(BaseModel):
    column: str | None
    rule: str
    failing_rows: int
    examples: list[Any]
    example_rows: list[dict[str, Any]] = []


class ValidationReport(BaseModel):
    table: str
    batch: str
    rows: int
    failures: list[ContractFailure] = []

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """One message a person can act on: table, batch, then a line per column and rule."""
        if self.ok:
            return f"{self.table} batch {self.batch}: {self.rows} rows passed the contract"
        lines = [f"table {self.table!r}, batch {self.batch}: {len(self.failures)} contract rule(s) failed"]
        for f in self.failures:
            where = f"column {f.column!r}" if f.column else "table"
            detail = (
                f" ({f.failing_rows} row(s); e.g. {f.examples[:3]})" if f.column or f.example_rows else ""
            )
            lines.append(f"  - {where}: {f.rule}{detail}")
            for row in f.example_rows[:2]:
                lines.append(f"      row: {row}")
        return "\n".join(lines)


class DataContractError(BadInput):
    """Batches broke their contract; they are already in quarantine when this is raised."""

    def __init__(self, reports: list[ValidationReport], quarantine_keys: list[str]):
        self.reports = reports
        self.quarantine_keys = quarantine_keys
        where = f"\nQuarantined (nothing deleted): {', '.join(quarantine_keys)}" if quarantine_keys else ""
        super().__init__(
            "\n".join(r.summary() for r in reports)
            + where
            + "\nFix the source (or the contract in the dataset config), or set DRIFTLOOP_ON_INVALID=skip"
            " (flow parameter on_invalid=skip) to train without these batches."
        )


def _column_schema(contract: ColumnContract) -> pa.Column:
    """Type and nullability; the value rules are ``tasks.core.contract_rules``' (shared with serving)."""
    return pa.Column(POLARS_DTYPES[contract.dtype], nullable=contract.nullable)


def build_schema(contract: TableContract) -> pa.DataFrameSchema:
    """The pandera schema for a contract (types already cast; see ``cast_to_contract``)."""
    return pa.DataFrameSchema(
        {name: _column_schema(c) for name, c in contract.columns.items()},
        unique=contract.unique or None,
        strict=False,
    )


def _lossless(source: pl.DataType, dtype: str) -> bool:
    """Whether values of ``source`` convert to ``dtype`` without reinterpretation (checked per value)."""
    if source == pl.Null:
        return True
    if dtype == "int64":
        return source.is_integer() or source.is_float()  # floats only when whole: checked in _cast
    if dtype == "float64":
        return source.is_integer() or source.is_float()
    if dtype == "datetime":
        return isinstance(source, pl.Datetime) or source == pl.Date
    if dtype == "date":
        return source == pl.Date
    return False


def _cast(series: pl.Series, dtype: str) -> pl.Series:
    target = POLARS_DTYPES[dtype]
    if series.dtype == target:
        return series
    if dtype == "datetime" and isinstance(series.dtype, pl.Datetime):
        tz = series.dtype.time_zone
        return (
            series.dt.replace_time_zone("UTC") if tz is None else series.dt.convert_time_zone("UTC")
        ).cast(target)
    if series.dtype == pl.String and dtype == "datetime":
        return series.str.to_datetime(strict=False, time_zone="UTC")
    if series.dtype == pl.String and dtype == "date":
        return series.str.to_date(strict=False)
    if dtype == "int64" and series.dtype.is_float():
        # 3.0 is an int, 3.5 is not
        whole = series.is_null() | series.is_nan() | (series == series.floor())
        return series.cast(pl.Int64, strict=False).zip_with(whole, pl.Series([None], dtype=pl.Int64))
    if dtype == "float64" and series.dtype.is_float():
        return series.cast(pl.Float64).fill_nan(None)
    return series.cast(target, strict=False)


def cast_to_contract(
    df: pl.DataFrame,
    contract: TableContract,
    table: str,
    batch: str,
    text_columns: set[str] | frozenset[str] = frozenset(),
) -> tuple[pl.DataFrame, list[ContractFailure]]:
    """Check columns exist, drop/flag extras, cast to the contract types; report what would not cast.

    ``text_columns`` came as text from a source without types (CSV, partition paths): they are parsed.
    Any other column must already have its declared type, or one that converts losslessly, unless its
    contract says ``coerce``."""
    failures: list[ContractFailure] = []
    missing = [c for c in contract.columns if c not in df.columns]
    if missing:
        failures.append(
            ContractFailure(
                column=None, rule=f"missing column(s) {missing}", failing_rows=df.height, examples=missing
            )
        )
    extra = [c for c in df.columns if c not in contract.columns]
    if extra and contract.extra_columns == "error":
        failures.append(
            ContractFailure(
                column=None,
                rule=f"unexpected column(s) {extra} (set extra_columns: ignore to drop them)",
                failing_rows=df.height,
                examples=extra,
            )
        )
    present = [c for c in contract.columns if c in df.columns]
    casted = {}
    for name in present:
        src = df[name]
        if src.dtype == pl.Float64 or src.dtype == pl.Float32:
            src = src.fill_nan(None)
        column = contract.columns[name]
        parse = name in text_columns or column.coerce
        if not parse and src.dtype != POLARS_DTYPES[column.dtype] and not _lossless(src.dtype, column.dtype):
            n_bad = int(src.is_not_null().sum())
            idx = src.is_not_null().arg_true().head(MAX_EXAMPLES).to_list()
            failures.append(
                ContractFailure(
                    column=name,
                    rule=f"type {column.dtype} (found {src.dtype}; the source must deliver "
                    f"{column.dtype}, or set coerce: true on the column to convert)",
                    failing_rows=n_bad,
                    examples=[src[i] for i in idx],
                    example_rows=[df.row(i, named=True) for i in idx[:2]],
                )
            )
            casted[name] = pl.Series(name, [None] * df.height, dtype=POLARS_DTYPES[column.dtype])
            continue
        out = _cast(src, column.dtype)
        bad = out.is_null() & src.is_not_null()
        n_bad = int(bad.sum())
        if n_bad:
            idx = bad.arg_true().head(MAX_EXAMPLES).to_list()
            failures.append(
                ContractFailure(
                    column=name,
                    rule=f"type {contract.columns[name].dtype} (found {src.dtype})",
                    failing_rows=n_bad,
                    examples=[src[i] for i in idx],
                    example_rows=[df.row(i, named=True) for i in idx[:2]],
                )
            )
        casted[name] = out
    return pl.DataFrame(casted), failures


def validate_batch(
    df: pl.DataFrame,
    contract: TableContract,
    table: str,
    batch: str,
    text_columns: set[str] | frozenset[str] = frozenset(),
    whole: bool = True,
) -> tuple[pl.DataFrame, ValidationReport]:
    """Cast and check one batch (``whole=False``: one chunk of it, whose size says nothing); return the
    typed frame (contract columns only) and the report."""
    report = ValidationReport(table=table, batch=batch, rows=df.height)
    too_few = too_few_rows(df.height, contract) if whole else None
    if too_few is not None:
        report.failures.append(too_few)
        return df, report
    typed, failures = cast_to_contract(df, contract, table, batch, text_columns)
    report.failures.extend(failures)
    if any(f.column is None for f in failures):  # missing columns: pandera would only repeat it
        return typed, report
    try:
        build_schema(contract).validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        report.failures.extend(
            _failures_from_pandera(exc.failure_cases, typed, already={f.column for f in failures})
        )
    report.failures.extend(_value_rule_failures(typed, contract))
    report.failures.extend(_rule_failures(typed, contract))
    return typed, report


def too_few_rows(rows: int, contract: TableContract) -> ContractFailure | None:
    """The batch-size rule: at least ``min_rows`` rows (and never none)."""
    if rows >= max(contract.min_rows, 1):
        return None
    return ContractFailure(
        column=None,
        rule=f"empty batch: {rows} rows, at least {max(contract.min_rows, 1)} needed",
        failing_rows=0,
        examples=[],
    )


def merge_failures(failures: list[ContractFailure]) -> list[ContractFailure]:
    """One failure per column and rule (a batch validated chunk by chunk reports each chunk's): rows
    added up, the first examples kept."""
    merged: dict[tuple[str | None, str], ContractFailure] = {}
    for f in failures:
        key = (f.column, f.rule)
        if key not in merged:
            merged[key] = f.model_copy(deep=True)
            continue
        m = merged[key]
        m.failing_rows += f.failing_rows
        m.examples = [*m.examples, *f.examples][:MAX_EXAMPLES]
        m.example_rows = [*m.example_rows, *f.example_rows][:MAX_EXAMPLES]
    return list(merged.values())


def _failing(df: pl.DataFrame, column: str | None, rule: str, bad: pl.Series) -> ContractFailure | None:
    n_bad = int(bad.sum())
    if not n_bad:
        return None
    idx = bad.arg_true().head(MAX_EXAMPLES).to_list()
    return ContractFailure(
        column=column,
        rule=rule,
        failing_rows=n_bad,
        examples=[df[column][i] for i in idx] if column else [],
        example_rows=[df.row(i, named=True) for i in idx[:2]],
    )


def _value_rule_failures(df: pl.DataFrame, contract: TableContract) -> list[ContractFailure]:
    """Ranges, allowed values, patterns, text length and control characters: the rules serving applies
    to the same columns, in the same words (``tasks.core.contract_rules``), in one pass."""
    rules = [r for name, c in contract.columns.items() if name in df.columns for r in value_rules(name, c)]
    if not rules:
        return []
    try:
        broken = df.select(r.broken.fill_null(False).alias(str(i)) for i, r in enumerate(rules))
    except pl.exceptions.PolarsError as exc:  # Python's re accepted a pattern, Polars' regex did not
        patterns = {r.column: r.text for r in rules if r.text.startswith("matches pattern")}
        raise BadInput(f"contract pattern(s) {patterns} cannot be evaluated by Polars: {exc}") from None
    out = []
    for i, rule in enumerate(rules):
        failure = _failing(df, rule.column, rule.text, broken[str(i)])
        if failure:
            out.append(failure)
    return out


def _rule_failures(df: pl.DataFrame, contract: TableContract) -> list[ContractFailure]:
    """Row-level rules across columns; a row fails when its rule is false (NULL passes, as in SQL)."""
    out = []
    for name, rule in contract.rules.items():
        try:
            holds = df.select(pl.sql_expr(rule).cast(pl.Boolean)).to_series()
        except Exception as exc:  # noqa: BLE001 - polars raises several SQL error types
            raise BadInput(f"contract rule {name!r} ({rule}) cannot be evaluated: {exc}") from None
        failure = _failing(df, None, f"rule {name}: {rule}", ~holds.fill_null(True))
        if failure:
            out.append(failure)
    return out


def _failures_from_pandera(
    cases: pl.DataFrame, df: pl.DataFrame, already: set[str | None]
) -> list[ContractFailure]:
    out = []
    cases = cases.with_columns(pl.col("column").fill_null(""))
    for (column, check), group in cases.group_by(["column", "check"], maintain_order=True):
        if check.startswith("dtype(") and column in already:
            continue  # the cast step already named this column's type problem
        idx = [i for i in group["index"].to_list() if i is not None][:MAX_EXAMPLES]
        out.append(
            ContractFailure(
                column=column or None,
                rule="duplicate key rows" if "uniqueness" in check else check,
                failing_rows=group.height,
                examples=group["failure_case"].head(MAX_EXAMPLES).to_list(),
                example_rows=[df.row(i, named=True) for i in idx[:2]],
            )
        )
    return out
