"""BentoML: registered versions in BentoML's model store, and bentos built from them.

``save_to_bentoml`` copies a registry version into the BentoML model store; ``build_bento`` packages
one as a bento (the service, its model, pinned requirements and a generated Dockerfile), built with
``bentoml build`` and exported through the artifact store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from pydantic import BaseModel

from tasks.core.settings import PROJECT_DIR, Settings
from tasks.registry.versions import CARD_FILE, CONFIG_FILE, ModelVersion, Registry, RegistryError

SERVING_REQUIREMENTS = PROJECT_DIR / "bentos" / "requirements.in"  # what the service needs, by name
SERVING_LOCK = PROJECT_DIR / "bentos" / "requirements.lock"  # those, pinned with hashes (`make lock`)


def serving_packages() -> list[str]:
    """The distributions a bento installs by name (``bentos/requirements.in``)."""
    lines = (line.split("#")[0].strip() for line in SERVING_REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def save_to_bentoml(mv: ModelVersion, registry: Registry, settings: Settings) -> str:
    """Copy a registered version into the BentoML model store (tag ``<model>:v<n>``) for bentos.

    The store is BentoML's own (``BENTOML_HOME``, which the run context points at ``settings.bentoml_home``).
    """
    import bentoml

    try:
        existing = bentoml.models.get(mv.bento_tag)
    except bentoml.exceptions.NotFound:
        existing = None
    if existing is not None:
        same = (
            existing.info.metadata.get("registry_store") == registry.store.uri
            and existing.info.labels.get("snapshot") == mv.snapshot_id
        )
        if not same:
            raise RegistryError(
                f"BentoML model {mv.bento_tag} in {settings.bentoml_home} belongs to another registry "
                f"({existing.info.metadata.get('registry_store')}); "
                "use a separate BENTOML_HOME per store, or "
                f"`bentoml models delete {mv.bento_tag}` if that registry is gone"
            )
        return str(existing.tag)
    with bentoml.models.create(
        mv.bento_tag,
        labels={"registry_version": str(mv.version), "snapshot": mv.snapshot_id},
        metadata={"registry_store": registry.store.uri, "metrics": mv.metrics, "git_commit": mv.git_commit},
    ) as model:
        for name in ("model.txt", "transform.json", CONFIG_FILE, CARD_FILE):
            if name not in mv.files:
                continue  # versions registered before configs (or cards) were kept
            with open(model.path_of(name), "wb") as fh:
                fh.write(registry.read_file(mv, name))
        with open(model.path_of("registry_version.json"), "w") as fh:
            fh.write(mv.model_dump_json())
    return mv.bento_tag


class PackagedBento(BaseModel):
    bento_tag: str
    model_tag: str
    version: int
    export_key: str
    export_url: str
    dockerfile: str


def bentofile(model_name: str, model_tag: str, version: int, snapshot_id: str, card: str = "") -> dict:
    """The bento's build spec; its description (the bento's README) is the version's model card."""
    title = f"driftloop prediction service for {model_name} (registry version {version})"
    return {
        "service": "bentos.service:Driftloop",
        "name": model_name,
        "description": f"{title}\n\n{card}" if card else title,
        "labels": {"registry_version": str(version), "snapshot": snapshot_id, "owner": "driftloop"},
        "include": ["bentos/*.py", "bentos/*.json", "tasks/**/*.py", "configs/*.yaml"],
        # the lock the development venv and the flow image install from, cut to what serving needs
        "python": {"requirements_txt": str(SERVING_LOCK.relative_to(PROJECT_DIR)), "lock_packages": False},
        "models": [model_tag],
        "envs": [
            {"name": "DRIFTLOOP_PACKAGED_MODEL", "value": model_tag},
            {"name": "BENTOML_DO_NOT_TRACK", "value": "true"},
        ],
        "docker": {"python_version": "3.11"},
    }


def build_bento(registry: Registry, ref: str, settings: Settings) -> PackagedBento:
    """Resolve ``ref`` (alias or version), build the bento, export it to ``bentos/`` in the store."""
    import bentoml

    store, model_name = registry.store, registry.model_name
    mv = registry.resolve(ref)
    model_tag = save_to_bentoml(mv, registry, settings)
    card = registry.read_file(mv, CARD_FILE).decode() if CARD_FILE in mv.files else ""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bentofile.yaml"
        spec.write_text(
            yaml.safe_dump(
                bentofile(model_name, model_tag, mv.version, mv.snapshot_id, card), sort_keys=False
            )
        )
        try:  # rebuilding a version replaces its bento (the code may have changed since)
            bentoml.bentos.delete(f"{model_name}:v{mv.version}")
        except bentoml.exceptions.NotFound:
            pass
        bento = bentoml.bentos.build_bentofile(
            str(spec), build_ctx=str(PROJECT_DIR), version=f"v{mv.version}"
        )
        dockerfile = Path(bento.path) / "env" / "docker" / "Dockerfile"
        exported = bentoml.export_bento(bento.tag, str(Path(tmp) / f"{model_name}-v{mv.version}.bento"))
        key = f"bentos/{model_name}/v{mv.version}.bento"
        store.write_bytes(key, Path(exported).read_bytes())
    return PackagedBento(
        bento_tag=str(bento.tag),
        model_tag=model_tag,
        version=mv.version,
        export_key=key,
        export_url=store.url(key),
        dockerfile=str(dockerfile),
    )


def containerize(bento_tag: str, image_tag: str, backend: str = "docker", network: str | None = None) -> str:
    """Build the bento's container image with BentoML's own ``containerize`` (its generated Dockerfile,
    never a hand-written one) on ``backend`` (``docker``, or ``podman`` where there is no Docker
    daemon). ``network="host"``: the build's package installs reach the index as this machine does.

    The generated Dockerfile names its public base (``python:3.11-slim``): where no registry is
    reachable, ``make images`` puts a stand-in under that name (infra/containers/podman.sh)."""
    import bentoml

    options = {"network": network} if network else {}
    try:
        bentoml.container.build(bento_tag, backend=backend, image_tag=(image_tag,), **options)
    except Exception as exc:  # noqa: BLE001 - say which bento and backend, and what to look at
        raise RegistryError(
            f"containerizing bento {bento_tag} with {backend} failed: {exc}. Check that {backend} works "
            f"(`{backend} info`) and that its base image is reachable (`make images` makes one here)"
        ) from exc
    return image_tag
