"""Packaging a registered model version as a bento: the service, its model(s), pinned requirements
and a generated Dockerfile, built with ``bentoml build`` and exported through the artifact store."""

from __future__ import annotations

import os
import tempfile
from importlib import metadata
from pathlib import Path

import yaml
from pydantic import BaseModel

from tasks.orchestration import io_task
from tasks.registry.versions import Registry, save_to_bentoml
from tasks.core.settings import PROJECT_DIR, Settings
from tasks.core.store import open_store

RUNTIME_PACKAGES = ["bentoml", "lightgbm", "polars", "numpy", "pyarrow", "pydantic", "pydantic-settings", "pyyaml",
                    "boto3", "pandas", "scikit-learn"]


class PackagedBento(BaseModel):
    bento_tag: str
    model_tag: str
    version: int
    export_key: str
    export_url: str
    dockerfile: str


def pinned_requirements() -> list[str]:
    """The serving runtime's packages, pinned to what is installed here (no network needed)."""
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]


def bentofile(model_name: str, model_tag: str, version: int, snapshot_id: str) -> dict:
    return {
        "service": "bentos.service:Driftloop",
        "name": model_name,
        "description": f"driftloop prediction service for {model_name} (registry version {version})",
        "labels": {"registry_version": str(version), "snapshot": snapshot_id, "owner": "driftloop"},
        "include": ["bentos/*.py", "bentos/*.json", "tasks/*.py", "configs/*.yaml"],
        "python": {"packages": pinned_requirements(), "lock_packages": False},
        "models": [model_tag],
        "envs": [{"name": "DRIFTLOOP_PACKAGED_MODEL", "value": model_tag},
                 {"name": "BENTOML_DO_NOT_TRACK", "value": "true"}],
        "docker": {"python_version": "3.11"},
    }


@io_task(name="build-bento")
def build_bento(model_name: str, ref: str, settings: Settings) -> PackagedBento:
    """Resolve ``ref`` (alias or version), build the bento, export it to ``bentos/`` in the store."""
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home))
    import bentoml

    store = open_store(settings)
    registry = Registry(store, model_name)
    mv = registry.resolve(ref)
    model_tag = save_to_bentoml(mv, registry, settings)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bentofile.yaml"
        spec.write_text(yaml.safe_dump(bentofile(model_name, model_tag, mv.version, mv.snapshot_id), sort_keys=False))
        try:  # rebuilding a version replaces its bento (the code may have changed since)
            bentoml.bentos.delete(f"{model_name}:v{mv.version}")
        except bentoml.exceptions.NotFound:
            pass
        bento = bentoml.bentos.build_bentofile(str(spec), build_ctx=str(PROJECT_DIR), version=f"v{mv.version}")
        dockerfile = Path(bento.path) / "env" / "docker" / "Dockerfile"
        exported = bentoml.export_bento(bento.tag, str(Path(tmp) / f"{model_name}-v{mv.version}.bento"))
        key = f"bentos/{model_name}/v{mv.version}.bento"
        store.write_bytes(key, Path(exported).read_bytes())
    return PackagedBento(bento_tag=str(bento.tag), model_tag=model_tag, version=mv.version, export_key=key,
                         export_url=store.url(key), dockerfile=str(dockerfile))
