"""The images, started the way production starts them (``make test-images``: it builds them first).

Collected by ``make test`` too, where they are skipped: building the images takes minutes and needs
podman, which ``make images`` installs."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

FLOW_IMAGE = os.environ.get("DRIFTLOOP_FLOW_IMAGE", "localhost/driftloop/flows:dev")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DRIFTLOOP_TEST_IMAGES") == "1":
        return
    skip = pytest.mark.skip(reason="image tests run with `make test-images` (builds the images first)")
    for item in items:
        if Path(item.fspath).parent == Path(__file__).parent:
            item.add_marker(skip)


STATE = Path(os.environ.get("DRIFTLOOP_PODMAN_STATE", "/var/tmp/driftloop-podman"))
PODMAN_ENV = {  # the configuration `make images` built with (infra/containers/podman.sh)
    "CONTAINERS_CONF": str(STATE / "containers.conf"),
    "CONTAINERS_STORAGE_CONF": str(STATE / "storage.conf"),
}


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**PODMAN_ENV, **os.environ}
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out


class Pod:
    """A pod with no network but its own loopback: its containers reach each other on 127.0.0.1 and
    nothing else (the scheduler binds 0.0.0.0, as on Fargate, inside the pod only)."""

    def __init__(self, shared: Path):
        self.name = f"driftloop-test-{uuid.uuid4().hex[:8]}"
        self.shared = shared
        self.containers: list[str] = []

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> str:
        full = f"{self.name}-{name}"
        podman("run", "-d", "--pod", self.name, "--name", full, *self._options(env), FLOW_IMAGE, *command)
        self.containers.append(full)
        return full

    def run(self, *command: str, env: dict[str, str] | None = None, timeout: float = 900):
        return podman(
            "run",
            "--rm",
            "--pod",
            self.name,
            *self._options(env),
            FLOW_IMAGE,
            *command,
            check=False,
            timeout=timeout,
        )

    def logs(self, name: str) -> str:
        out = podman("logs", f"{self.name}-{name}", check=False)
        return out.stdout + out.stderr

    def _options(self, env: dict[str, str] | None) -> list[str]:
        options = ["-v", f"{self.shared}:/data"]
        for key, value in (env or {}).items():
            options += ["-e", f"{key}={value}"]
        return options


@pytest.fixture
def pod(tmp_path) -> Iterator[Pod]:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the image runs as uid 10001
    made = Pod(shared)
    podman("pod", "create", "--name", made.name, "--network", "none")
    try:
        yield made
    finally:
        podman("pod", "rm", "-f", "-t", "5", made.name, check=False)
