"""Data contracts: check a batch against its table's contract before anything is joined.

Column presence and types are checked here (so the message can name the column and show the values
that would not parse); nullability, ranges, allowed values and key uniqueness are checked by
pandera's Polars backend. The result is a ``ValidationReport`` that names table, batch, column,
rule and example rows: it goes to quarantine with the batch and into a Prefect table artifact.
"""

from __future__ import annotations

from typing import Any

import pandera.polars as pa
import polars as pl
from pydantic import BaseModel

from tasks.core.config import ColumnContract, TableContract
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
    checks = []
    if contract.min is not None:
        checks.append(pa.Check.ge(contract.min))
    if contract.max is not None:
        checks.append(pa.Check.le(contract.max))
    if contract.allowed is not None:
        checks.append(pa.Check.isin(contract.allowed))
    return pa.Column(POLARS_DTYPES[contract.dtype], checks=checks, nullable=contract.nullable)


def build_schema(contract: TableContract) -> pa.DataFrameSchema:
    """The pandera schema for a contract (types already cast; see ``cast_to_contract``)."""
    return pa.DataFrameSchema(
        {name: _column_schema(c) for name, c in contract.columns.items()},
        unique=contract.unique or None,
        strict=False,
    )


def _cast(series: pl.Series, dtype: str) -> pl.Series:
    target = POLARS_DTYPES[dtype]
    if series.dtype == target:
        return series
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
    df: pl.DataFrame, contract: TableContract, table: str, batch: str
) -> tuple[pl.DataFrame, list[ContractFailure]]:
    """Check columns exist, drop/flag extras, cast to the contract types; report what would not cast."""
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
        out = _cast(src, contract.columns[name].dtype)
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
    df: pl.DataFrame, contract: TableContract, table: str, batch: str
) -> tuple[pl.DataFrame, ValidationReport]:
    """Cast and check one batch; return the typed frame (contract columns only) and the report."""
    report = ValidationReport(table=table, batch=batch, rows=df.height)
    if df.height < max(contract.min_rows, 1):
        report.failures.append(
            ContractFailure(
                column=None,
                rule=f"empty batch: {df.height} rows, at least {max(contract.min_rows, 1)} needed",
                failing_rows=0,
                examples=[],
            )
        )
        return df, report
    typed, failures = cast_to_contract(df, contract, table, batch)
    report.failures.extend(failures)
    if any(f.column is None for f in failures):  # missing columns: pandera would only repeat it
        return typed, report
    try:
        build_schema(contract).validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        report.failures.extend(
            _failures_from_pandera(exc.failure_cases, typed, already={f.column for f in failures})
        )
    return typed, report


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
