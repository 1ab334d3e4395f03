"""Prefect events for the model lifecycle: the resource is the model, the payload the evidence.

Event names: ``driftloop.model.registered``, ``.promoted``, ``.rolled_back``, ``.canary.started``
(lifecycle) and ``driftloop.drift.detected``, ``driftloop.performance.degraded``,
``driftloop.data_quality.failed`` (monitoring). Automations in prefect.yaml match on
``prefect.resource.id: driftloop.model.<name>``.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event


def model_resource(model_name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"driftloop.model.{model_name}", "prefect.resource.name": model_name,
            "driftloop.model-name": model_name}


def emit_model_event(event: str, model_name: str, payload: dict[str, Any]) -> str | None:
    """Emit ``event`` about ``model_name``; returns the event id (None when events are off)."""
    sent = emit_event(event=event, resource=model_resource(model_name), payload={"model_name": model_name, **payload})
    return str(sent.id) if sent else None
