"""The notification automation: created idempotently, and an event reaches the webhook."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.integration


def test_events_reach_the_webhook(prefect_server):
    from prefect.automations import Automation

    from deployments.automations import NAME, ensure_notifications
    from flows.steps.events import emit_model_event

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        first = ensure_notifications(url)
        second = ensure_notifications(url)  # idempotent: the same automation, updated in place
        assert first.id == second.id and Automation.read(name=NAME).id == first.id
        time.sleep(2)  # the server loads new automations on a short cycle
        emit_model_event("driftloop.drift.detected", "notified-model", {"drifted": ["temp"]}, target="local")
        deadline = time.time() + 30
        while time.time() < deadline and not received:
            time.sleep(0.5)
    finally:
        server.shutdown()
    assert received, "the webhook was not called"
    assert received[0]["event"] == "driftloop.drift.detected"
    assert "driftloop.model.notified-model" in received[0]["details"] and "temp" in received[0]["details"]
