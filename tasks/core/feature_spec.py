"""What the features are, before anything is fitted: the config's feature definition and time parsing.

``FeatureSpec`` (the part of the dataset config that defines features) and ``parse_time`` sit in the
core because every stage needs them: data reads the time column when it snapshots, the model fits the
transform from the spec, serving builds the request schema from it, monitoring names inputs by it.
The fitted transform itself is the model stage's (``tasks.model.features``).
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict

from tasks.core.config import DatasetConfig, TimeConfig
from tasks.core.errors import BadInput

TIME_PARTS = {
    "hour": lambda e: e.dt.hour(),
    "weekday": lambda e: e.dt.weekday(),
    "month": lambda e: e.dt.month(),
    "day": lambda e: e.dt.day(),
    "minute": lambda e: e.dt.minute(),
}


def parse_time(column: str, time: TimeConfig, dtype: pl.DataType) -> pl.Expr:
    """The time column as a UTC datetime, whether it arrives as text or as a datetime."""
    col = pl.col(column)
    if dtype == pl.String:
        return col.str.to_datetime(format=time.format, time_zone="UTC", strict=False)
    if isinstance(dtype, pl.Datetime):
        return col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us", "UTC"))
    raise BadInput(f"time column {column!r} has type {dtype}; expected text or a datetime")


class FeatureSpec(BaseModel):
    """The part of the dataset config that defines features (what the transform needs)."""

    model_config = ConfigDict(frozen=True)

    numeric: list[str]
    categorical: list[str]
    derived: dict[str, str]
    time: TimeConfig | None
    clip_quantiles: tuple[float, float]
    min_category_count: int

    @classmethod
    def from_config(cls, config: DatasetConfig) -> "FeatureSpec":
        f = config.features
        return cls(
            numeric=f.numeric,
            categorical=f.categorical,
            derived=f.derived,
            time=config.time,
            clip_quantiles=f.clip_quantiles,
            min_category_count=f.min_category_count,
        )

    @property
    def time_part_names(self) -> list[str]:
        return [f"{self.time.column}_{p}" for p in self.time.parts] if self.time else []

    @property
    def numeric_names(self) -> list[str]:
        """Every numeric model column: raw numerics, derived, then calendar parts."""
        return [*self.numeric, *self.derived, *self.time_part_names]

    @property
    def feature_names(self) -> list[str]:
        return [*self.numeric_names, *self.categorical]

    @property
    def input_columns(self) -> list[str]:
        """Raw columns a caller must provide: numerics, categoricals, time, and what derived use."""
        cols = [*self.numeric, *self.categorical, *([self.time.column] if self.time else [])]
        for expr in self.derived.values():
            cols.extend(pl.sql_expr(expr).meta.root_names())
        return list(dict.fromkeys(cols))

    def check_columns(self, schema: Any) -> None:
        missing = [c for c in self.input_columns if c not in schema]
        if missing:
            raise BadInput(f"input is missing column(s) {missing}; the model needs {self.input_columns}")

    def time_dtype(self, schema: Any) -> pl.DataType | None:
        return schema[self.time.column] if self.time else None

    def numeric_exprs(self, time_dtype: pl.DataType | None) -> list[pl.Expr]:
        """Raw numeric, derived and calendar columns as Float64 (before fill/clip), named, in order."""
        calendar = []
        if self.time is not None:
            local = parse_time(self.time.column, self.time, time_dtype).dt.convert_time_zone(
                self.time.timezone
            )
            calendar = [
                TIME_PARTS[p](local).cast(pl.Float64).alias(f"{self.time.column}_{p}")
                for p in self.time.parts
            ]
        return [
            *(pl.col(c).cast(pl.Float64, strict=False).alias(c) for c in self.numeric),
            *(pl.sql_expr(e).cast(pl.Float64, strict=False).alias(n) for n, e in self.derived.items()),
            *calendar,
        ]

    def derive(self, frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
        """Numeric model columns (unfitted) plus the raw categoricals: what fitting looks at."""
        lf = frame.lazy()
        schema = lf.collect_schema()
        self.check_columns(schema)
        return lf.select(*self.numeric_exprs(self.time_dtype(schema)), *(pl.col(c) for c in self.categorical))
