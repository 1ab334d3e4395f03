"""The model registry: the single truth about model versions and aliases.

Layout in the artifact store (per model name)::

    registry/<model>/blobs/<uuid>/{model.txt, transform.json, dataset_config.json, drift_reference.json, ...}
    registry/<model>/versions/000001.json     immutable version record, created with if-none-match
    registry/<model>/aliases.json             {"champion": 3, "challenger": 4} + history, compare-and-swap

Registration writes the blobs first, then claims the next version number by creating its record
with a conditional write: a crash before that leaves orphan blobs, never a half-registered version,
and two flows registering at once get different numbers. Alias moves are compare-and-swap loops
on ``aliases.json`` (S3 ``If-Match``; a file lock locally), so concurrent promotions never lose an
update. Models are LightGBM text files, not pickles.

Each version keeps the dataset config it was trained with (``dataset_config.json``, ``${VAR}``
unexpanded): monitoring, retraining, scoring and the service take a model's config from here, never
from the worker's environment, so one worker and one store serve any number of models.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import lightgbm as lgb
from pydantic import BaseModel, Field, field_validator

from tasks.core.config import ConfigError, DatasetConfig, config_from_template
from tasks.core.errors import BadInput
from tasks.core.settings import PROJECT_DIR
from tasks.core.store import ArtifactStore, KeyNotFound, PreconditionFailed
from tasks.model.features import FittedTransform

ALIASES = ("champion", "challenger")


class VersionDecision(BaseModel):
    """What the gate said when the version was registered (champion, rejected or candidate) and why."""

    outcome: str
    reason: str


class NewVersion(BaseModel):
    """What a training run tells the registry about the model it registers."""

    snapshot_id: str
    wandb_run: str | None = None
    git_commit: str
    params: dict[str, Any]
    metrics: dict[str, float] = Field(
        description="what was measured; a metric that could not be measured (NaN, e.g. the CV mean with "
        "cv_folds 0) is left out rather than written as null"
    )

    @field_validator("metrics", mode="before")
    @classmethod
    def _measured_only(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            k: v for k, v in value.items() if v is not None and not (isinstance(v, float) and math.isnan(v))
        }

    @property
    def threshold(self) -> float:
        """The label threshold chosen on validation when it was trained (0.5 for versions from before
        thresholds were chosen)."""
        return float(self.metrics.get("threshold", 0.5))

    test_window: tuple[str, str]
    feature_names: list[str]
    input_columns: list[str]
    decision: VersionDecision | None = None


class ModelVersion(NewVersion):
    """An immutable registry record: the new version's facts plus its number, time and stored files."""

    model_name: str
    version: int
    created_at: str
    files: dict[str, str] = Field(description="file name -> store key")
    files_sha256: dict[str, str] = Field(
        {}, description="file name -> SHA-256 of its bytes at registration (empty for older records)"
    )

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
    kind: str | None = None  # what the move was: promotion, rollback (None: records before kinds)


class AliasDoc(BaseModel):
    aliases: dict[str, int] = {}
    history: list[AliasChange] = []

    def previous_champion(self) -> int | None:
        """The champion before the current one, from the history (skipping repeats)."""
        current = self.aliases.get("champion")
        for change in reversed(self.history):
            if (
                change.alias == "champion"
                and change.version == current
                and change.previous not in (None, current)
            ):
                return change.previous
        return None

    def past_champions(self) -> list[int]:
        """Every version that was champion before the current one, most recent first (no repeats)."""
        current, seen = self.aliases.get("champion"), []
        for change in reversed(self.history):
            for version in (change.version, change.previous) if change.alias == "champion" else ():
                if version is not None and version != current and version not in seen:
                    seen.append(version)
        return seen

    def alias_set_at(self, alias: str) -> str | None:
        """When ``alias`` was last pointed at the version it names now (e.g. when a canary started)."""
        version = self.aliases.get(alias)
        return max((h.at for h in self.history if h.alias == alias and h.version == version), default=None)


class ChampionMove(BaseModel):
    """A move of the champion alias: to which version, from which, by whom and why."""

    model_name: str
    version: int
    previous: int | None
    reason: str
    actor: str


class RegistryError(BadInput):
    pass


def git_commit(configured: str | None = None) -> str:
    """The code version a model was trained with: ``configured`` (the ``git_commit`` setting, for
    images built without .git), else asked of git."""
    if configured:
        return configured
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


CONFIG_FILE = "dataset_config.json"
CARD_FILE = "model_card.md"  # the model card (tasks.model.card), Markdown


def model_config_of(
    registry: "Registry",
    file_config: DatasetConfig | None,
    variables: Mapping[str, str],
    must_be_registered: bool = True,
) -> DatasetConfig:
    """Which dataset config a model uses, the one answer the flows, the steps and the service share:

    1. the config its current version (champion, else newest) was registered with;
    2. else ``file_config`` (the settings' file) when it names this model: versions registered before
       configs were kept, or (``must_be_registered=False``, the service starting before any training)
       a model with no version yet;
    3. else an error saying why there is none (never registered: naming the models that are)."""
    kept = registry.kept_config(variables)
    if kept is not None:
        return kept
    names_it = file_config is not None and file_config.model_name == registry.model_name
    if names_it and (not must_be_registered or registry.versions()):
        return file_config
    return registry.model_config(variables)


def registered_models(store: ArtifactStore) -> list[str]:
    """Names of the models with at least one version in ``store``."""
    return sorted(
        {k.split("/")[1] for k in store.list("registry") if k.count("/") >= 3 and "/versions/" in k}
    )


class Registry:
    def __init__(self, store: ArtifactStore, model_name: str):
        self.store = store
        self.model_name = model_name
        self.prefix = f"registry/{model_name}"

    # --- versions ------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        return sorted(
            int(k.rsplit("/", 1)[1].removesuffix(".json"))
            for k in self.store.list(f"{self.prefix}/versions")
            if k.endswith(".json")
        )

    def get(self, version: int) -> ModelVersion:
        try:
            return ModelVersion.model_validate(self.store.read_json(self.version_key(version)))
        except KeyNotFound:
            known = self.versions()
            raise RegistryError(
                f"model {self.model_name!r} has no version {version}; versions: {known or 'none'}"
            ) from None

    @property
    def aliases_key(self) -> str:
        return f"{self.prefix}/aliases.json"

    def version_key(self, version: int) -> str:
        return f"{self.prefix}/versions/{version:06d}.json"

    def version_url(self, version: int) -> str:
        """Where a person (or Polars) can open a version's record."""
        return self.store.url(self.version_key(version))

    def register(self, files: dict[str, bytes], record: NewVersion) -> ModelVersion:
        """Store the files, then atomically claim the next version number for them."""
        blob_prefix = f"{self.prefix}/blobs/{uuid.uuid4().hex}"
        keys, digests = {}, {}
        for name, data in files.items():
            keys[name] = f"{blob_prefix}/{name}"
            digests[name] = hashlib.sha256(data).hexdigest()
            self.store.write_bytes(keys[name], data)
        existing = self.versions()
        version = (existing[-1] if existing else 0) + 1
        for _ in range(100):
            mv = ModelVersion(
                model_name=self.model_name,
                version=version,
                files=keys,
                files_sha256=digests,
                created_at=datetime.now(timezone.utc).isoformat(),
                **{f: getattr(record, f) for f in NewVersion.model_fields},
            )
            try:
                self.store.write_json(
                    self.version_key(version), mv.model_dump(mode="json"), if_none_match=True
                )
                return mv
            except PreconditionFailed:
                version += 1  # someone registered this number first; take the next
        raise RuntimeError(f"could not claim a version number for {self.model_name} after 100 attempts")

    def decision_applied(self, mv: ModelVersion) -> bool:
        """Whether what the gate decided at registration has been carried out: a version decided
        champion has been champion at some point; any other outcome needs no alias."""
        if mv.decision is None or mv.decision.outcome != "champion":
            return True
        return any(h.alias == "champion" and h.version == mv.version for h in self.alias_doc().history)

    def read_file(self, mv: ModelVersion, name: str) -> bytes:
        """A version's file, checked against the hash recorded at registration: a file changed or cut
        short since (a bad copy, a truncated upload) is an error naming it, never loaded."""
        data = self.store.read_bytes(mv.files[name])
        expected = mv.files_sha256.get(name)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise RegistryError(
                f"{self.model_name} v{mv.version}: {name} ({len(data)} bytes) does not match the SHA-256 "
                "recorded at registration; the stored file was changed or truncated: re-register the model"
            )
        return data

    # --- the dataset config each version was trained with ----------------------------------------
    def config_template(self, mv: ModelVersion) -> dict[str, Any]:
        """The version's dataset config as written (``${VAR}`` unexpanded); {} for versions registered
        before configs were kept."""
        if CONFIG_FILE not in mv.files:
            return {}
        return json.loads(self.read_file(mv, CONFIG_FILE))

    def load_config(self, mv: ModelVersion, variables: Mapping[str, str]) -> DatasetConfig:
        """The dataset config ``mv`` was trained with, ``${VAR}`` filled from ``variables``."""
        template = self.config_template(mv)
        if not template:
            raise ConfigError(
                f"{self.model_name} v{mv.version} was registered before versions kept their dataset config; "
                "train it again with its config (training flow, dataset_config=<file>)"
            )
        return config_from_template(
            template, variables, f"registry {self.model_name} v{mv.version} ({CONFIG_FILE})"
        )

    def current_version(self) -> ModelVersion | None:
        """The version that speaks for the model: its champion, else its newest (None: no versions)."""
        versions = self.versions()
        if not versions:
            return None
        return self.get(self.alias_doc().aliases.get("champion", versions[-1]))

    def kept_config(self, variables: Mapping[str, str]) -> DatasetConfig | None:
        """The config the current version was trained with; None if there is no version, or it was
        registered before versions kept their config."""
        current = self.current_version()
        if current is None or not self.config_template(current):
            return None
        return self.load_config(current, variables)

    def model_config(self, variables: Mapping[str, str]) -> DatasetConfig:
        """The config of the model (``kept_config``), or an error saying why there is none: never
        registered (naming the models that are), or registered before configs were kept."""
        kept = self.kept_config(variables)
        if kept is not None:
            return kept
        current = self.current_version()
        if current is not None:
            return self.load_config(current, variables)  # raises: registered before configs were kept
        known = registered_models(self.store)
        raise RegistryError(
            f"model {self.model_name!r} was never registered in {self.store.uri} (registered: "
            f"{known or 'none'}); train it first, e.g. prefect deployment run 'training/local' "
            "-p dataset_config=configs/<yours>.yaml"
        )

    def load_booster(self, mv: ModelVersion) -> lgb.Booster:
        return lgb.Booster(model_str=self.read_file(mv, "model.txt").decode())

    def load_transform(self, mv: ModelVersion) -> FittedTransform:
        return FittedTransform.from_json(self.read_file(mv, "transform.json"))

    # --- aliases -------------------------------------------------------------------------------
    def alias_doc(self) -> AliasDoc:
        value, _ = self.store.read_json_with_etag(self.aliases_key)
        return AliasDoc.model_validate(value) if value else AliasDoc()

    def resolve(self, ref: str | int) -> ModelVersion:
        """A version from a number or an alias name."""
        if isinstance(ref, int) or str(ref).isdigit():
            return self.get(int(ref))
        doc = self.alias_doc()
        if ref not in doc.aliases:
            raise RegistryError(
                f"model {self.model_name!r} has no {ref!r} alias; aliases: {doc.aliases or 'none'}"
            )
        return self.get(doc.aliases[ref])

    def set_alias(
        self,
        alias: str,
        version: int | None,
        *,
        reason: str,
        actor: str = "driftloop",
        kind: str | None = None,
    ) -> AliasDoc:
        """Point ``alias`` at ``version`` (None removes it), atomically, recording who and why."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; use one of {ALIASES}")
        if version is not None:
            self.get(version)  # must exist
            other = "challenger" if alias == "champion" else "champion"
            if alias == "challenger" and self.alias_doc().aliases.get(other) == version:
                raise RegistryError(
                    f"v{version} of {self.model_name!r} is the champion; a challenger must be another version"
                )
        key = self.aliases_key
        for _ in range(50):
            value, etag = self.store.read_json_with_etag(key)
            doc = AliasDoc.model_validate(value) if value else AliasDoc()
            previous = doc.aliases.get(alias)
            if version is None:
                doc.aliases.pop(alias, None)
            else:
                doc.aliases[alias] = version
            doc.history.append(
                AliasChange(
                    alias=alias,
                    version=version,
                    previous=previous,
                    at=datetime.now(timezone.utc).isoformat(),
                    reason=reason,
                    actor=actor,
                    kind=kind,
                )
            )
            try:
                if etag is None:
                    self.store.write_json(key, doc.model_dump(mode="json"), if_none_match=True)
                else:
                    self.store.write_json(key, doc.model_dump(mode="json"), if_match=etag)
                return doc
            except PreconditionFailed:
                continue  # lost a race: re-read and apply again
        raise RuntimeError(f"could not update alias {alias!r} of {self.model_name}: too much contention")

    def move_champion(
        self, version: int | None, *, reason: str, actor: str, kind: str = "promotion"
    ) -> ChampionMove:
        """Make ``version`` the champion (None: the previous champion, i.e. a rollback). A promoted
        challenger stops being the challenger."""
        doc = self.alias_doc()
        current = doc.aliases.get("champion")
        if version is None:
            version = doc.previous_champion()
            if version is None:
                raise BadInput(
                    f"model {self.model_name!r} has no previous champion to roll back to (champion is "
                    f"{'v' + str(current) if current else 'unset'}); pass to_version explicitly"
                )
        self.get(version)  # must exist: a clear error names the versions that do
        if version == current:
            raise BadInput(f"v{version} of {self.model_name!r} is already champion; nothing to do")
        doc = self.set_alias("champion", version, reason=reason, actor=actor, kind=kind)
        if doc.aliases.get("challenger") == version:
            self.set_alias("challenger", None, reason=f"promoted to champion: {reason}", actor=actor)
        return ChampionMove(
            model_name=self.model_name, version=version, previous=current, reason=reason, actor=actor
        )
