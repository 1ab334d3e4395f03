"""Notification automation as code: every driftloop event is sent to a webhook.

    python -m deployments.automations --webhook-url http://127.0.0.1:8765/hook

Creates (or updates) a ``CustomWebhookNotificationBlock`` named ``driftloop-notify`` and an
automation of the same name that fires on every lifecycle and monitoring event. Running it again
changes nothing but the URL. The retraining automation itself lives in prefect.yaml (a deployment
trigger on the ``retrain`` deployment).
"""

from __future__ import annotations

import argparse

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

NAME = "driftloop-notify"
EVENTS = {
    "driftloop.drift.detected",
    "driftloop.performance.degraded",
    "driftloop.performance.estimated_drop",
    "driftloop.retrain.needed",
    "driftloop.data_quality.failed",
    "driftloop.model.registered",
    "driftloop.model.promoted",
    "driftloop.model.rolled_back",
    "driftloop.model.canary.started",
    "driftloop.model.canary.stopped",
    "driftloop.retrain.rejected",
}


def ensure_notifications(webhook_url: str) -> Automation:
    """Create or update the webhook block and the automation; idempotent."""
    block = CustomWebhookNotificationBlock(
        name="driftloop",
        url=webhook_url,
        method="POST",
        allow_private_urls=True,
        json_data={"event": "{{subject}}", "details": "{{body}}"},
    )
    block_id = block.save(NAME, overwrite=True)
    automation = Automation(
        name=NAME,
        description="Send every driftloop lifecycle and monitoring event to the notification webhook",
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "driftloop.model.*"},
            expect=EVENTS,
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="{{ event.event }}",
                body="{{ event.resource['prefect.resource.id'] }}: {{ event.payload }}",
            )
        ],
    )
    try:
        existing = Automation.read(name=NAME)
    except ValueError:
        existing = None
    if existing is None:
        return automation.create()
    automation.id = existing.id
    automation.update()
    return Automation.read(id=existing.id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhook-url", required=True, help="where to POST each event (JSON)")
    args = parser.parse_args()
    automation = ensure_notifications(args.webhook_url)
    print(f"automation {automation.name} ({automation.id}) sends driftloop events to {args.webhook_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
