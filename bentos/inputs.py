"""Batches sent column by column (JSON) or as Arrow IPC, decoded into a typed frame and held to the same
input contracts as a record on ``/predict``: a 400 that names the column, never a silent cast."""

from __future__ import annotations

import io
from typing import Annotated, Any

import bentoml
import polars as pl
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from bentos.answers import ClassScored, Scored, ValueScored
from bentos.endpoints import ARROW_STREAM
from tasks.core.config import DatasetConfig
from tasks.core.errors import BadInput
from tasks.serving.schema import check_inputs, conform_inputs, input_contracts, input_schema

ARROW_ID_COLUMNS = {"correlation_id": "correlation_ids", "routing_key": "routing_keys"}


def _annotated(annotation: Any, metadata: list[Any]) -> Any:
    return Annotated[(annotation, *metadata)] if metadata else annotation


def _bad(message: str) -> bentoml.exceptions.InvalidArgument:
    return bentoml.exceptions.InvalidArgument(message)


class BatchDecoder:
    """Decodes the batch endpoints' bodies for one served config and its request model."""

    def __init__(self, config: DatasetConfig, record: type[BaseModel], max_batch_rows: int):
        self.config, self.max_batch_rows = config, max_batch_rows
        self.contracts = input_contracts(config)
        self.schema = input_schema(config)
        strict = ConfigDict(allow_inf_nan=False, strict=True)
        # per column, a validator with exactly the type and constraints the record model gives the
        # field: /predict_columns accepts what /predict accepts, nothing more (no fractional ints, no
        # Infinity, no objects where text is expected)
        self.column_adapters = {
            name: TypeAdapter(list[_annotated(field.annotation, field.metadata)], config=strict)
            for name, field in record.model_fields.items()
            if name in self.contracts
        }
        self.id_adapters = {
            name: TypeAdapter(list[_annotated(str | None, record.model_fields[field].metadata)])
            for name, field in (("correlation_ids", "correlation_id"), ("routing_keys", "routing_key"))
        }

    def checked_ids(self, name: str, values: list[Any] | None, rows: int) -> list[str | None]:
        """Caller ids for a columnar batch, held to the same limits as a record's own fields."""
        if values is None:
            return [None] * rows
        if len(values) != rows:
            raise _bad(f"{name} has {len(values)} entries for {rows} rows")
        try:
            return self.id_adapters[name].validate_python(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise _bad(f"{name}[{first['loc'][0]}]: {first['msg']}") from None

    def _check_shape(self, columns: dict[str, list[Any]]) -> int:
        if not columns:
            raise _bad("columns is empty: send {column: [values...]} for the model's inputs")
        unknown = sorted(set(columns) - set(self.contracts))
        if unknown:
            raise _bad(f"unknown column(s) {unknown}; expected a subset of {sorted(self.contracts)}")
        missing = [c for c, (_, required) in self.contracts.items() if required and c not in columns]
        if missing:
            raise _bad(f"missing required column(s) {missing}")
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise _bad(f"columns must be non-empty and of equal length; got lengths {sorted(lengths)}")
        rows = lengths.pop()
        if rows > self.max_batch_rows:
            raise _bad(f"more rows than max_batch_rows={self.max_batch_rows}; split the batch")
        return rows

    def _column(self, name: str, dtype: pl.DataType, values: list[Any]) -> pl.Series:
        try:
            checked = self.column_adapters[name].validate_python(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise _bad(
                f"column {name!r}: row {first['loc'][0]}: {first['msg']} "
                f"({exc.error_count()} bad value(s) in the column)"
            ) from None
        try:
            if name == self.config.time_column:
                return pl.Series(name, checked, dtype=pl.Datetime("us", "UTC"), strict=False)
            return pl.Series(name, checked, strict=True).cast(dtype, strict=True)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise _bad(
                f"column {name!r}: values are not {dtype} ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None

    def columns_to_frame(self, columns: dict[str, list[Any]]) -> pl.DataFrame:
        """A columnar request as a typed frame, checked against the input contracts (400s name the column)."""
        rows = self._check_shape(columns)
        series = [
            pl.Series(name, [None] * rows, dtype=dtype)
            if columns.get(name) is None
            else self._column(name, dtype, columns[name])
            for name, dtype in self.schema.items()
        ]
        try:
            return check_inputs(pl.DataFrame(series), self.contracts)
        except BadInput as exc:
            raise _bad(str(exc)) from None

    def arrow_to_frame(self, body: bytes) -> tuple[pl.DataFrame, list[str | None], list[str | None]]:
        """An Arrow IPC stream as (typed inputs, correlation ids, routing keys), checked against the same
        input contracts as every other path (``conform_inputs``); errors are 400s naming the column."""
        try:
            frame = pl.read_ipc_stream(body)
        except Exception as exc:  # noqa: BLE001 - pyarrow/polars raise several types for garbage bytes
            raise _bad(
                f"the body is not an Arrow IPC stream ({type(exc).__name__}): send {ARROW_STREAM}"
            ) from None
        if frame.height == 0:
            raise _bad("the batch has no rows")
        if frame.height > self.max_batch_rows:
            raise _bad(f"more rows than max_batch_rows={self.max_batch_rows}; split the batch")
        try:
            ids_sent = [c for c in ARROW_ID_COLUMNS if c in frame.columns]
            inputs = conform_inputs(frame.drop(ids_sent) if ids_sent else frame, self.config)
        except BadInput as exc:
            raise _bad(str(exc)) from None
        ids = []
        for column, name in ARROW_ID_COLUMNS.items():
            values = (
                frame[column].cast(pl.String, strict=False).to_list() if column in frame.columns else None
            )
            ids.append(self.checked_ids(name, values, frame.height))
        return inputs, ids[0], ids[1]


def scored_to_arrow(out: Scored | ValueScored | ClassScored) -> bytes:
    """The answers as an Arrow IPC stream, one row per input row, in order (the columns per target kind:
    ``tasks.serving.openapi.ARROW_ANSWERS``)."""
    if isinstance(out, Scored):
        answer = {
            "probability": pl.Series(out.probability, dtype=pl.Float64),
            "label": pl.Series(out.label, dtype=pl.Int8),
        }
        shadow = {"shadow_probability": pl.Series(out.shadow_probability, dtype=pl.Float64)}
    elif isinstance(out, ValueScored):
        answer = {"value": pl.Series(out.value, dtype=pl.Float64)}
        shadow = {"shadow_value": pl.Series(out.shadow_value, dtype=pl.Float64)}
    else:
        answer = {
            "predicted_class": pl.Series(out.predicted_class, dtype=pl.String),
            "probabilities": pl.DataFrame(out.probabilities).to_struct("probabilities"),
        }
        shadow = {"shadow_class": pl.Series(out.shadow_class, dtype=pl.String)}
    table = pl.DataFrame(
        {
            "request_id": out.ids,
            "correlation_id": pl.Series(out.correlation_ids, dtype=pl.String),
            **answer,
            "model_version": pl.Series(out.model_version, dtype=pl.Int64),
            "arm": out.arm,
            **shadow,
        }
    ).with_columns(pl.lit(out.shadow_version, dtype=pl.Int64).alias("shadow_version"))
    buf = io.BytesIO()
    table.write_ipc_stream(buf)
    return buf.getvalue()
