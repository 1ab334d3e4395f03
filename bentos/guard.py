"""The request guard: ASGI middleware that answers what must be answered before any parsing.

Per request, from the endpoint's declaration (``bentos.endpoints``): the bearer token it needs (with
auth on, scoring needs ``auth_token`` and ``/feedback`` its own ``feedback_token``; compared in
constant time), a 503 that says why while no champion is loaded (BentoML hides the message of any 5xx
an endpoint raises), the one Content-Type its body may have, and the size limit, however the body is
framed. It also serves ``/docs.json`` completed with what the service really answers, and turns
BentoML's one-element error lists into the one error object the document declares.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable

from pydantic import SecretStr
from starlette.responses import JSONResponse

from bentos.endpoints import JSON, Endpoint, endpoint_of, paths_with
from tasks.serving.openapi import complete_openapi


class _Repeated(ValueError):
    def __init__(self, key: str):
        self.key = key


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        raise _Repeated(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return value


def repeated_key(body: bytes) -> str | None:
    """A key a JSON object of ``body`` names twice (most parsers, BentoML's included, keep the last
    value silently: a record whose ``carrier`` is "UA" to one reader and "ZZ" to another), or None.
    A body that is not JSON is left to the endpoint, which says what is wrong with it."""
    try:
        json.loads(body, object_pairs_hook=_no_repeats)
    except _Repeated as repeated:
        return repeated.key[:100]
    except ValueError:
        return None
    return None


def _answer(status: int, error: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class RequestGuard:
    """Tokens, the champion check, the body type and the size limit, before the app sees a request."""

    def __init__(
        self,
        app: Any,
        token: SecretStr | None,
        feedback_token: SecretStr | None,
        max_bytes: int,
        champion_missing: Callable[[], str | None],
        documented_beside: Callable[[], dict[str, Any]],
        columns_of: dict[str, tuple[str, int]] | None = None,
        degraded: Callable[[], str | None] = lambda: None,
    ):
        """``champion_missing``: why no champion serves (None when one does); ``documented_beside``:
        the OpenAPI operations of mounted endpoints, which BentoML's generator does not see."""
        self.app, self.max_bytes = app, max_bytes
        self.token = token.get_secret_value().encode() if token else None
        self.feedback_token = feedback_token.get_secret_value().encode() if feedback_token else None
        self.champion_missing, self.documented_beside = champion_missing, documented_beside
        self.columns_of = columns_of  # path -> (record schema, most rows): batches sent column by column
        self.degraded = degraded  # why the champion answering is a fallback (None: it is the registry's)

    def _refusal(self, endpoint: Endpoint, authorization: bytes) -> tuple[int, str] | None:
        presented = authorization.removeprefix(b"Bearer ") if authorization.startswith(b"Bearer ") else b""
        if endpoint.token == "feedback":
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

    def _early_answer(
        self, endpoint: Endpoint, scope: dict, headers: dict[bytes, bytes]
    ) -> JSONResponse | None:
        """The answer this request gets before its body is read, if any."""
        refused = self._refusal(endpoint, headers.get(b"authorization", b""))
        if refused:
            return _answer(*refused)
        if endpoint.needs_champion:
            missing = self.champion_missing()
            if missing:
                return _answer(503, missing, {"Retry-After": "5"})
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        expected = endpoint.body.encode()
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        must_say = has_body and scope.get("method") == "POST"  # a body's type is said, never guessed
        if (media_type or must_say) and media_type != expected:
            what = "JSON (application/json)" if endpoint.body == JSON else endpoint.body
            return _answer(415, f"unsupported Content-Type {media_type.decode('latin-1')!r}: send {what}")
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return _answer(400, "invalid Content-Length header")
        if length is not None and int(length) > self.max_bytes:
            return self._too_large(int(length))
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/docs.json":
            return await self._openapi(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == "/readyz" and self.champion_missing() is None:
            fallback = self.degraded()
            if fallback:  # ready, for it answers, but not with the registry's champion: say so
                return await JSONResponse({"ready": True, "degraded": fallback})(scope, receive, send)
        endpoint = endpoint_of(scope["path"]) if scope["type"] == "http" else None
        if scope["type"] != "http" or (endpoint is not None and endpoint.token == "none"):
            return await self.app(scope, receive, send)
        endpoint = endpoint or Endpoint(scope["path"], "scoring")  # undeclared: held to the strictest
        if endpoint.mounted and scope["path"] == endpoint.path:  # the mounted app's route, no redirect
            scope = {**scope, "path": endpoint.path + "/", "raw_path": endpoint.path.encode() + b"/"}
        answer = self._early_answer(endpoint, scope, dict(scope.get("headers") or []))
        if answer is not None:
            return await answer(scope, receive, send)
        body, over = await self._read_body(receive)
        if body is None:
            return await self.app(scope, receive, send)  # the client went away
        if over is not None:
            return await self._too_large(*over)(scope, receive, send)
        if endpoint.body == JSON and body:
            repeated = repeated_key(body)
            if repeated:
                return await _answer(
                    400, f"the JSON body names {repeated!r} twice in one object: send each field once"
                )(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, self._one_error_object(send))

    async def _read_body(self, receive: Any) -> tuple[bytes | None, tuple[int, bool] | None]:
        """The whole body, read before the app sees any of it, at most the limit + 1 chunk: the declared
        length may be absent (chunked) or wrong, and an oversized body is a 413 however it is framed.
        Returns (body, None), (b"", (bytes seen, more to come)) when over the limit, (None, None) when
        the client went away."""
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None, None
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.max_bytes:
                return b"", (seen, more)
        return b"".join(chunks), None

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
            paths_with(needs_champion=True),
            paths_with(token="feedback"),
            auth=self.token is not None,
            extra_paths=self.documented_beside(),
            columns_of=self.columns_of,
        )
        await JSONResponse(spec)(scope, receive, send)

    def _too_large(self, size: int, at_least: bool = False) -> JSONResponse:
        return _answer(
            413,
            f"request body of {'more than ' if at_least else ''}{size} bytes exceeds the limit "
            f"of {self.max_bytes} (DRIFTLOOP_SERVING__MAX_REQUEST_BYTES); split the batch",
        )
