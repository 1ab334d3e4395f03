"""The serving request schema, generated from the dataset configuration.

A request carries the raw fields the model's feature transform needs (``FeatureSpec.input_columns``),
typed and held to the value rules of the table contracts they come from (a joined column's contract is
the joined table's), the rules ingestion applies (``tasks.core.contract_rules``). Fields that are
non-nullable in the base table are required; everything else is optional, and a missing optional field
is imputed exactly as in training. Unknown fields are rejected with their name, so a typo never
silently becomes "missing".
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import polars as pl
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, create_model

from tasks.core.config import ColumnContract, DatasetConfig, TimeConfig
from tasks.core.contract_rules import (
    ValueRule,
    aware,
    broken_rules,
    json_schema,
    times_from_datetimes,
    times_from_text,
    value_rules,
)
from tasks.core.errors import BadInput
from tasks.core.feature_spec import FeatureSpec

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


def _time_reader(time: TimeConfig | None) -> Any:
    """A request's time: ISO 8601 text (what the OpenAPI document declares), numbers refused rather than
    read as Unix seconds; one without a UTC offset is read or refused as the config's ``time.naive``
    says (``tasks.core.contract_rules.aware``)."""

    def read(value: Any) -> datetime:
        if not isinstance(value, (str, datetime)):
            raise ValueError("expected ISO 8601 text, e.g. 2013-07-01T09:00:00Z")
        parsed = value if isinstance(value, datetime) else _DATETIME.validate_python(value)
        return aware(parsed, time) if time is not None else parsed

    return read


_DATETIME = TypeAdapter(datetime)


def request_model(config: DatasetConfig, name: str = "PredictionRequest") -> type[BaseModel]:
    """A pydantic model of one prediction request: each field's type, and its contract's value rules
    stated in the schema (``json_schema``) for the API document. The rules themselves are checked on
    the typed frame (``check_inputs``) by every endpoint alike, so a value is refused with the same
    words whichever way it came."""
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
        py: Any = PY_TYPES[contract.dtype]
        extra = json_schema(contract)
        if col == config.time_column:
            # ISO 8601 text is parsed; anything else is a 400 naming the field
            py = Annotated[datetime, BeforeValidator(_time_reader(config.time))]
            extra = {}
        constraints: dict[str, Any] = {}
        if contract.dtype == "int64":  # what the column can hold: a larger number is a 400, not a 500
            constraints = {"ge": INT64_MIN, "le": INT64_MAX}
        typed = Annotated[py, Field(json_schema_extra=extra or None, **constraints)]
        if required:
            fields[col] = (typed, Field(...))
        else:
            fields[col] = (typed | None, Field(None))
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


_RULES: dict[int, tuple[Any, list[ValueRule]]] = {}  # contracts -> rules: built once per contracts


def input_rules(contracts: dict[str, tuple[ColumnContract, bool]]) -> list[ValueRule]:
    """Every value rule of the model's inputs (``tasks.core.contract_rules``), in column order; built
    once for a given ``contracts`` (a service checks every request against the same ones)."""
    hit = _RULES.get(id(contracts))
    if hit is not None and hit[0] is contracts:
        return hit[1]
    rules = [rule for name, (contract, _) in contracts.items() for rule in value_rules(name, contract)]
    _RULES[id(contracts)] = (contracts, rules)  # holds contracts, so its id is not reused meanwhile
    while len(_RULES) > 16:
        _RULES.pop(next(iter(_RULES)))
    return rules


def check_inputs(frame: pl.DataFrame, contracts: dict[str, tuple[ColumnContract, bool]]) -> pl.DataFrame:
    """Typed input columns against their contracts: no nulls in required ones, every value rule (range,
    allowed values, pattern, text length, control characters) as ingestion applies it. One pass over
    the frame counts every violation; the first one found, in column order, is a ``BadInput`` naming
    the column and the rule."""
    for name, (_, needed) in contracts.items():
        count = frame[name].null_count() if needed and name in frame.columns else 0  # kept, not counted
        if count:
            raise BadInput(f"column {name!r}: {count} null value(s) in a required column")
    # the time column arrives parsed (its own rule: an offset, see ``time.naive``), whatever its contract
    schema = frame.schema  # built once: each ``frame.schema`` builds it anew
    rules = [r for r in input_rules(contracts) if not schema.get(r.column, pl.Null).is_temporal()]
    broken = broken_rules(frame, rules, limit=1)
    if broken:
        raise BadInput(broken[0].message())
    return frame


def _may_become(source: pl.DataType, target: pl.DataType, is_time: bool, parse_text: bool) -> bool:
    """Whether a column of ``source`` type may be cast to ``target`` without changing what it says: as
    strict as the JSON request model (no 1.5 truncated to 1, no true for 1, no number read as a time).
    Text is parsed (a cast that fails on any value that is not one) only where the format carries no
    types (``parse_text``: a CSV file) and for the time column (ISO 8601 text is its declared form);
    a typed format (Arrow) must send numbers as numbers, as JSON must."""
    if source == pl.Null or (source == pl.String and (parse_text or is_time or target == pl.String)):
        return True
    if source == pl.String:
        return False
    if is_time:
        return isinstance(source, pl.Datetime) or source == pl.Date
    if target == pl.Float64:
        return source.is_numeric()
    if target.is_integer():
        return source.is_integer()
    return source == target


def conform_inputs(
    frame: pl.DataFrame, config: DatasetConfig, allow_extra: bool = False, parse_text: bool = False
) -> pl.DataFrame:
    """A frame of raw inputs (an Arrow batch, a file to score) as the model's typed inputs, checked
    against the input contracts: required columns present, each cast strictly to its type (the time
    column parsed from ISO text, or a datetime), required ones without nulls, numbers within range.
    Unknown columns are an error unless ``allow_extra`` (a file to score may carry ids and labels);
    text where a number is declared only parses with ``parse_text`` (a format without types: CSV).
    Errors are ``BadInput`` naming the column."""
    contracts, schema = input_contracts(config), input_schema(config)
    unknown = sorted(set(frame.columns) - set(contracts))
    if unknown and not allow_extra:
        raise BadInput(f"unknown column(s) {unknown}; expected a subset of {sorted(contracts)}")
    missing = [c for c, (_, required) in contracts.items() if required and c not in frame.columns]
    if missing:
        raise BadInput(f"missing required column(s) {missing}")
    series = []
    for name, dtype in schema.items():
        if name not in frame.columns:
            series.append(pl.Series(name, [None] * frame.height, dtype=dtype))
            continue
        s = frame[name]
        try:
            if not _may_become(s.dtype, dtype, name == config.time_column, parse_text):
                raise TypeError("no silent conversion: send the declared type (or text, parsed strictly)")
            if name == config.time_column:
                s = (
                    times_from_text(s, config.time)
                    if s.dtype == pl.String
                    else times_from_datetimes(s, config.time)
                )
            else:
                s = s.cast(dtype, strict=True)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise BadInput(
                f"column {name!r}: values of type {frame[name].dtype} are not {dtype} ({str(exc)[:200]})"
            ) from None
        series.append(s.rename(name))
    return check_inputs(pl.DataFrame(series), contracts)


def as_requests(frame: pl.DataFrame, config: DatasetConfig) -> list[dict[str, Any]]:
    """Rows of ``frame`` as a caller sends them to the service: its input columns, the time as ISO text."""
    column = config.time.column if config.time else None
    inputs = list(input_contracts(config))
    if column and frame.schema.get(column, pl.String).is_temporal():
        frame = frame.with_columns(pl.col(column).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return frame.select(inputs).to_dicts()
