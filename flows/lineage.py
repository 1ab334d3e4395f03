"""The lineage flow: where did a prediction (or a model version) come from?

    python flows/lineage.py --request-id 3f2a…          # prediction -> model -> W&B run, snapshot, raw data
    python flows/lineage.py --version 2                 # a model version and its promotions/rollbacks
    prefect deployment run 'lineage/local' -p params='{"request_id": "…"}'
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field, model_validator

from tasks.monitoring.lineage import request_lineage, version_lineage
from tasks.orchestration import io_task, publish
from tasks.registry.versions import Registry
from tasks.core.settings import Settings
from tasks.core.store import open_store


class LineageParams(BaseModel):
    request_id: str | None = Field(None, description="a prediction's request id")
    version: int | None = Field(None, ge=1, description="a model version")
    model_name: str | None = Field(None, description="registry name (default: the dataset config's)")

    @model_validator(mode="after")
    def _one_of(self) -> "LineageParams":
        if (self.request_id is None) == (self.version is None):
            raise ValueError("give exactly one of request_id or version")
        return self


@io_task(name="trace-lineage")
def trace(params: LineageParams, settings: Settings) -> dict[str, Any]:
    store = open_store(settings)
    registry = Registry(store, settings.model_name(params.model_name))
    if params.request_id:
        return request_lineage(store, registry, params.request_id)
    return version_lineage(store, registry, params.version)


@flow(name="lineage", persist_result=True)
def lineage(params: LineageParams) -> dict[str, Any]:
    result = trace(params, Settings())
    what = f"request {params.request_id}" if params.request_id else f"v{params.version}"
    publish(create_markdown_artifact, key="lineage", description=f"lineage of {what}",
            markdown=f"# Lineage of {what}\n\n```json\n{json.dumps(result, indent=2, default=str)}\n```\n")
    return result


if __name__ == "__main__":
    from pydantic_settings import CliApp
    from rich.console import Console

    Console().print_json(json.dumps(lineage(CliApp.run(LineageParams)), default=str))
