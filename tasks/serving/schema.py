"""The serving request schema, generated from the dataset configuration.

A request carries the raw fields the model's feature transform needs (``FeatureSpec.input_columns``),
typed and range-checked from the table contracts they come from (a joined column's contract is the
joined table's). Fields that are non-nullable in the base table are required; everything else is
optional, and a missing optional field is imputed exactly as in training. Unknown fields are
rejected with their name, so a typo never silently becomes "missing".
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import polars as pl
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, create_model

from tasks.core.config import ColumnContract, DatasetConfig
from tasks.model.features import FeatureSpec

PY_TYPES: dict[str, Any] = {
    "int64": int,
    "float64": float,
    "string": str,
    "bool": bool,
    "date": date,
    "datetime": datetime,
}
POLARS_TYPES: dict[str, pl.DataType] = {
    "int64": pl.Int64(),
    "float64": pl.Float64(),
    "string": pl.String(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.String(),
}


def input_contracts(config: DatasetConfig) -> dict[str, tuple[ColumnContract, bool]]:
    """Each model input column -> (its contract, whether a request must carry it)."""
    base = config.tables[config.base_table].contract.columns
    joined: dict[str, ColumnContract] = {}
    for join in config.joins:
        right = config.tables[join.table].contract.columns
        for col in join.columns or [c for c in right if c not in join.right_on]:
            joined[f"{join.prefix}{col}"] = right[col]
    out = {}
    for col in FeatureSpec.from_config(config).input_columns:
        if col in base:
            out[col] = (base[col], not base[col].nullable)
        elif col in joined:
            out[col] = (joined[col], False)
        else:
            out[col] = (ColumnContract(dtype="float64"), False)
    return out


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _iso_text(value: Any) -> datetime:
    """A time sent as ISO 8601 text (what the OpenAPI document declares); numbers are refused rather than
    read as Unix seconds."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("expected ISO 8601 text, e.g. 2013-07-01T09:00:00Z")
    return _DATETIME.validate_python(value)


_DATETIME = TypeAdapter(datetime)
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_text)]


def request_model(config: DatasetConfig, name: str = "PredictionRequest") -> type[BaseModel]:
    """A pydantic model of one prediction request, with types and ranges from the contracts."""
    fields: dict[str, Any] = {
        "correlation_id": (
            str | None,
            Field(
                None,
                max_length=128,
                description="the caller's own id, logged and returned beside the "
                "request id the service issues; never used as an identity",
            ),
        ),
        "routing_key": (
            str | None,
            Field(
                None,
                max_length=256,
                description="keeps a caller on one arm of a canary (default: the issued request id)",
            ),
        ),
    }
    for col, (contract, required) in input_contracts(config).items():
        py = PY_TYPES[contract.dtype]
        if col == config.time_column:
            py = IsoDatetime  # ISO 8601 text is parsed; anything else is a 400 naming the field
        constraints: dict[str, Any] = {}
        if contract.min is not None and contract.dtype in ("int64", "float64"):
            constraints["ge"] = contract.min
        if contract.max is not None and contract.dtype in ("int64", "float64"):
            constraints["le"] = contract.max
        if contract.dtype == "int64":  # what the column can hold: a larger number is a 400, not a 500
            constraints["ge"] = max(constraints.get("ge", INT64_MIN), INT64_MIN)
            constraints["le"] = min(constraints.get("le", INT64_MAX), INT64_MAX)
        if required:
            fields[col] = (py, Field(..., **constraints))
        else:
            fields[col] = (py | None, Field(None, **constraints))
    # strict: a value must have the type the OpenAPI document declares (no "5" for 5, no 1.0 for an
    # integer, no true for 1); unknown fields and Infinity/NaN are 400s too
    config_dict = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    return create_model(name, __config__=config_dict, **fields)


def input_schema(config: DatasetConfig) -> dict[str, pl.DataType]:
    """Polars types of a request's raw inputs (the time column as a UTC datetime)."""
    return {
        col: POLARS_TYPES[c.dtype] if col != config.time_column else pl.Datetime("us", "UTC")
        for col, (c, _) in input_contracts(config).items()
    }
