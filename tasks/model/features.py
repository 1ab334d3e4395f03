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

from tasks.core.errors import BadInput
from tasks.core.feature_spec import FeatureSpec
from tasks.core.target import LearningTask


class FittedTransform(BaseModel):
    """Fitted feature state. JSON-serialisable; ``apply`` turns raw rows into the model matrix."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    spec: FeatureSpec
    fill: dict[str, float]
    clip: dict[str, tuple[float, float]]
    categories: dict[str, list[str]]
    # the target's kind and classes: how the model's output reads back as an answer (versions saved
    # before other kinds existed are yes/no)
    task: LearningTask = LearningTask()

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
