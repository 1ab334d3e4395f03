"""Notification automation as code: every driftloop event is sent through Prefect notification blocks.

    python -m deployments.automations --webhook-url http://127.0.0.1:8765/hook
    python -m deployments.automations --slack-webhook-url https://hooks.slack.com/services/T/B/X
    python -m deployments.automations --block ms-teams-webhook/ops --block email/oncall

A plain webhook becomes a ``CustomWebhookNotificationBlock`` named ``driftloop-notify``, a Slack
incoming webhook a ``SlackWebhook`` block of that name; ``--block`` names any notification block
already saved (made in the UI or with ``prefect block create``). One automation, also named
``driftloop-notify``, fires on every lifecycle and monitoring event and notifies each block. Running
it again replaces the blocks it was given. The retraining automation itself lives in prefect.yaml
(a deployment trigger on the ``retrain`` deployment).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from uuid import UUID

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from tasks.core.errors import BadInput

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


def _block_id(ref: str) -> UUID:
    """The document id of the notification block ``<block-type-slug>/<name>`` (one made in the UI, with
    ``prefect block create``, or in code), or an error saying what to do."""
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import NotificationBlock

    if ref.count("/") != 1:
        raise BadInput(
            f"--block {ref!r}: name a block as <block-type-slug>/<name>, e.g. slack-webhook/team-alerts"
        )
    try:
        block = Block.load(ref)
    except ValueError as exc:
        raise BadInput(
            f"--block {ref!r}: no such block ({exc}); create it in the Prefect UI (Blocks, +) or with "
            f"`prefect block create {ref.split('/')[0]}`"
        ) from None
    if not isinstance(block, NotificationBlock):
        raise BadInput(
            f"--block {ref!r} is a {type(block).__name__}, not a notification block (Slack, Microsoft Teams, "
            "PagerDuty, Opsgenie, Twilio, Discord, Mattermost, email, custom webhook)"
        )
    return block._block_document_id


def notification_blocks(
    webhook_url: str | None = None, slack_webhook_url: str | None = None, blocks: Sequence[str] = ()
) -> list[UUID]:
    """Where the notifications go, as Prefect notification blocks: a plain webhook (a custom webhook
    block named ``driftloop-notify``, created or updated), a Slack incoming webhook (a ``slack-webhook``
    block named ``driftloop-notify``), and any existing notification blocks by ``<type>/<name>``."""
    ids = []
    if webhook_url:
        block = CustomWebhookNotificationBlock(
            name="driftloop",
            url=webhook_url,
            method="POST",
            allow_private_urls=True,
            json_data={"event": "{{subject}}", "details": "{{body}}"},
        )
        ids.append(block.save(NAME, overwrite=True))
    if slack_webhook_url:
        ids.append(SlackWebhook(url=slack_webhook_url).save(NAME, overwrite=True))
    ids += [_block_id(ref) for ref in blocks]
    if not ids:
        raise BadInput(
            "say where notifications go: --webhook-url, --slack-webhook-url or --block <type>/<name>"
        )
    return ids


def ensure_notifications(
    webhook_url: str | None = None, slack_webhook_url: str | None = None, blocks: Sequence[str] = ()
) -> Automation:
    """Create or update the notification blocks and the automation sending every driftloop event to
    each of them; idempotent."""
    block_ids = notification_blocks(webhook_url, slack_webhook_url, blocks)
    automation = Automation(
        name=NAME,
        description="Send every driftloop lifecycle and monitoring event to the notification blocks",
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
            for block_id in block_ids
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
    parser.add_argument("--webhook-url", help="POST each event (JSON) to this URL")
    parser.add_argument(
        "--slack-webhook-url", help="a Slack incoming webhook (https://hooks.slack.com/services/...)"
    )
    parser.add_argument(
        "--block",
        action="append",
        default=[],
        help="an existing Prefect notification block, <block-type-slug>/<name> (repeat for several)",
    )
    args = parser.parse_args()
    try:
        automation = ensure_notifications(args.webhook_url, args.slack_webhook_url, args.block)
    except BadInput as exc:
        parser.error(str(exc))
    blocks = len(automation.actions)
    print(f"automation {automation.name} ({automation.id}) sends driftloop events to {blocks} block(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
