"""whylogs profiles: the reference profile of a model's training inputs and predictions.

whylogs 1.6 is unmaintained upstream and predates numpy 2; ``import_whylogs`` applies the one shim
it needs (``np.unicode_``) before the first import. The profile stored
with each model version is what monitoring compares live traffic against.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import polars as pl


def import_whylogs() -> Any:
    """Import whylogs with the numpy-2 shim and the vectorised numeric split. (Its telemetry is turned
    off by ``WHYLOGS_NO_ANALYTICS``, set with the other library variables by the run context.)"""
    if not hasattr(np, "unicode_"):
        np.unicode_ = np.str_  # removed in numpy 2; whylogs 1.6 still references it
    import whylogs as why
    from whylogs.core.preprocessing import PreprocessedColumn

    if getattr(PreprocessedColumn._pandas_split, "__name__", "") != "_vectorised_pandas_split":
        original = PreprocessedColumn._pandas_split
        PreprocessedColumn._pandas_split = _make_vectorised_split(original)
    return why


MAX_FREQUENT_ITEM_SIZE = 128  # whylogs' default: frequent-item strings are cut to this length


def _make_vectorised_split(original: Any) -> Any:
    """whylogs 1.6 splits a numeric pandas column with per-element Python lambdas (``np.isinf`` and
    ``is_number`` called once per value): ~95% of its profiling time on this data. This does the same
    split for numeric, non-bool columns with whole-array numpy operations and gives every other kind of
    column to the original. ``tests/code/test_profile_shim.py`` checks both give identical profiles."""
    import pandas as pd
    import pandas.api.types as pdc

    def _vectorised_pandas_split(self: Any, series: Any, parse_numeric_string: bool = False) -> None:
        if (
            isinstance(series, pd.Series)
            and isinstance(series.dtype, pd.StringDtype)
            and series.dtype.na_value is np.nan
        ):
            # pandas' text columns: missing values are NaN, so each null is a NaN number, the rest strings
            missing = series.isna().to_numpy()
            self.null_count = self.nan_count = int(missing.sum())
            if self.null_count < len(series):
                present = series[~missing]
                if int(present.str.len().max()) <= MAX_FREQUENT_ITEM_SIZE:
                    # as a numpy array the strings are materialised once and not truncated item by item
                    self.numpy.strings = present.to_numpy(dtype=object)
                else:
                    self.pandas.strings = present
            return None
        if (
            series is None
            or not isinstance(series, pd.Series)
            or not pdc.is_numeric_dtype(series.dtype)
            or pdc.is_bool_dtype(series.dtype)
            or pdc.is_extension_array_dtype(series.dtype)
        ):
            return original(self, series, parse_numeric_string)
        values = series.to_numpy()
        if pdc.is_float_dtype(series.dtype):
            nan = np.isnan(values)
            self.null_count = int(nan.sum())
            self.nan_count = self.null_count  # in a float column every missing value is a NaN number
            floats = values[~nan].astype(float, copy=False)
            self.inf_count = int(np.isinf(floats).sum())
            self.numpy.floats = floats
        else:
            self.null_count = 0
            self.numpy.ints = values.astype(int, copy=False)

    _vectorised_pandas_split.original = original
    return _vectorised_pandas_split


def monitoring_schema() -> Any:
    """Only the metrics drift and quality checks read: counts and types everywhere, distribution
    (KS; min/max/mean/quantiles) for numbers, frequent items (chi-square) and cardinality for text.
    whylogs' standard resolver adds numeric cardinality and frequent items, unicode ranges and text
    lengths, which nothing here reads."""
    import_whylogs()
    from whylogs.core.datatypes import AnyType, Fractional, Integral, String
    from whylogs.core.metrics import StandardMetric
    from whylogs.core.resolvers import COLUMN_METRICS, MetricSpec, ResolverSpec
    from whylogs.core.schema import DeclarativeSchema

    def specs(*metrics: Any) -> list:
        return [*COLUMN_METRICS, *(MetricSpec(m.value) for m in metrics)]

    return DeclarativeSchema(
        [
            ResolverSpec(
                column_type=Integral, metrics=specs(StandardMetric.distribution, StandardMetric.ints)
            ),
            ResolverSpec(column_type=Fractional, metrics=specs(StandardMetric.distribution)),
            ResolverSpec(
                column_type=String, metrics=specs(StandardMetric.cardinality, StandardMetric.frequent_items)
            ),
            ResolverSpec(column_type=AnyType, metrics=specs()),
        ]
    )


# whylogs is not safe to run from two threads of one process at once: two profiles being built
# together hung for good inside its KLL sketch updates (a training run's two held-out parts, mapped on
# threads, never finished). Profiling takes this lock; the rest of a mapped step still runs in parallel.
_PROFILING = threading.Lock()


def profile_frame(df: pl.DataFrame) -> Any:
    """A whylogs ``DatasetProfileView`` of a Polars frame (whylogs reads pandas only); one profile at a
    time per process (see ``_PROFILING``)."""
    why = import_whylogs()
    pdf = df.with_columns(
        pl.col(c).cast(pl.String)
        for c, t in df.schema.items()
        if isinstance(t, (pl.Datetime, pl.Date, pl.Categorical))
    ).to_pandas()
    with _PROFILING:
        return why.log(pdf, schema=monitoring_schema()).view()


def load_profile(data: bytes) -> Any:
    import_whylogs()
    from whylogs.core import DatasetProfileView

    return DatasetProfileView.deserialize(data)
