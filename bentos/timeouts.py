"""BentoML's request timeout, without the 30 seconds of garbage it leaves behind every request.

BentoML (1.4.x, ``bentoml._internal.server.http.traffic.TimeoutMiddleware``) starts a timer per request
with ``loop.call_later(timeout, ...)`` and never cancels it. The timer keeps the request's context alive
(its OpenTelemetry span, futures, attributes) until it fires, ``traffic.timeout`` seconds later: at 700
requests/s with a 30 s timeout that is ~20,000 requests' objects alive at any time, which the garbage
collector walks again on every full pass. Measured on the single-row benchmark: full collections grew
from 13 ms to 570 ms within 40 s of load and stalled every in-flight request (p99 ~210 ms, p99.9 ~500 ms).

``PromptTimeoutMiddleware`` is the same middleware (same timeout, same 504 answer) whose timer is
cancelled as soon as the answer starts, or the request ends without one. ``install()`` puts it where
BentoML looks the class up when it builds its app (``BaseAppFactory.middlewares`` imports it from the
module at that moment); ``tests/code/test_timeouts.py`` fails if a BentoML upgrade moves that seam.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

_UPSTREAM = traffic.TimeoutMiddleware


class PromptTimeoutMiddleware(_UPSTREAM):
    """A request that has not started its answer within ``timeout`` seconds is cancelled and answered
    504; the timer goes as soon as the answer starts."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, answered)

        async def send_and_disarm(message: dict) -> None:
            if not answered.done():
                answered.set_result(None)
                timer.cancel()
            await send(message)

        app = asyncio.ensure_future(self.app(scope, receive, send_and_disarm))
        # an app that ends without answering (the client went away) disarms the timer as well
        app.add_done_callback(lambda _: answered.done() or answered.set_result(None))
        try:
            await answered
        except asyncio.TimeoutError:
            if app.cancel():
                await JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
                )(scope, receive, send)
        else:
            await app
        finally:
            timer.cancel()


def install() -> None:
    """Make BentoML build its apps with ``PromptTimeoutMiddleware`` (call before the service's app is
    built, i.e. when the service module is imported)."""
    traffic.TimeoutMiddleware = PromptTimeoutMiddleware
