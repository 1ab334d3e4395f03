"""The request timeout the service installs in place of BentoML's (``bentos/timeouts.py``)."""

from __future__ import annotations

import asyncio
import inspect

from bentoml._internal.server import base_app
from bentoml._internal.server.http import traffic

from bentos.timeouts import _UPSTREAM, PromptTimeoutMiddleware, install


async def _call(middleware, path: str = "/predict") -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await middleware({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    return sent


async def _ok(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _armed_timers(loop: asyncio.AbstractEventLoop) -> int:
    return sum(not h.cancelled() for h in loop._scheduled)  # noqa: SLF001 - what the fix is about


def test_answered_requests_leave_no_timer_behind_where_bentomls_leave_one_each():
    async def run(cls) -> int:
        middleware = cls(_ok, timeout=30)
        for _ in range(500):
            assert (await _call(middleware))[0]["status"] == 200
        return _armed_timers(asyncio.get_running_loop())

    assert asyncio.run(run(PromptTimeoutMiddleware)) == 0
    # the upstream middleware this replaces: one live 30 s timer (and the request's context) per request;
    # if this fails, BentoML fixed it: drop bentos/timeouts.py
    assert asyncio.run(run(_UPSTREAM)) == 500


def test_a_request_without_an_answer_in_time_is_a_504_and_one_that_ends_unanswered_disarms():
    async def slow(scope, receive, send) -> None:
        await asyncio.sleep(5)

    async def silent(scope, receive, send) -> None:  # the client went away: nothing to answer
        return None

    async def run() -> tuple[list[dict], int]:
        timed_out = await _call(PromptTimeoutMiddleware(slow, timeout=0.05))
        await _call(PromptTimeoutMiddleware(silent, timeout=30))
        return timed_out, _armed_timers(asyncio.get_running_loop())

    timed_out, armed = asyncio.run(run())
    assert timed_out[0]["status"] == 504 and b"0.05 seconds" in timed_out[1]["body"]
    assert armed == 0


def test_bentoml_builds_its_app_with_the_installed_middleware():
    """The seam: BentoML imports the class from its module when it builds the middleware list."""
    install()
    assert "from .http.traffic import TimeoutMiddleware" in inspect.getsource(
        base_app.BaseAppFactory.middlewares.fget
    )
    assert traffic.TimeoutMiddleware is PromptTimeoutMiddleware

    class App(base_app.BaseAppFactory):
        name = "probe"

        @property
        def on_startup(self):  # noqa: ANN201
            return []

        @property
        def on_shutdown(self):  # noqa: ANN201
            return []

    app = App.__new__(App)
    app.timeout, app.max_concurrency = 30, None
    assert [m.cls for m in app.middlewares] == [PromptTimeoutMiddleware]
