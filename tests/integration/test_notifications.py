"""The notification automation: created idempotently, and an event reaches every notification block
it names (the plain webhook, and a block a person made in the UI)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.core.errors import BadInput

pytestmark = pytest.mark.integration


def _listener() -> tuple[ThreadingHTTPServer, list[dict]]:
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
    return server, received


def test_events_reach_every_notification_block(prefect_server):
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from deployments.automations import NAME, ensure_notifications
    from flows.steps.events import emit_model_event

    plain, received = _listener()
    team, team_received = _listener()
    try:
        url = f"http://127.0.0.1:{plain.server_port}/hook"
        # a block a person made in the UI, with a payload of their own
        CustomWebhookNotificationBlock(
            name="team",
            url=f"http://127.0.0.1:{team.server_port}/team",
            allow_private_urls=True,
            json_data={"text": "{{subject}}"},
        ).save("team-hook", overwrite=True)
        first = ensure_notifications(url)
        second = ensure_notifications(url, blocks=["custom-webhook/team-hook"])  # updated in place
        assert first.id == second.id and Automation.read(name=NAME).id == first.id
        assert len(first.actions) == 1 and len(second.actions) == 2
        time.sleep(2)  # the server loads changed automations on a short cycle
        emit_model_event("driftloop.drift.detected", "notified-model", {"drifted": ["temp"]}, target="local")
        deadline = time.time() + 30
        while time.time() < deadline and not (received and team_received):
            time.sleep(0.5)
    finally:
        plain.shutdown()
        team.shutdown()
    assert received, "the webhook was not called"
    assert received[0]["event"] == "driftloop.drift.detected"
    assert "driftloop.model.notified-model" in received[0]["details"] and "temp" in received[0]["details"]
    assert team_received == [{"text": "driftloop.drift.detected"}]


def test_notification_blocks_are_named_or_refused_clearly(prefect_server):
    """A Slack incoming webhook becomes a Slack block (nothing is sent: no traffic leaves loopback);
    a block that does not exist, or is no notification block, is refused saying what to do."""
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import SlackWebhook
    from prefect.blocks.system import Secret

    from deployments.automations import NAME, notification_blocks

    [slack_id] = notification_blocks(slack_webhook_url="https://hooks.slack.com/services/T000/B000/XXXX")
    saved = SlackWebhook.load(NAME)
    assert saved._block_document_id == slack_id and saved.url.get_secret_value().endswith("/T000/B000/XXXX")
    assert notification_blocks(blocks=[f"slack-webhook/{NAME}"]) == [slack_id]

    with pytest.raises(BadInput, match=r"no such block .*prefect block create slack-webhook"):
        notification_blocks(blocks=["slack-webhook/nobody-made-this"])
    Secret(value="s3cret").save("not-a-notifier", overwrite=True)
    with pytest.raises(BadInput, match="is a Secret, not a notification block"):
        notification_blocks(blocks=["secret/not-a-notifier"])
    with pytest.raises(BadInput, match="<block-type-slug>/<name>"):
        notification_blocks(blocks=["team-hook"])
    with pytest.raises(BadInput, match="say where notifications go"):
        notification_blocks()
    assert isinstance(Block.load(f"slack-webhook/{NAME}"), SlackWebhook)
