"""The driftloop prediction service (BentoML).

    make serve                                  # champion on 127.0.0.1:3000
    curl -s 127.0.0.1:3000/predict -H 'content-type: application/json' -d @bentos/example_request.json

Endpoints: ``/predict`` (one record), ``/predict_batch`` (many), ``/feedback`` (observed outcomes),
``/model_status``; BentoML adds ``/healthz``, ``/livez``, ``/readyz`` (ready once a champion is
loaded), ``/metrics`` (Prometheus) and the OpenAPI spec at ``/docs.json``.

The service serves one registered model, named in its settings (``DRIFTLOOP_SERVING__MODEL_NAME``,
default: the dataset config's ``model_name``); several services of several models share one store. It
reads the registry (the single truth), not a copy: its request schema comes from the dataset config
the model's champion was registered with, it applies each version's saved feature transform, follows
alias moves without a restart, and logs every prediction to the model's own log for monitoring.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import bentoml
import numpy as np
import polars as pl
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response

from tasks.core.config import DatasetConfig, config_from_template
from tasks.core.errors import BadInput
from tasks.core.logs import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    log_prefix,
    prediction_log_schema,
)
from tasks.core.settings import Settings
from tasks.core.store import ArtifactStore, open_store
from tasks.registry.versions import CONFIG_FILE, Registry
from tasks.serving.openapi import arrow_operation, complete_openapi
from tasks.serving.request_ids import RequestIds, request_id_key
from tasks.serving.routing import assign_arm
from tasks.serving.schema import (
    check_inputs,
    conform_inputs,
    input_contracts,
    input_schema,
    request_model,
)
from tasks.serving.spool import SpooledLog, spool_root
from tasks.serving.watcher import RegistryWatcher

log = logging.getLogger("driftloop.service")


class ClientErrorsAtInfo(logging.Filter):
    """BentoML logs every failed request at ERROR with a traceback, bad input included (15 MB of log in
    5 minutes of fuzzing). A 4xx is the caller's mistake, already answered: log it once, at INFO, as one
    line; server errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(getattr(exc, "error_code", None), "value", None)
        if isinstance(exc, ValidationError) or (code is not None and code < 500):
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            record.msg = f"{record.getMessage()}: rejected ({type(exc).__name__}: {first})"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorsAtInfo())


def settings_of_this_process() -> Settings:
    """The settings, plus what the bento this code runs from says. A bento's ``envs`` (which name its
    packaged model) are set in the image it becomes, not by ``bentoml serve <tag>``: read them from
    the bento's own ``bento.yaml`` (beside ``src/``), so an imported bento serves its packaged model
    wherever it runs. Values set in the environment win."""
    settings = Settings()
    manifest = Path(__file__).resolve().parents[2] / "bento.yaml"
    if settings.packaged_model or not manifest.is_file():
        return settings
    import yaml

    envs = {e.get("name"): e.get("value") for e in yaml.safe_load(manifest.read_text()).get("envs") or []}
    packaged = envs.get("DRIFTLOOP_PACKAGED_MODEL")
    return settings.model_copy(update={"packaged_model": packaged}) if packaged else settings


SETTINGS = settings_of_this_process()


def open_service_store(settings: Settings) -> ArtifactStore:
    """The artifact store the service reads the registry from and logs to. A named AwsCredentials block
    needs the Prefect API, so only then is Prefect loaded; keys or the task role need nothing more."""
    if settings.s3.credentials_block:
        from flows.steps.runtime import aws_credentials_from_block

        return open_store(settings, aws_credentials_from_block(settings))
    return open_store(settings)


def served_config(settings: Settings) -> DatasetConfig:
    """The dataset config of the model this service serves: the one packaged with it (a bento), else
    the one its champion (or newest version) was registered with, else (a model not trained yet) the
    settings' file if it names that model. Anything else is an error saying what to do."""
    variables = settings.config_variables(os.environ)
    if settings.packaged_model:
        model = bentoml.models.get(settings.packaged_model)
        path = Path(model.path_of(CONFIG_FILE))
        if path.is_file():
            return config_from_template(
                json.loads(path.read_text()), variables, f"{settings.packaged_model} ({CONFIG_FILE})"
            )
    file_config = settings.load_dataset(environ=os.environ)
    name = settings.serving.model_name or file_config.model_name
    registry = Registry(open_service_store(settings), name)
    try:
        kept = registry.kept_config(variables)
        if kept is not None:
            return kept
    except Exception as exc:  # noqa: BLE001 - an unreachable store must not crash-loop the service
        if file_config.model_name != name:
            raise
        log.warning(
            "driftloop: registry unreadable at start (%s); request schema from %s", exc, file_config.origin
        )
        return file_config
    if file_config.model_name == name:
        return file_config
    return registry.model_config(variables)  # raises: names the models that are registered


CONFIG = served_config(SETTINGS)
Record = request_model(CONFIG, "Record")  # the fields are the served model's inputs
_Item = TypeVar("_Item")
# a batch: at least one item, at most max_batch_rows (declared in the OpenAPI document too)
BatchOf = Annotated[list[_Item], Field(min_length=1, max_length=SETTINGS.serving.max_batch_rows)]
INPUT_COLUMNS = list(input_contracts(CONFIG))
INPUT_SCHEMA = input_schema(CONFIG)
TIME_COLUMN = CONFIG.time_column
THRESHOLD = CONFIG.training.threshold
MODEL_NAME = CONFIG.model_name


class Prediction(BaseModel):
    request_id: str = Field(description="issued by the service: the id to send feedback for")
    correlation_id: str | None = Field(None, description="the caller's own id, as sent")
    probability: float
    label: int
    model_version: int
    arm: Literal["champion", "challenger"]
    shadow_version: int | None = None
    shadow_probability: float | None = None


class Scored(BaseModel):
    """Answers for many rows, column by column (the shape /predict_columns returns)."""

    ids: list[str]  # issued by the service, one per row
    correlation_ids: list[str | None]
    probability: list[float]
    label: list[int]
    model_version: list[int]
    arm: list[str]
    shadow_version: int | None = None
    shadow_probability: list[float | None]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # no 0 for false, no true for 1
    request_id: str = Field(min_length=1, max_length=128, description="the id /predict returned")
    outcome: int = Field(
        ge=0, le=1, description="the observed label (1 = positive, e.g. arrived > 15 min late)"
    )
    correction: bool = Field(
        False, description="replace an outcome reported before (otherwise the first one reported counts)"
    )


class RejectedFeedback(BaseModel):
    request_id: str
    reason: str


class FeedbackResult(BaseModel):
    accepted: int
    rejected: list[RejectedFeedback]


class ModelStatus(BaseModel):
    champion: int | None = None
    challenger: int | None = None
    mode: str
    challenger_share: float
    loaded_at: str | None = None
    last_check: str | None = None
    problems: list[str]
    predictions_logged: int  # shipped to the store by this worker (each is durable on disk before that)
    log_errors: int  # failed attempts to ship the log to the store (retried; nothing is dropped)


PREDICTIONS = bentoml.metrics.Counter(
    name="driftloop_predictions", documentation="predictions made", labelnames=["model_version", "arm"]
)
LATENCY = bentoml.metrics.Histogram(
    name="driftloop_scoring_seconds",
    documentation="feature transform + model time",
    labelnames=["model_version", "arm"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)


SERVED: dict[str, Any] = {}  # this worker's registry watcher, once the service is built


class RequestGuard:
    """ASGI middleware: bearer tokens and a request-size limit, before any parsing.

    With auth on, scoring needs ``auth_token`` and ``/feedback`` needs its own ``feedback_token`` (a
    caller allowed to score is not thereby allowed to write the labels that judge models). Tokens are
    compared in constant time."""

    FEEDBACK_PATHS = ("/feedback",)
    SCORING_PATHS = ("/predict", "/predict_batch", "/predict_columns", "/predict_arrow")
    BODY_TYPES = {"/predict_arrow": b"application/vnd.apache.arrow.stream"}  # the rest: JSON

    def __init__(self, app: Any, token: SecretStr | None, feedback_token: SecretStr | None, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.token = token.get_secret_value().encode() if token else None
        self.feedback_token = feedback_token.get_secret_value().encode() if feedback_token else None
        self.open_paths = ("/healthz", "/livez", "/readyz", "/metrics", "/docs", "/docs.json", "/")

    def _refusal(self, path: str, authorization: bytes) -> tuple[int, str] | None:
        presented = authorization.removeprefix(b"Bearer ") if authorization.startswith(b"Bearer ") else b""
        if path in self.FEEDBACK_PATHS:
            if self.feedback_token is None:
                if self.token is None:
                    return None  # no auth at all (a laptop)
                return 403, (
                    "feedback needs its own token, separate from predict's: set "
                    "DRIFTLOOP_SERVING__FEEDBACK_TOKEN on the service and send it as a bearer token"
                )
            expected = self.feedback_token
        elif self.token is None:
            return None
        else:
            expected = self.token
        if not hmac.compare_digest(presented, expected):
            return 401, "missing or wrong bearer token (Authorization: Bearer <token>)"
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/docs.json":
            return await self._openapi(scope, receive, send)
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        if scope["path"] == "/predict_arrow":  # the mounted Arrow app's route, without a redirect
            scope = {**scope, "path": "/predict_arrow/", "raw_path": b"/predict_arrow/"}
        headers = dict(scope.get("headers") or [])
        refused = self._refusal(scope["path"], headers.get(b"authorization", b""))
        if refused:
            return await JSONResponse({"error": refused[1]}, status_code=refused[0])(scope, receive, send)
        watcher = SERVED.get("watcher")
        if scope["path"] in self.SCORING_PATHS and watcher is not None and watcher.models.champion is None:
            # BentoML hides the message of any 5xx an endpoint raises; this one the caller should read
            return await JSONResponse(
                {
                    "error": f"no champion model of {MODEL_NAME!r} is loaded yet ("
                    f"{'; '.join(watcher.status.problems) or 'none registered'}): train and register one, "
                    "or see /model_status"
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )(scope, receive, send)
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        expected = self.BODY_TYPES.get(scope["path"].rstrip("/"), b"application/json")
        must_say = expected != b"application/json" and scope.get("method") == "POST"  # Arrow is never guessed
        if (media_type or must_say) and media_type != expected:
            what = "JSON (application/json)" if expected == b"application/json" else expected.decode()
            return await JSONResponse(
                {"error": f"unsupported Content-Type {media_type.decode('latin-1')!r}: send {what}"},
                status_code=415,
            )(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return await JSONResponse({"error": "invalid Content-Length header"}, status_code=400)(
                scope, receive, send
            )
        if length is not None and int(length) > self.max_bytes:
            return await self._too_large(int(length), scope, receive, send)
        # the declared length may be absent (chunked) or wrong: read the body, at most the limit + 1
        # byte, before the app sees any of it, so an oversized body is a 413 however it is framed
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.max_bytes:
                return await self._too_large(seen, scope, receive, send, at_least=more)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, self._one_error_object(send))

    @staticmethod
    def _one_error_object(send: Any) -> Any:
        """BentoML answers an error raised in some endpoints as a one-element list (``[{"error": …}]``);
        every 4xx body is the one object the OpenAPI document declares."""
        start: dict | None = None
        chunks: list[bytes] = []

        async def wrapped(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
                body = json.dumps(parsed[0]).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return wrapped

    async def _openapi(self, scope: dict, receive: Any, send: Any) -> None:
        """BentoML's OpenAPI document, completed with what this service really answers."""
        messages: list[dict] = []

        async def keep(message: dict) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        if start is None or start["status"] != 200:
            for message in messages:
                await send(message)
            return
        spec = complete_openapi(
            json.loads(body),
            self.SCORING_PATHS,
            self.FEEDBACK_PATHS,
            auth=self.token is not None,
            extra_paths={"/predict_arrow": arrow_operation(INPUT_COLUMNS)},
        )
        await JSONResponse(spec)(scope, receive, send)

    async def _too_large(
        self, size: int, scope: dict, receive: Any, send: Any, at_least: bool = False
    ) -> None:
        return await JSONResponse(
            {
                "error": f"request body of {'more than ' if at_least else ''}{size} bytes exceeds the limit "
                f"of {self.max_bytes} (DRIFTLOOP_SERVING__MAX_REQUEST_BYTES); split the batch"
            },
            status_code=413,
        )(scope, receive, send)


CONTRACTS = input_contracts(CONFIG)


def _column_adapters() -> dict[str, TypeAdapter]:
    """Per input column, a validator of a list of its values with exactly the type and constraints the
    record model gives that field: /predict_columns accepts what /predict accepts, nothing more (no
    fractional ints, no Infinity, no objects where text is expected)."""
    strict = ConfigDict(allow_inf_nan=False, strict=True)
    return {
        name: TypeAdapter(list[_annotated(field.annotation, field.metadata)], config=strict)
        for name, field in Record.model_fields.items()
        if name in CONTRACTS
    }


def _annotated(annotation: Any, metadata: list[Any]) -> Any:
    return Annotated[(annotation, *metadata)] if metadata else annotation


COLUMN_ADAPTERS = _column_adapters()
ID_ADAPTERS = {
    name: TypeAdapter(list[_annotated(str | None, Record.model_fields[field].metadata)])
    for name, field in (("correlation_ids", "correlation_id"), ("routing_keys", "routing_key"))
}


def checked_ids(name: str, values: list[Any] | None, rows: int) -> list[str | None]:
    """Caller ids for a columnar batch, held to the same limits as a record's own fields."""
    if values is None:
        return [None] * rows
    if len(values) != rows:
        raise bentoml.exceptions.InvalidArgument(f"{name} has {len(values)} entries for {rows} rows")
    try:
        return ID_ADAPTERS[name].validate_python(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise bentoml.exceptions.InvalidArgument(f"{name}[{first['loc'][0]}]: {first['msg']}") from None


def columns_to_frame(columns: dict[str, list[Any]]) -> pl.DataFrame:
    """A columnar request as a typed frame, checked against the input contracts (400s name the column)."""
    bad = bentoml.exceptions.InvalidArgument
    if not columns:
        raise bad("columns is empty: send {column: [values...]} for the model's inputs")
    unknown = sorted(set(columns) - set(CONTRACTS))
    if unknown:
        raise bad(f"unknown column(s) {unknown}; expected a subset of {sorted(CONTRACTS)}")
    missing = [c for c, (_, required) in CONTRACTS.items() if required and c not in columns]
    if missing:
        raise bad(f"missing required column(s) {missing}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise bad(f"columns must be non-empty and of equal length; got lengths {sorted(lengths)}")
    if lengths.pop() > SETTINGS.serving.max_batch_rows:
        raise bad(f"more rows than max_batch_rows={SETTINGS.serving.max_batch_rows}; split the batch")
    series = []
    for name, dtype in INPUT_SCHEMA.items():
        values = columns.get(name)
        if values is None:
            series.append(pl.Series(name, [None] * len(next(iter(columns.values()))), dtype=dtype))
            continue
        try:
            checked = COLUMN_ADAPTERS[name].validate_python(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise bad(
                f"column {name!r}: row {first['loc'][0]}: {first['msg']} "
                f"({exc.error_count()} bad value(s) in the column)"
            ) from None
        try:
            if name == TIME_COLUMN:
                s = pl.Series(name, checked, dtype=pl.Datetime("us", "UTC"), strict=False)
            else:
                s = pl.Series(name, checked, strict=True).cast(dtype, strict=True)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise bad(
                f"column {name!r}: values are not {dtype} ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        series.append(s)
    try:
        return check_inputs(pl.DataFrame(series), CONTRACTS)
    except BadInput as exc:
        raise bad(str(exc)) from None


ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_ID_COLUMNS = {"correlation_id": "correlation_ids", "routing_key": "routing_keys"}


def arrow_to_frame(body: bytes) -> tuple[pl.DataFrame, list[str | None], list[str | None]]:
    """An Arrow IPC stream as (typed inputs, correlation ids, routing keys), checked against the same
    input contracts as every other path (``conform_inputs``); errors are 400s naming the column."""
    bad = bentoml.exceptions.InvalidArgument
    try:
        frame = pl.read_ipc_stream(body)
    except Exception as exc:  # noqa: BLE001 - pyarrow/polars raise several types for garbage bytes
        raise bad(
            f"the body is not an Arrow IPC stream ({type(exc).__name__}): send {ARROW_STREAM}"
        ) from None
    if frame.height == 0:
        raise bad("the batch has no rows")
    if frame.height > SETTINGS.serving.max_batch_rows:
        raise bad(f"more rows than max_batch_rows={SETTINGS.serving.max_batch_rows}; split the batch")
    try:
        ids_sent = [c for c in ARROW_ID_COLUMNS if c in frame.columns]
        inputs = conform_inputs(frame.drop(ids_sent) if ids_sent else frame, CONFIG)
    except BadInput as exc:
        raise bad(str(exc)) from None
    ids = []
    for column, name in ARROW_ID_COLUMNS.items():
        values = frame[column].cast(pl.String, strict=False).to_list() if column in frame.columns else None
        ids.append(checked_ids(name, values, frame.height))
    return inputs, ids[0], ids[1]


def scored_to_arrow(out: Scored) -> bytes:
    """The answers as an Arrow IPC stream, one row per input row, in order."""
    import io

    table = pl.DataFrame(
        {
            "request_id": out.ids,
            "correlation_id": pl.Series(out.correlation_ids, dtype=pl.String),
            "probability": pl.Series(out.probability, dtype=pl.Float64),
            "label": pl.Series(out.label, dtype=pl.Int8),
            "model_version": pl.Series(out.model_version, dtype=pl.Int64),
            "arm": out.arm,
            "shadow_probability": pl.Series(out.shadow_probability, dtype=pl.Float64),
        }
    ).with_columns(pl.lit(out.shadow_version, dtype=pl.Int64).alias("shadow_version"))
    buf = io.BytesIO()
    table.write_ipc_stream(buf)
    return buf.getvalue()


ARROW_APP = FastAPI(title="driftloop Arrow endpoint", docs_url=None, redoc_url=None, openapi_url=None)


# who a label came from: with a feedback token only its holder can report (see RequestGuard)
FEEDBACK_SOURCE = "feedback-token" if SETTINGS.serving.feedback_token else "unauthenticated"
PACKAGED_MODEL = SETTINGS.packaged_model  # set inside a bento built by the package flow


@bentoml.asgi_app(ARROW_APP, path="/predict_arrow")
@bentoml.service(
    name="driftloop",
    workers=SETTINGS.serving.workers,
    traffic={"timeout": 30},
    logging={"access": {"enabled": SETTINGS.serving.access_log}},
)
class Driftloop:
    if PACKAGED_MODEL:  # the bento carries its model, for when the registry cannot be reached
        packaged = bentoml.models.BentoModel(PACKAGED_MODEL)

    def __init__(self) -> None:
        self.store = open_service_store(SETTINGS)
        self.registry = Registry(self.store, MODEL_NAME)
        self.watcher = RegistryWatcher(self.registry, SETTINGS.serving.poll_seconds, set(INPUT_COLUMNS))
        self.watcher.start()
        SERVED["watcher"] = self.watcher  # the request guard answers 503 itself while nothing serves
        s = SETTINGS.serving
        # durable before answered (fsync to a local spool), shipped to the store in the background
        self.predictions = SpooledLog(
            self.store,
            log_prefix("predictions", MODEL_NAME),
            prediction_log_schema(INPUT_SCHEMA),
            s.spool_dir,
            s.log_max_rows,
            s.log_max_seconds,
        )
        self.feedback_log = SpooledLog(
            self.store,
            log_prefix(FEEDBACK, MODEL_NAME),
            FEEDBACK_SCHEMA,
            s.spool_dir,
            s.log_max_rows,
            s.log_max_seconds,
        )
        self._request_ids: RequestIds | None = None  # its key is in the store: read on first use
        self._key_problem: str | None = None
        self._key_retry_at = 0.0
        if self.watcher.models.champion is None and PACKAGED_MODEL:
            try:
                self.watcher.use_packaged(Path(self.packaged.path))
            except Exception as exc:  # noqa: BLE001 - stay up, not ready, and say why
                self.watcher.status.problems.append(f"packaged model {PACKAGED_MODEL} unusable: {exc}")
        # Everything loaded so far (libraries, models) lives as long as the process: take it out of the
        # garbage collector's full passes, which would otherwise walk it all again and again under load
        # and show up as 100+ ms pauses in the tail latency (measured: p99 ~160 ms -> ~40 ms at 16 clients).
        gc.collect()
        gc.freeze()

    def request_ids(self) -> RequestIds:
        """The signer of request ids. Its key is read from the store the first time one is needed (a
        store that is down at start does not crash the worker) and cached on local disk. A service
        that has never reached its store (a packaged bento elsewhere) still answers: it signs with a
        temporary key, says so in /model_status, and switches to the store's key once it can read it
        (feedback for ids signed with the temporary key is rejected, with that reason)."""
        if self._request_ids is not None and self._key_problem is None:
            return self._request_ids
        if self._request_ids is None or time.monotonic() >= self._key_retry_at:
            cache = spool_root(SETTINGS.serving.spool_dir, self.store.uri) / "request-id-keys" / MODEL_NAME
            try:
                self._request_ids = RequestIds(request_id_key(self.store, MODEL_NAME, cache))
                self._key_problem = None
            except Exception as exc:  # noqa: BLE001 - serve on, say why, try again in a while
                self._key_retry_at = time.monotonic() + 30
                if self._request_ids is None:
                    self._request_ids = RequestIds(os.urandom(32))
                    self._key_problem = (
                        f"request-id key unreadable ({type(exc).__name__}): ids are signed with a temporary "
                        "key until the store is reachable; feedback for those ids will be rejected"
                    )
                    log.warning("driftloop: %s", self._key_problem)
        return self._request_ids

    def __is_ready__(self) -> bool:
        return self.watcher.models.champion is not None

    @bentoml.on_shutdown
    def flush_logs(self) -> None:
        self.watcher.stop()
        # a store that is down gets a few seconds; what it does not take stays in the spool, and the
        # next worker on this host ships it (shutdown must fit the platform's grace period)
        self.predictions.close(ship_for_seconds=5)
        self.feedback_log.close(ship_for_seconds=5)

    def _score(
        self,
        rows: list[dict[str, Any]] | None,
        frame: pl.DataFrame,
        correlation_ids: list[str | None],
        routing_keys: list[str | None],
    ) -> tuple["Scored", list[dict[str, Any]] | pl.DataFrame]:
        """Score rows with the arm each is routed to; returns the answers and their prediction-log rows
        (the caller makes those durable before it answers)."""
        models = self.watcher.models  # one consistent snapshot of what serves, even mid-swap
        if models.champion is None:
            raise bentoml.exceptions.ServiceUnavailable("no champion model is loaded yet; see /model_status")
        n = len(correlation_ids)
        ids = self.request_ids().issue(n)  # identity comes from the service, never from the caller
        challenger = models.challenger
        shadow = SETTINGS.serving.mode == "shadow" and challenger is not None
        share = SETTINGS.serving.challenger_share if challenger is not None and not shadow else 0.0
        on_challenger = np.array(
            [assign_arm(k or i, share) == "challenger" for k, i in zip(routing_keys, ids)]
            if share > 0
            else np.zeros(n, dtype=bool)
        )
        probability = np.empty(n)
        version = np.full(n, models.champion.version.version)
        # during a canary each row is also scored by the other arm's model (logged, never returned), so
        # the canary decision compares both models on the same labelled rows: a paired test
        paired = np.full(n, np.nan) if share > 0 else None
        paired_version = np.full(n, -1) if share > 0 else None
        arms = (
            (models.champion, ~on_challenger, "champion", challenger),
            (challenger, on_challenger, "challenger", models.champion),
        )
        for model, mask, arm, other in arms:
            count = int(mask.sum())
            if not count:
                continue
            rows_of_arm = frame if count == n else frame.filter(pl.Series(mask))
            started = time.perf_counter()
            probability[mask] = model.score(rows_of_arm)
            version[mask] = model.version.version
            labels = (str(model.version.version), arm)
            PREDICTIONS.labels(*labels).inc(count)
            LATENCY.labels(*labels).observe((time.perf_counter() - started) / count)
            if paired is not None:
                paired[mask] = other.score(rows_of_arm)
                paired_version[mask] = other.version.version
        out = Scored(
            ids=ids,
            correlation_ids=correlation_ids,
            probability=probability.tolist(),
            label=(probability >= THRESHOLD).astype(int).tolist(),
            model_version=version.tolist(),
            arm=np.where(on_challenger, "challenger", "champion").tolist(),
            shadow_version=challenger.version.version if shadow else None,
            shadow_probability=challenger.score(frame).tolist() if shadow else [None] * n,
        )
        now = datetime.now(timezone.utc)
        if rows is not None:  # a few rows: plain dicts are cheapest (one JSON line in the spool)
            logged: list[dict[str, Any]] | pl.DataFrame = [
                {
                    **inputs,
                    "model_name": MODEL_NAME,
                    "request_id": ids[i],
                    "correlation_id": correlation_ids[i],
                    "ts": now,
                    "probability": out.probability[i],
                    "label": out.label[i],
                    "model_version": out.model_version[i],
                    "arm": out.arm[i],
                    "shadow_version": out.shadow_version,
                    "shadow_probability": out.shadow_probability[i],
                    "paired_version": int(paired_version[i]) if paired is not None else None,
                    "paired_probability": float(paired[i]) if paired is not None else None,
                }
                for i, inputs in enumerate(rows)
            ]
        else:  # a columnar batch stays columnar
            logged = frame.with_columns(
                pl.lit(MODEL_NAME, dtype=pl.String).alias("model_name"),
                pl.Series("request_id", ids, dtype=pl.String),
                pl.Series("correlation_id", correlation_ids, dtype=pl.String),
                pl.lit(now).alias("ts"),
                pl.Series("probability", out.probability, dtype=pl.Float64),
                pl.Series("label", out.label, dtype=pl.Int8),
                pl.Series("model_version", out.model_version, dtype=pl.Int64),
                pl.Series("arm", out.arm, dtype=pl.String),
                pl.lit(out.shadow_version, dtype=pl.Int64).alias("shadow_version"),
                pl.Series("shadow_probability", out.shadow_probability, dtype=pl.Float64),
                pl.Series("paired_version", paired_version, dtype=pl.Int64)
                if paired is not None
                else pl.lit(None, dtype=pl.Int64).alias("paired_version"),
                pl.Series("paired_probability", paired, dtype=pl.Float64)
                if paired is not None
                else pl.lit(None, dtype=pl.Float64).alias("paired_probability"),
            )
        return out, logged

    def _score_records(
        self, records: list[BaseModel]
    ) -> tuple[list[Prediction], list[dict[str, Any]] | pl.DataFrame]:
        rows = [{c: r.__dict__[c] for c in INPUT_COLUMNS} for r in records]
        out, logged = self._score(
            rows,
            pl.DataFrame(rows, schema=INPUT_SCHEMA),
            [r.correlation_id for r in records],
            [r.routing_key for r in records],
        )
        answers = [
            Prediction.model_construct(
                request_id=i,
                correlation_id=c,
                probability=p,
                label=lab,
                model_version=v,
                arm=a,
                shadow_version=out.shadow_version,
                shadow_probability=sp,
            )
            for i, c, p, lab, v, a, sp in zip(
                out.ids,
                out.correlation_ids,
                out.probability,
                out.label,
                out.model_version,
                out.arm,
                out.shadow_probability,
            )
        ]
        return answers, logged

    @bentoml.api
    async def predict(self, record: Record) -> Prediction:  # type: ignore[valid-type]
        """Score one record: probability, label at the configured threshold, the version that answered."""
        answers, logged = self._score_records([record])
        await self.predictions.append_async(logged)  # durable (fsynced) before the answer leaves
        return answers[0]

    @bentoml.api
    def predict_batch(self, records: BatchOf[Record]) -> list[Prediction]:  # type: ignore[valid-type]
        """Score 1 to ``max_batch_rows`` records at once (rows are routed one by one, as single requests
        would be)."""
        answers, logged = self._score_records(records)
        self.predictions.append(logged)  # durable (fsynced) before the answer leaves
        return answers

    @bentoml.api
    async def predict_columns(
        self,
        columns: Annotated[dict[str, list[Any]], Field(min_length=1)],
        correlation_ids: list[str] | None = None,
        routing_keys: list[str] | None = None,
    ) -> Scored:
        """Score a batch sent column by column ({"columns": {"carrier": [...], ...}}): the fast path for
        large batches. Types, required fields and ranges are checked per column against the same
        contracts as /predict_batch; errors name the column."""
        frame = columns_to_frame(columns)
        n = frame.height
        out, logged = self._score(
            None,
            frame,
            checked_ids("correlation_ids", correlation_ids, n),
            checked_ids("routing_keys", routing_keys, n),
        )
        await self.predictions.append_async(logged)  # durable (fsynced) before the answer leaves
        return out

    @ARROW_APP.post("/", include_in_schema=False)  # documented by complete_openapi as /predict_arrow
    async def predict_arrow(self, request: Request) -> Response:
        """Score a batch sent as an Arrow IPC stream (``Content-Type: application/vnd.apache.arrow.stream``;
        columns: the model's inputs, optionally ``correlation_id`` and ``routing_key``): the fast path
        for large batches, no JSON. Answers an Arrow IPC stream, one row per input row, in order; errors
        are JSON naming the column, as on /predict_columns."""
        try:
            frame, correlation_ids, routing_keys = arrow_to_frame(await request.body())
        except bentoml.exceptions.InvalidArgument as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if self.watcher.models.champion is None:
            return JSONResponse(
                {"error": "no champion model is loaded yet; see /model_status"}, status_code=503
            )
        # a large batch is tens of milliseconds of numpy, polars and LightGBM (which release the GIL):
        # off the event loop, concurrent batches overlap instead of queueing
        out, logged = await anyio.to_thread.run_sync(self._score, None, frame, correlation_ids, routing_keys)
        await self.predictions.append_async(logged)  # durable (fsynced) before the answer leaves
        return Response(content=await anyio.to_thread.run_sync(scored_to_arrow, out), media_type=ARROW_STREAM)

    @bentoml.api
    def feedback(self, items: BatchOf[FeedbackItem]) -> FeedbackResult:
        """Record observed outcomes for request ids this service issued. An id it never issued is
        rejected (its signature says so: no lookup, no log scan); the first outcome for an id counts
        unless a later one is sent with ``correction: true``; each label records its source."""
        now = datetime.now(timezone.utc)
        accepted, rejected = [], []
        for item in items:
            if self.request_ids().verify(item.request_id):
                accepted.append(
                    {
                        "request_id": item.request_id,
                        "ts": now,
                        "outcome": item.outcome,
                        "correction": item.correction,
                        "source": FEEDBACK_SOURCE,
                    }
                )
            else:
                rejected.append(
                    RejectedFeedback(
                        request_id=item.request_id[:128],
                        reason=(
                            "not a request id this service issued: send the request_id /predict returned"
                        ),
                    )
                )
        self.feedback_log.append(accepted)
        return FeedbackResult(accepted=len(accepted), rejected=rejected)

    @bentoml.api
    def model_status(self) -> ModelStatus:
        """Which versions serve, when they were loaded, and any problem loading newer ones."""
        m, s = self.watcher.models, self.watcher.status
        return ModelStatus(
            champion=m.champion.version.version if m.champion else None,
            challenger=m.challenger.version.version if m.challenger else None,
            mode=SETTINGS.serving.mode,
            challenger_share=SETTINGS.serving.challenger_share,
            loaded_at=s.loaded_at,
            last_check=s.last_check,
            problems=[*s.problems, *([self._key_problem] if self._key_problem else [])],
            predictions_logged=self.predictions.shipped_rows,
            log_errors=self.predictions.errors + self.feedback_log.errors,
        )


for _api in Driftloop.apis.values():
    # an unknown top-level field is a 400 naming it (BentoML ignores them), declared in /docs.json as
    # additionalProperties: false; inside a record the request model forbids them already
    _api.input_spec.model_config["extra"] = "forbid"
    _api.input_spec.model_rebuild(force=True)

Driftloop.add_asgi_middleware(
    RequestGuard,
    token=SETTINGS.serving.auth_token,
    feedback_token=SETTINGS.serving.feedback_token,
    max_bytes=SETTINGS.serving.max_request_bytes,
)
