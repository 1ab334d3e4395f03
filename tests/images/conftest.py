"""The images, started the way production starts them (``make test-images``: it builds them first).

Collected by ``make test`` too, where they are skipped: building the images takes minutes and needs
podman, which ``make images`` installs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


@pytest.fixture(scope="session")
def docker_api(tmp_path_factory) -> Iterator[str]:
    """The Docker API, served by podman on a private socket (what a Docker client, BentoML or
    prefect-docker's worker talk to)."""
    socket_path = tmp_path_factory.mktemp("podman") / "docker.sock"
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        env={**PODMAN_ENV, **os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(100):
        if socket_path.exists():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("podman system service did not open its socket")
    yield f"unix://{socket_path}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


MODEL = "flights-late-arrival"
AWS_BLOCK = "driftloop-images-aws"


@pytest.fixture(scope="session")
def s3_store(moto_endpoint: str, prefect_server) -> dict[str, str]:
    """A bucket on the moto S3 API and the prefect-aws credentials block that reaches it (what a flow
    container is given): the environment a service or a flow on this machine needs for it."""
    import boto3
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    bucket = f"driftloop-images-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_endpoint),
    ).save(AWS_BLOCK, overwrite=True)
    return {
        "DRIFTLOOP_STORE_URI": f"s3://{bucket}/driftloop",
        "DRIFTLOOP_S3__ENDPOINT_URL": moto_endpoint,
        "DRIFTLOOP_S3__REGION": "us-east-1",
        "DRIFTLOOP_S3__ACCESS_KEY_ID": "testing",
        "DRIFTLOOP_S3__SECRET_ACCESS_KEY": "testing",
    }


class DockerPool:
    """The ``driftloop-docker`` pool with prefect-docker's worker on podman's Docker API, and the
    */docker deployments from prefect.yaml, as a user sets them up (README, "Run it in containers")."""

    FLOWS = ("land-demo-data", "training", "monitor", "retrain")

    def __init__(self, docker_host: str, store: dict[str, str], logs: Path):
        from deployments.prefect_file import deployments, flow_name

        self.env = {
            **os.environ,
            "DOCKER_HOST": docker_host,
            "DRIFTLOOP_FLOW_IMAGE": FLOW_IMAGE,
            "DRIFTLOOP_STORE_URI": store["DRIFTLOOP_STORE_URI"],
            "DRIFTLOOP_S3__CREDENTIALS_BLOCK": AWS_BLOCK,
        }
        self.env.pop("DRIFTLOOP_S3__ENDPOINT_URL", None)  # the block carries it
        self.logs = logs
        project = Path(__file__).parents[2]
        names = [f"{flow_name(d)}/docker" for d in deployments("docker") if flow_name(d) in self.FLOWS]
        assert len(names) == len(self.FLOWS), names
        self._run([sys.executable, "-m", "deployments.work_pools", "--only", "docker"], project)
        deploy = [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy"]
        self._run([*deploy, *(arg for n in names for arg in ("--name", n))], project)
        self.worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "driftloop-docker",
             "--type", "docker"],
            env=self.env, stdout=open(logs, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def _run(self, command: list[str], cwd: Path) -> None:
        out = subprocess.run(command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{command[:4]}: {out.stdout[-2000:]}{out.stderr[-2000:]}"

    def run(self, deployment: str, params: dict, timeout: float = 900):
        """A run of ``<deployment>/docker`` to its end (the worker starts it as a container)."""
        from prefect.deployments import run_deployment

        flow_run = run_deployment(f"{deployment}/docker", parameters={"params": params}, timeout=timeout)
        assert flow_run.state is not None and flow_run.state.is_completed(), (
            f"{deployment}/docker ended {flow_run.state}; worker log:\n{self.logs.read_text()[-4000:]}"
        )
        return flow_run

    def stop(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.worker.kill()


@pytest.fixture(scope="session")
def docker_pool(docker_api: str, s3_store: dict[str, str], tmp_path_factory) -> Iterator[DockerPool]:
    pool = DockerPool(docker_api, s3_store, tmp_path_factory.mktemp("docker-pool") / "worker.log")
    yield pool
    pool.stop()


@pytest.fixture(scope="session")
def trained_in_the_flow_image(docker_pool: DockerPool):
    """Two months of the demo data landed, then a model trained, each by a */docker deployment."""
    landed = docker_pool.run("land-demo-data", {"months": [1, 2]})
    trained = docker_pool.run(
        "training", {"window_end": "2013-03-01T00:00:00Z", "n_trials": 2, "cv_folds": 0}
    )
    return landed, trained
