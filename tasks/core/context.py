"""The run context: what every step of one flow run shares, built once and passed down.

A flow builds one ``RunContext`` at its start (``flows.steps.runtime.run_context`` reads the settings,
the process environment and, when one is named, the ``AwsCredentials`` block) and hands it to each
step. Below the flows nothing reads the environment, constructs ``Settings()`` or opens its own
store: a step gets the settings, the dataset config, the target and the opened store from here.

The context is a pydantic model so Prefect can hash it into cache keys (the settings and dataset
config are its identity); the opened store and the credentials are private: never hashed, never
persisted, never pickled (a context sent to another process opens its store again there).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from tasks.core.config import DatasetConfig
from tasks.core.settings import Settings
from tasks.core.store import ArtifactStore, S3Credentials, open_store_at


class RunContext(BaseModel):
    """Settings, the dataset config they name, the target, and the artifact store, for one flow run."""

    model_config = ConfigDict(frozen=True)

    settings: Settings
    config: DatasetConfig
    _credentials: S3Credentials | None = PrivateAttr(None)
    _store: ArtifactStore | None = PrivateAttr(None)

    @classmethod
    def build(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        credentials: S3Credentials | None = None,
    ) -> RunContext:
        """A context for ``settings``; ``environ`` fills ``${VAR}`` in the dataset config, ``credentials``
        (from a Prefect block) reach S3 instead of the settings' keys or the default chain."""
        ctx = cls(settings=settings, config=settings.load_dataset(environ=environ))
        ctx._credentials = credentials
        return ctx

    def with_config(self, config: DatasetConfig) -> RunContext:
        """The same run on another dataset config (e.g. the file's with a flow's overrides applied)."""
        ctx = type(self)(settings=self.settings, config=config)
        ctx._credentials, ctx._store = self._credentials, self._store
        return ctx

    @property
    def target(self) -> str:
        """``local`` or ``cloud``: events carry it so each target's automations see only their own."""
        return self.settings.target

    @property
    def store(self) -> ArtifactStore:
        """The artifact store, opened on first use and then shared by every step of the run."""
        if self._store is None:
            self._store = open_store_at(self.settings.store_uri, self.settings, self._credentials)
        return self._store

    def store_at(self, uri: str | Path) -> ArtifactStore:
        """Another store (a source bucket or directory) reached with this run's credentials."""
        if str(uri) == self.store.uri:
            return self.store
        return open_store_at(str(uri), self.settings, self._credentials)

    def cache_identity(self) -> dict[str, Any]:
        """What of this context changes a step's result, and so belongs in its cache key: where the data
        lives, the dataset config, how invalid batches are treated, where runs are tracked. Operational
        settings (cooldowns, ports, poll intervals, the target, serving limits) are left out, so the same
        training under another worker or schedule reuses its finished steps instead of redoing them."""
        s = self.settings
        return {
            "store_uri": s.store_uri,
            "s3_endpoint": s.s3.endpoint_url,
            "config": self.config.model_dump(mode="json"),
            "on_invalid": s.on_invalid,
            "snapshot_rows_per_part": s.snapshot_rows_per_part,
            "engine": s.engine,  # the dask engine's final fit is another (distributed) model
            "tracking": s.tracking.model_dump(mode="json", include={"mode", "project", "entity", "dir"}),
        }

    def model_name(self, override: str | None = None) -> str:
        """The registry name a flow works on: ``override`` if given, else the dataset config's."""
        return override or self.config.model_name

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private["_store"] = None  # a boto3 client does not travel; the other process reopens it
        return {**state, "__pydantic_private__": private}
