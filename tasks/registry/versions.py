"""The model registry: the single truth about model versions and aliases.

Layout in the artifact store (per model name)::

    registry/<model>/blobs/<uuid>/{model.txt, transform.json, reference_profile.bin, card.md, ...}
    registry/<model>/versions/000001.json     immutable version record, created with if-none-match
    registry/<model>/aliases.json             {"champion": 3, "challenger": 4} + history, compare-and-swap

Registration writes the blobs first, then claims the next version number by creating its record
with a conditional write: a crash before that leaves orphan blobs, never a half-registered version,
and two flows registering at once get different numbers. Alias moves are compare-and-swap loops
on ``aliases.json`` (S3 ``If-Match``; a file lock locally), so concurrent promotions never lose an
update. Models are LightGBM text files, not pickles.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import datetime, timezone
from typing import Any

import lightgbm as lgb
from pydantic import BaseModel, Field

from tasks.core.errors import BadInput
from tasks.model.features import FittedTransform
from tasks.core.settings import PROJECT_DIR, Settings
from tasks.core.store import ArtifactStore, KeyNotFound, PreconditionFailed

ALIASES = ("champion", "challenger")


class ModelVersion(BaseModel):
    model_name: str
    version: int
    created_at: str
    snapshot_id: str
    wandb_run: str | None = None
    git_commit: str
    params: dict[str, Any]
    metrics: dict[str, float]
    test_window: tuple[str, str]
    files: dict[str, str] = Field(description="file name -> store key")
    feature_names: list[str]
    input_columns: list[str]

    @property
    def bento_tag(self) -> str:
        return f"{self.model_name}:v{self.version}"


class AliasChange(BaseModel):
    alias: str
    version: int | None
    previous: int | None
    at: str
    reason: str
    actor: str


class AliasDoc(BaseModel):
    aliases: dict[str, int] = {}
    history: list[AliasChange] = []


class RegistryError(BadInput):
    pass


def git_commit() -> str:
    """The code version a model was trained with (env override for images built without .git)."""
    if os.environ.get("DRIFTLOOP_GIT_COMMIT"):
        return os.environ["DRIFTLOOP_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Registry:
    def __init__(self, store: ArtifactStore, model_name: str):
        self.store = store
        self.model_name = model_name
        self.prefix = f"registry/{model_name}"

    # --- versions ------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        return sorted(int(k.rsplit("/", 1)[1].removesuffix(".json")) for k in self.store.list(f"{self.prefix}/versions")
                      if k.endswith(".json"))

    def get(self, version: int) -> ModelVersion:
        try:
            return ModelVersion.model_validate(self.store.read_json(f"{self.prefix}/versions/{version:06d}.json"))
        except KeyNotFound:
            known = self.versions()
            raise RegistryError(f"model {self.model_name!r} has no version {version}; versions: {known or 'none'}") from None

    def register(self, files: dict[str, bytes], record: dict[str, Any]) -> ModelVersion:
        """Store the files, then atomically claim the next version number for them."""
        blob_prefix = f"{self.prefix}/blobs/{uuid.uuid4().hex}"
        keys = {}
        for name, data in files.items():
            keys[name] = f"{blob_prefix}/{name}"
            self.store.write_bytes(keys[name], data)
        existing = self.versions()
        version = (existing[-1] if existing else 0) + 1
        for _ in range(100):
            mv = ModelVersion(model_name=self.model_name, version=version, files=keys,
                              created_at=datetime.now(timezone.utc).isoformat(), **record)
            try:
                self.store.write_json(f"{self.prefix}/versions/{version:06d}.json", mv.model_dump(mode="json"), if_none_match=True)
                return mv
            except PreconditionFailed:
                version += 1  # someone registered this number first; take the next
        raise RuntimeError(f"could not claim a version number for {self.model_name} after 100 attempts")

    def read_file(self, mv: ModelVersion, name: str) -> bytes:
        return self.store.read_bytes(mv.files[name])

    def load_booster(self, mv: ModelVersion) -> lgb.Booster:
        return lgb.Booster(model_str=self.read_file(mv, "model.txt").decode())

    def load_transform(self, mv: ModelVersion) -> FittedTransform:
        return FittedTransform.from_json(self.read_file(mv, "transform.json"))

    # --- aliases -------------------------------------------------------------------------------
    def alias_doc(self) -> AliasDoc:
        value, _ = self.store.read_json_with_etag(f"{self.prefix}/aliases.json")
        return AliasDoc.model_validate(value) if value else AliasDoc()

    def resolve(self, ref: str | int) -> ModelVersion:
        """A version from a number or an alias name."""
        if isinstance(ref, int) or str(ref).isdigit():
            return self.get(int(ref))
        doc = self.alias_doc()
        if ref not in doc.aliases:
            raise RegistryError(f"model {self.model_name!r} has no {ref!r} alias; aliases: {doc.aliases or 'none'}")
        return self.get(doc.aliases[ref])

    def set_alias(self, alias: str, version: int | None, *, reason: str, actor: str = "driftloop") -> AliasDoc:
        """Point ``alias`` at ``version`` (None removes it), atomically, recording who and why."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; use one of {ALIASES}")
        if version is not None:
            self.get(version)  # must exist
            other = "challenger" if alias == "champion" else "champion"
            if alias == "challenger" and self.alias_doc().aliases.get(other) == version:
                raise RegistryError(f"v{version} of {self.model_name!r} is the champion; a challenger must be another version")
        key = f"{self.prefix}/aliases.json"
        for _ in range(50):
            value, etag = self.store.read_json_with_etag(key)
            doc = AliasDoc.model_validate(value) if value else AliasDoc()
            previous = doc.aliases.get(alias)
            if version is None:
                doc.aliases.pop(alias, None)
            else:
                doc.aliases[alias] = version
            doc.history.append(AliasChange(alias=alias, version=version, previous=previous,
                                           at=datetime.now(timezone.utc).isoformat(), reason=reason, actor=actor))
            try:
                if etag is None:
                    self.store.write_json(key, doc.model_dump(mode="json"), if_none_match=True)
                else:
                    self.store.write_json(key, doc.model_dump(mode="json"), if_match=etag)
                return doc
            except PreconditionFailed:
                continue  # lost a race: re-read and apply again
        raise RuntimeError(f"could not update alias {alias!r} of {self.model_name}: too much contention")


def save_to_bentoml(mv: ModelVersion, registry: Registry, settings: Settings) -> str:
    """Copy a registered version into the BentoML model store (tag ``<model>:v<n>``) for bentos."""
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import bentoml

    try:
        existing = bentoml.models.get(mv.bento_tag)
    except bentoml.exceptions.NotFound:
        existing = None
    if existing is not None:
        same = (existing.info.metadata.get("registry_store") == registry.store.uri
                and existing.info.labels.get("snapshot") == mv.snapshot_id)
        if not same:
            raise RegistryError(
                f"BentoML model {mv.bento_tag} in {settings.bentoml_home} belongs to another registry "
                f"({existing.info.metadata.get('registry_store')}); use a separate BENTOML_HOME per store, or "
                f"`bentoml models delete {mv.bento_tag}` if that registry is gone")
        return str(existing.tag)
    with bentoml.models.create(
        mv.bento_tag,
        labels={"registry_version": str(mv.version), "snapshot": mv.snapshot_id},
        metadata={"registry_store": registry.store.uri, "metrics": mv.metrics, "git_commit": mv.git_commit},
    ) as model:
        for name in ("model.txt", "transform.json"):
            with open(model.path_of(name), "wb") as fh:
                fh.write(registry.read_file(mv, name))
        with open(model.path_of("registry_version.json"), "w") as fh:
            fh.write(mv.model_dump_json())
    return mv.bento_tag


# --- Prefect tasks ---------------------------------------------------------------------------------
from tasks.orchestration import cached_task, io_task  # noqa: E402
from tasks.core.store import open_store  # noqa: E402


@cached_task(name="register-model")
def register_model_version(model_name: str, files: dict[str, str], record: dict[str, Any], settings: Settings) -> ModelVersion:
    """Register the candidate: copy its files (store keys) into the registry and claim a version."""
    store = open_store(settings)
    return Registry(store, model_name).register({name: store.read_bytes(key) for name, key in files.items()}, record)


@cached_task(name="apply-decision")
def apply_promotion_decision(model_name: str, version: int, outcome: str, reason: str, settings: Settings) -> dict[str, int]:
    """Move the decided alias to the new version (atomic compare-and-swap)."""
    doc = Registry(open_store(settings), model_name).set_alias(outcome, version, reason=reason, actor="training-flow")
    return doc.aliases


@io_task(name="save-to-bentoml")
def save_version_to_bentoml(model_name: str, version: int, settings: Settings) -> str:
    registry = Registry(open_store(settings), model_name)
    return save_to_bentoml(registry.get(version), registry, settings)
