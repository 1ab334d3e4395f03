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

from flows.schemas import LineageParams
from flows.steps.command_line import run_from_command_line
from flows.steps.monitoring import trace_lineage
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name


@flow(name="lineage", **FLOW_GUARDS, flow_run_name=run_name("lineage"), persist_result=True)
def lineage(params: LineageParams) -> dict[str, Any]:
    """Trace a prediction (by the request id the service issued) or a model version back to its data:
    version, W&B run, snapshot, raw batches, alias history. Runs when asked."""
    ctx = flow_context(params.model_name, needs="registered")
    result = trace_lineage(ctx.model_name(params.model_name), params.request_id, params.version, ctx)
    what = f"request {params.request_id}" if params.request_id else f"v{params.version}"
    publish(
        create_markdown_artifact,
        key="lineage",
        description=f"lineage of {what}",
        markdown=f"# Lineage of {what}\n\n```json\n{json.dumps(result, indent=2, default=str)}\n```\n",
    )
    return result


if __name__ == "__main__":
    run_from_command_line(lineage, LineageParams)
