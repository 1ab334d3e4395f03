"""The artifact store: one small interface over a local directory and S3.

Everything driftloop writes (raw zone, quarantine, snapshots, models, profiles, registry) goes through
an ``ArtifactStore`` so laptop and cloud behave the same and tests can run against both. Keys are
``/``-separated paths relative to the store root. Writes are atomic (a reader never sees half a file)
and can be conditional, which is what makes registry alias updates safe under concurrency:

- ``if_none_match=True`` creates the key only if it does not exist yet;
- ``if_match=etag`` replaces the key only if nobody changed it since it was read.

On S3 these are the native conditional-write headers; locally they are ``os.link`` (atomic create)
and an ``fcntl`` lock around compare-and-replace.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator

import polars as pl
from pydantic import BaseModel, SecretStr

from tasks.core.settings import Settings


class StoreError(RuntimeError):
    """Base class for artifact-store failures."""


class KeyNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "key not found"


class PreconditionFailed(StoreError):
    """A conditional write lost a race: the key exists (create) or changed (replace)."""


class ArtifactStore(ABC):
    """Byte-level operations plus JSON/Parquet helpers shared by both backends."""

    uri: str

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write atomically; return the new etag. Raise PreconditionFailed if a condition fails."""

    @abstractmethod
    def etag(self, key: str) -> str | None:
        """The current etag of ``key``, or None if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys below ``prefix`` (recursive), sorted."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove ``keys`` (a key already gone is not an error: deleting is idempotent)."""

    @abstractmethod
    def url(self, key: str) -> str:
        """A path or ``s3://`` URL Polars (and people) can open directly."""

    @property
    def storage_options(self) -> dict[str, str] | None:
        """Polars ``storage_options`` for :meth:`url`; None for local paths."""
        return None

    def exists(self, key: str) -> bool:
        return self.etag(key) is not None

    # --- JSON ---------------------------------------------------------------------------------
    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def read_json_with_etag(self, key: str) -> tuple[Any, str | None]:
        """Value and etag read together, for compare-and-swap; (None, None) if absent."""
        try:
            data = self.read_bytes(key)
        except KeyNotFound:
            return None, None
        return json.loads(data), _md5(data)

    def write_json(self, key: str, value: Any, **conditions: Any) -> str:
        return self.write_bytes(
            key, json.dumps(value, indent=2, sort_keys=True, default=str).encode(), **conditions
        )

    # --- Parquet ------------------------------------------------------------------------------
    def write_parquet(self, key: str, df: pl.DataFrame, **conditions: Any) -> str:
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True)
        return self.write_bytes(key, buf.getvalue(), **conditions)

    def read_parquet(self, key: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read_bytes(key)))

    def scan_parquet(self, keys: list[str]) -> pl.LazyFrame:
        """Lazily scan many Parquet keys as one frame (columns aligned by name)."""
        if not keys:
            raise StoreError("scan_parquet needs at least one key")
        return pl.scan_parquet(
            [self.url(k) for k in keys],
            storage_options=self.storage_options,
            missing_columns="insert",
            extra_columns="ignore",
        )


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class LocalStore(ArtifactStore):
    """A directory on disk. Temporary files and locks live under ``.driftloop-tmp`` and never list."""

    _TMP = ".driftloop-tmp"

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        key = key.strip("/")
        if not key or ".." in key.split("/"):
            raise StoreError(f"invalid store key {key!r}")
        return self.root / key

    def _tmp_dir(self) -> Path:
        tmp = self.root / self._TMP
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyNotFound(f"{key} not found in store {self.uri}") from None

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        lock_path = self._tmp_dir() / (hashlib.sha1(key.encode()).hexdigest() + ".lock")
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp_dir())
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if if_none_match:
                try:
                    os.link(tmp, path)  # atomic create-if-absent
                except FileExistsError:
                    raise PreconditionFailed(f"{key} already exists") from None
            elif if_match is not None:
                with self._lock(key):
                    if self.etag(key) != if_match:
                        raise PreconditionFailed(f"{key} changed since it was read")
                    os.replace(tmp, path)
                    tmp = None
            else:
                with self._lock(key):
                    os.replace(tmp, path)
                    tmp = None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return _md5(data)

    def etag(self, key: str) -> str | None:
        try:
            return _md5(self._path(key).read_bytes())
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            for parent in path.parents:  # no empty partition directories left behind
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if base.is_file():
            return [prefix.strip("/")]
        if not base.is_dir():
            return []
        keys = []
        for p in base.rglob("*"):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and not rel.startswith(self._TMP):
                keys.append(rel)
        return sorted(keys)

    def url(self, key: str) -> str:
        return str(self._path(key))


class S3Store(ArtifactStore):
    """``s3://bucket/prefix`` through boto3, with native conditional writes."""

    def __init__(self, uri: str, credentials: "S3Credentials"):
        import boto3

        without_scheme = uri.removeprefix("s3://")
        self.bucket, _, prefix = without_scheme.partition("/")
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._creds = credentials
        self.client = boto3.client(
            "s3",
            endpoint_url=self._creds.endpoint_url,
            region_name=self._creds.region,
            aws_access_key_id=self._creds.access_key_id,
            aws_secret_access_key=self._creds.secret("secret_access_key"),
            aws_session_token=self._creds.secret("session_token"),
        )

    def _key(self, key: str) -> str:
        key = key.strip("/")
        if not key:
            raise StoreError("empty store key")
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyNotFound(f"{key} not found in store {self.uri}") from None

    def read_json_with_etag(self, key: str) -> tuple[Any, str | None]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None, None
        return json.loads(obj["Body"].read()), obj["ETag"]

    def write_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            return self.client.put_object(**kwargs)["ETag"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}:
                raise PreconditionFailed(f"{key}: conditional write refused ({code})") from None
            raise

    def etag(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            out = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if out.get("Errors"):
                first = out["Errors"][0]
                raise StoreError(
                    f"could not delete {len(out['Errors'])} keys from {self.uri}, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

    def list(self, prefix: str = "") -> list[str]:
        want = prefix.strip("/")
        full = self._key(want) if want else self.prefix
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                if want and not (rel == want or rel.startswith(want + "/")):  # "a/b" must not match "a/bc"
                    continue
                keys.append(rel)
        return sorted(keys)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @property
    def storage_options(self) -> dict[str, str]:
        creds = self._creds
        opts = {"aws_region": creds.region}
        if creds.endpoint_url:
            opts["aws_endpoint_url"] = creds.endpoint_url
            opts["aws_allow_http"] = "true" if creds.endpoint_url.startswith("http://") else "false"
        if creds.access_key_id:
            opts["aws_access_key_id"] = creds.access_key_id
        for option, field in (
            ("aws_secret_access_key", "secret_access_key"),
            ("aws_session_token", "session_token"),
        ):
            if creds.secret(field):
                opts[option] = creds.secret(field)
        return opts


class S3Credentials(BaseModel):
    """Where S3 is and who we are there; secrets are ``SecretStr`` so they never print."""

    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    source: str = "default chain"

    def secret(self, field: str) -> str | None:
        value = getattr(self, field)
        return value.get_secret_value() if value is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Credentials":
        """Explicit keys from settings, else boto3's default chain. A named credentials block is loaded
        by the run context (it needs the Prefect API); asking for it here is a mistake worth naming."""
        s3 = settings.s3
        if s3.credentials_block:
            raise StoreError(
                f"settings name the AwsCredentials block {s3.credentials_block!r}: open the store through a "
                "flow's run context (flows.steps.runtime.run_context), which loads the block from Prefect"
            )
        return cls(
            region=s3.region,
            endpoint_url=s3.endpoint_url,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            source="settings" if s3.access_key_id else "default chain",
        )


def open_store(settings: Settings, credentials: S3Credentials | None = None) -> ArtifactStore:
    """The store named by ``settings.store_uri``.

    ``credentials`` come from the flow's run context, which loads a named ``AwsCredentials`` block;
    without them S3 is reached with the settings' keys or boto3's default chain (on ECS: the task role).
    """
    return open_store_at(settings.store_uri, settings, credentials)


def open_store_at(uri: str, settings: Settings, credentials: S3Credentials | None = None) -> ArtifactStore:
    """A store at ``uri`` (a local path or ``s3://bucket/prefix``), reached as ``settings`` say."""
    if uri.startswith("s3://"):
        return S3Store(uri, credentials or S3Credentials.from_settings(settings))
    if "://" in uri:
        raise StoreError(f"store_uri {uri!r}: unsupported scheme; use a local path or s3://bucket/prefix")
    return LocalStore(uri)
