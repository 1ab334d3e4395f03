"""Prefect events for the model lifecycle: the resource is the model, the payload the evidence.

Event names: ``driftloop.model.registered``, ``.promoted``, ``.rolled_back``, ``.canary.started``
(lifecycle) and ``driftloop.drift.detected``, ``driftloop.performance.degraded``,
``driftloop.data_quality.failed`` (monitoring). Automations in prefect.yaml match on
``prefect.resource.id: driftloop.model.<name>`` and ``driftloop.target: local|cloud``.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event


def model_resource(model_name: str, target: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"driftloop.model.{model_name}",
        "prefect.resource.name": model_name,
        "driftloop.model-name": model_name,
        "driftloop.target": target,
    }


def emit_model_event(event: str, model_name: str, payload: dict[str, Any], target: str) -> str | None:
    """Emit ``event`` about ``model_name``; returns the event id (None when events are off).

    The resource carries ``driftloop.target`` (the run context's: local or cloud) so that the local and
    the cloud retrain deployments each react only to events from their own side.
    """
    sent = emit_event(
        event=event,
        resource=model_resource(model_name, target),
        payload={"model_name": model_name, **payload},
    )
    return str(sent.id) if sent else None
