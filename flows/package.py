"""The package flow: a registered model version -> a bento (service + model + requirements +
Dockerfile), exported to the artifact store.

    python flows/package.py --ref champion          # or --ref 3
    prefect deployment run 'package/local' -p params='{"ref": "champion"}'

Build the image where a Docker engine exists: ``bentoml containerize <bento_tag>``, or import the
exported file elsewhere with ``bentoml import <file>``.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact

from flows.schemas import PackageParams
from flows.steps.command_line import run_from_command_line
from flows.steps.registry import package_version
from flows.steps.runtime import FLOW_GUARDS, flow_context, publish, run_name
from tasks.registry.packaging import PackagedBento


@flow(name="package", **FLOW_GUARDS, flow_run_name=run_name("package"), persist_result=True)
def package(params: PackageParams = PackageParams()) -> PackagedBento:
    """Build a version (an alias or a number) into a bento carrying its model, export it to the store and
    write its Dockerfile. Runs when asked, and in the deploy workflow after training."""
    ctx = flow_context(params.model_name, needs="registered")
    model_name = ctx.model_name(params.model_name)
    bento = package_version(model_name, params.ref, ctx)
    url = bento.export_url if "://" in bento.export_url else Path(bento.export_url).resolve().as_uri()
    publish(
        create_link_artifact,
        key=f"{model_name}-bento".replace("_", "-"),
        link=url,
        link_text=f"bento {bento.bento_tag}",
        description=f"Exported bento of {model_name} v{bento.version}",
    )
    get_run_logger().info(
        "built %s (model %s), exported to %s; Dockerfile at %s",
        bento.bento_tag,
        bento.model_tag,
        bento.export_url,
        bento.dockerfile,
    )
    return bento


if __name__ == "__main__":
    run_from_command_line(package, PackageParams)
