"""The one feature definition: fitted on training data, saved with the model, used everywhere.

``fit_feature_transform`` learns what must come from training data alone (fill values, clip bounds,
category levels); the resulting ``FittedTransform`` is plain JSON saved with each model version and
applied identically by training, evaluation, the serving endpoint and monitoring. Category codes are
an explicit level -> code map (never Polars' process-local physical codes), so a model trained in one
process scores correctly in another.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any

import numpy as np
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


class FittedTransform(BaseModel):
    """Fitted feature state. JSON-serialisable; ``apply`` turns raw rows into the model matrix."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    spec: FeatureSpec
    fill: dict[str, float]
    clip: dict[str, tuple[float, float]]
    categories: dict[str, list[str]]

    @property
    def feature_names(self) -> list[str]:
        return self.spec.feature_names

    @property
    def categorical_indices(self) -> list[int]:
        names = self.feature_names
        return [names.index(c) for c in self.spec.categorical]

    @cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        names = self.spec.numeric_names
        return (
            np.array([self.clip[c][0] for c in names]),
            np.array([self.clip[c][1] for c in names]),
            np.array([self.fill[c] for c in names]),
        )

    @cached_property
    def _category_maps(self) -> list[tuple[str, pl.Series, pl.Series]]:
        return [
            (
                c,
                pl.Series(self.categories[c], dtype=pl.String),
                pl.Series(range(len(self.categories[c])), dtype=pl.Float64),
            )
            for c in self.spec.categorical
        ]

    def _exprs(self, time_dtype: pl.DataType | None) -> list[pl.Expr]:
        key = str(time_dtype)
        cache = self.__dict__.setdefault("_expr_cache", {})
        if key not in cache:  # building expressions costs more than running them on one row
            cache[key] = [
                *self.spec.numeric_exprs(time_dtype),
                *(
                    pl.col(c)
                    .cast(pl.String)
                    .replace_strict(old, new, default=None, return_dtype=pl.Float64)
                    .alias(c)
                    for c, old, new in self._category_maps
                ),
            ]
        return cache[key]

    def to_matrix(self, frame: pl.LazyFrame | pl.DataFrame) -> np.ndarray:
        """Raw rows -> the model matrix (float64, NaN = missing), columns in ``feature_names`` order.

        Polars computes the columns in one pass; clipping and filling are vectorised over the matrix
        (the same arithmetic as column by column, at a fraction of the per-expression overhead, which
        matters when one request is one row).
        """
        df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        self.spec.check_columns(df.schema)
        X = df.select(self._exprs(self.spec.time_dtype(df.schema))).to_numpy().astype(np.float64, copy=False)
        if not X.flags.writeable:
            X = X.copy()
        lo, hi, fill = self._bounds
        n = len(lo)
        num = np.clip(X[:, :n], lo, hi)
        X[:, :n] = np.where(np.isnan(num), fill, num)
        return X

    def apply(self, frame: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
        """The model matrix as a frame with named columns (for inspection and tests)."""
        return pl.DataFrame(self.to_matrix(frame), schema=self.feature_names, orient="row")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "FittedTransform":
        return cls.model_validate_json(text)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[
            :16
        ]


def fit_feature_transform(train: pl.DataFrame | pl.LazyFrame, spec: FeatureSpec) -> FittedTransform:
    """Learn fill values (medians), clip bounds (quantiles) and category levels from training rows."""
    df = spec.derive(train).collect()
    if df.height == 0:
        raise BadInput("cannot fit the feature transform on zero rows")
    lo_q, hi_q = spec.clip_quantiles
    stats = df.select(
        *(
            pl.col(c).cast(pl.Float64).fill_nan(None).median().alias(f"{c}|median")
            for c in spec.numeric_names
        ),
        *(
            pl.col(c).cast(pl.Float64).fill_nan(None).quantile(lo_q).alias(f"{c}|lo")
            for c in spec.numeric_names
        ),
        *(
            pl.col(c).cast(pl.Float64).fill_nan(None).quantile(hi_q).alias(f"{c}|hi")
            for c in spec.numeric_names
        ),
    ).row(0, named=True)

    def num(v: Any, default: float) -> float:
        return default if v is None or np.isnan(v) else float(v)

    fill = {c: num(stats[f"{c}|median"], 0.0) for c in spec.numeric_names}
    clip = {}
    for c in spec.numeric_names:
        lo, hi = num(stats[f"{c}|lo"], -np.inf), num(stats[f"{c}|hi"], np.inf)
        clip[c] = (lo, hi) if lo <= hi else (hi, lo)
    categories = {}
    for c in spec.categorical:
        counts = (
            df.select(pl.col(c).cast(pl.String))
            .drop_nulls()
            .group_by(c)
            .len()
            .filter(pl.col("len") >= spec.min_category_count)
            .sort(["len", c], descending=[True, False])
        )
        categories[c] = counts[c].to_list()
    return FittedTransform(spec=spec, fill=fill, clip=clip, categories=categories)
