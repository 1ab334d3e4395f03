"""What the service serves, found once when it starts: its settings (plus what a packaged bento says),
its store, and the dataset config of its model, answered by the registry's ``model_config_of``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tasks.core.config import DatasetConfig, config_from_template
from tasks.core.settings import Settings
from tasks.core.store import ArtifactStore, open_store
from tasks.model.features import FittedTransform
from tasks.registry.versions import CONFIG_FILE, Registry, model_config_of

log = logging.getLogger("driftloop.service")


def settings_of_this_process(manifest: Path) -> Settings:
    """The settings, plus what the bento this code runs from says. A bento's ``envs`` (which name its
    packaged model) are set in the image it becomes, not by ``bentoml serve <tag>``: read them from
    the bento's own ``bento.yaml`` (``manifest``, beside ``src/``), so an imported bento serves its
    packaged model wherever it runs. Values set in the environment win."""
    settings = Settings()
    if settings.packaged_model or not manifest.is_file():
        return settings
    import yaml

    envs = {e.get("name"): e.get("value") for e in yaml.safe_load(manifest.read_text()).get("envs") or []}
    packaged = envs.get("DRIFTLOOP_PACKAGED_MODEL")
    return settings.model_copy(update={"packaged_model": packaged}) if packaged else settings


def open_service_store(settings: Settings) -> ArtifactStore:
    """The artifact store the service reads the registry from and logs to. A named AwsCredentials block
    needs the Prefect API, so only then is the Prefect side loaded; keys or the task role need nothing
    more."""
    if settings.s3.credentials_block:
        from flows.steps.runtime import aws_credentials_from_block

        return open_store(settings, aws_credentials_from_block(settings))
    return open_store(settings)


def served_config(settings: Settings) -> DatasetConfig:
    """The dataset config of the model this service serves: the one packaged with it (a bento), else
    the registry's answer for the model (``model_config_of``). A store that cannot be read at start
    does not crash-loop the service when the settings' own file names the model: its schema serves."""
    variables = settings.config_variables(os.environ)
    if settings.packaged_model:
        import bentoml

        model = bentoml.models.get(settings.packaged_model)
        path = Path(model.path_of(CONFIG_FILE))
        if path.is_file():
            return config_from_template(
                json.loads(path.read_text()), variables, f"{settings.packaged_model} ({CONFIG_FILE})"
            )
    file_config = settings.load_dataset(environ=os.environ)
    name = settings.serving.model_name or file_config.model_name
    try:
        registry = Registry(open_service_store(settings), name)
        return model_config_of(registry, file_config, variables, must_be_registered=False)
    except Exception as exc:  # noqa: BLE001 - an unreachable store must not crash-loop the service
        if file_config.model_name != name:
            raise
        log.warning(
            "driftloop: registry unreadable at start (%s); request schema from %s", exc, file_config.origin
        )
        return file_config


def served_kind(settings: Settings, config: DatasetConfig) -> str:
    """The kind of target the served model predicts (what its answers look like): stated in its config,
    else its champion's (the kind the data showed when it was trained: the packaged one's in a bento),
    else yes/no. A version of another kind is then refused by the watcher, naming the restart it needs."""
    if config.target.kind:
        return config.target.kind
    try:
        if settings.packaged_model:
            import bentoml

            path = Path(bentoml.models.get(settings.packaged_model).path_of("transform.json"))
            return FittedTransform.from_json(path.read_text()).task.kind
        registry = Registry(open_service_store(settings), config.model_name)
        champion = registry.alias_doc().aliases.get("champion")
        if champion is not None:
            return registry.load_transform(registry.get(champion)).task.kind
    except Exception as exc:  # noqa: BLE001 - an unreadable store must not crash-loop the service
        log.warning("driftloop: the champion's target kind is unreadable at start (%s): yes/no assumed", exc)
    return "binary"


def store_locations(settings: Settings) -> list[str]:
    """What names where the store is (its URI, local root, S3 bucket and endpoint): words an answer to a
    caller must not carry (``redacted``)."""
    uri = settings.store_uri
    found = [uri, str(Path(uri).resolve()) if "://" not in uri else ""]
    if uri.startswith("s3://"):
        found.append(uri.removeprefix("s3://").split("/", 1)[0])  # the bucket
    found.append(settings.s3.endpoint_url or "")
    return sorted({f for f in found if len(f) > 2}, key=len, reverse=True)  # longest first


def redacted(text: str, locations: list[str]) -> str:
    """``text`` with every store location replaced by ``<store>``."""
    for location in locations:
        text = text.replace(location, "<store>")
    return text
