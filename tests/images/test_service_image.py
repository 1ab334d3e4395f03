"""The prediction service's container image, as the deploy builds it and ECS runs it.

A model trained by the ``training/docker`` deployment into a store on the moto S3 API, packaged as a bento and
containerized by BentoML's own ``containerize`` (podman here), then started as ECS starts it: the
image's own entrypoint, the store on S3, a token, and stopped with SIGTERM (what ECS sends before it
kills). A package the service imports but the bento does not install fails here: the container never
becomes ready."""

from __future__ import annotations

import http.client
import os
import socket
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from tests.images.conftest import podman

pytestmark = pytest.mark.images

SERVICE_IMAGE = os.environ.get("DRIFTLOOP_SERVICE_IMAGE", "localhost/driftloop/service:test")
MODEL = "flights-late-arrival"
TOKEN = "image-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _ecs_command() -> list[str]:
    """The arguments the stack's task definition gives the service container (the bento's entrypoint
    passes them to ``bentoml serve``)."""
    from cfnlint.decode import decode_str

    from tasks.core.settings import PROJECT_DIR

    template, _ = decode_str((PROJECT_DIR / "infra" / "cloudformation" / "driftloop.yaml").read_text())
    _, with_metrics, without = template["Resources"]["ServiceTaskDefinition"]["Properties"][
        "ContainerDefinitions"
    ]["Fn::If"]
    (service,) = [c for c in without if c["Name"] == "service"]
    return list(service["Command"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service_image(s3_store: dict[str, str], trained_in_the_flow_image) -> str:
    """The champion (trained by ``training/docker``, in the flow image) packaged as a bento and
    containerized by BentoML on podman (the deploy does the same on Docker)."""
    from deployments.service_image import build_service_image
    from tasks.core.settings import Settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_store.items():
            patch.setenv(key, value)
        return build_service_image(Settings(), MODEL, "champion", SERVICE_IMAGE, "podman")


class Container:
    """One service container on the host's loopback (``--network host``, bound to 127.0.0.1)."""

    def __init__(self, image: str, store_env: dict[str, str], spool: Path):
        self.name = f"driftloop-service-{uuid.uuid4().hex[:8]}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **store_env,
            "DRIFTLOOP_SERVING__SPOOL_DIR": "/spool",
            "DRIFTLOOP_SERVING__AUTH_TOKEN": TOKEN,
            "DRIFTLOOP_SERVING__LOG_MAX_SECONDS": "60",  # nothing ships on its own during a test
            "DRIFTLOOP_SERVING__POLL_SECONDS": "1",
            "DRIFTLOOP_SERVING__CHALLENGER_SHARE": "0",  # the champion answers every request
        }
        options = [f"--env={k}={v}" for k, v in env.items()]
        podman(
            "run", "-d", "--name", self.name, "--network", "host", "-v", f"{spool}:/spool",
            *options, image, *_ecs_command(), "--host", "127.0.0.1", "--port", str(self.port),
        )  # fmt: skip

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if podman("inspect", "-f", "{{.State.Running}}", self.name).stdout.strip() != "true":
                break
            time.sleep(1)
        raise AssertionError(f"the service container never became ready:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    made = tmp_path / "spool"
    made.mkdir()
    made.chmod(0o777)  # BentoML's image runs as its own user (uid 1034)
    return made


@pytest.fixture
def start(service_image: str, s3_store: dict[str, str]):
    started: list[Container] = []

    def _start(spool: Path, store_env: dict[str, str] | None = None) -> Container:
        container = Container(service_image, s3_store if store_env is None else store_env, spool)
        started.append(container)
        container.wait_ready()
        return container

    yield _start
    for container in started:
        container.remove()


def _rows(store_env: dict[str, str], n: int) -> tuple[pl.DataFrame, list[dict]]:
    """The last ``n`` rows of the model's snapshot, as a caller would send them."""
    from tasks.core.settings import Settings
    from tasks.core.store import open_store
    from tasks.serving.schema import as_requests, input_contracts

    with pytest.MonkeyPatch.context() as patch:
        for key, value in store_env.items():
            patch.setenv(key, value)
        settings = Settings()
        store = open_store(settings)
        config = settings.load_dataset()
    key = next(k for k in store.list("snapshots") if k.endswith(".parquet"))
    frame = store.read_parquet(key).tail(n).select(list(input_contracts(config)))
    return frame, as_requests(frame, config)


def _store(store_env: dict[str, str]):
    from tasks.core.settings import Settings
    from tasks.core.store import open_store

    with pytest.MonkeyPatch.context() as patch:
        for key, value in store_env.items():
            patch.setenv(key, value)
        return open_store(Settings())


def _champion(store_env: dict[str, str]) -> int:
    from tasks.registry.versions import Registry

    return Registry(_store(store_env), MODEL).resolve("champion").version


def _offline(store_env: dict[str, str], frame: pl.DataFrame) -> np.ndarray:
    from tasks.registry.versions import Registry

    registry = Registry(_store(store_env), MODEL)
    mv = registry.resolve("champion")
    return registry.load_booster(mv).predict(registry.load_transform(mv).to_matrix(frame))


def _logged_ids(store_env: dict[str, str]) -> set[str]:
    from tasks.core.logs import read_log

    frame = read_log(_store(store_env), "predictions", MODEL, ["request_id"])
    return set(frame["request_id"]) if frame.height else set()


def _predict_each(url: str, records: list[dict]) -> list[str]:
    with httpx.Client(timeout=30, headers=AUTH) as http:
        answers = [http.post(f"{url}/predict", json={"record": r}) for r in records]
    assert all(a.status_code == 200 for a in answers), answers[0].text
    return [a.json()["request_id"] for a in answers]


def test_the_container_serves_the_champion_from_s3_as_offline_scoring_does(start, spool, s3_store):
    service = start(spool)
    frame, records = _rows(s3_store, 100)
    resp = httpx.post(f"{service.url}/predict_batch", json={"records": records}, headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text
    answers = resp.json()
    assert {a["model_version"] for a in answers} == {_champion(s3_store)}
    served = np.array([a["probability"] for a in answers])
    np.testing.assert_allclose(served, _offline(s3_store, frame), rtol=1e-9)
    single = httpx.post(f"{service.url}/predict", json={"record": records[0]}, headers=AUTH, timeout=30)
    assert single.json()["probability"] == pytest.approx(served[0], abs=1e-12)


def test_a_bento_with_an_empty_store_or_none_serves_its_packaged_model_and_says_so(start, spool, s3_store):
    """The clean image with a store that holds nothing of the model (an empty S3 prefix), and with no
    store configured at all (the bento's default, a local directory): the packaged champion answers,
    poll after poll, and /model_status and /readyz say it is the packaged model."""
    _, records = _rows(s3_store, 1)
    empty = {
        **s3_store,
        "DRIFTLOOP_STORE_URI": f"{s3_store['DRIFTLOOP_STORE_URI']}-empty-{uuid.uuid4().hex[:6]}",
    }
    for store_env in (empty, {}):
        service = start(spool, store_env)
        time.sleep(3)  # several polls (1 s) of a registry with no champion
        answer = httpx.post(f"{service.url}/predict", json={"record": records[0]}, headers=AUTH, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == _champion(s3_store), (
            answer.text
        )
        status = httpx.post(f"{service.url}/model_status", headers=AUTH, timeout=10).json()
        assert f"packaged model v{_champion(s3_store)} answers" in status["degraded"], status
        assert httpx.get(f"{service.url}/readyz").json()["degraded"] == status["degraded"]
        assert s3_store["DRIFTLOOP_S3__ENDPOINT_URL"] not in str(status)  # no store location in answers
        service.remove()


def test_hostile_requests_are_refused_with_a_4xx_and_serving_goes_on(start, spool, s3_store):
    service = start(spool)
    _, records = _rows(s3_store, 1)
    url = f"{service.url}/predict"
    no_token = httpx.post(url, json={"record": records[0]}, timeout=10)
    assert no_token.status_code == 401, no_token.text
    wrong_type = httpx.post(url, json={"record": {**records[0], "distance": "far"}}, headers=AUTH)
    assert wrong_type.status_code in (400, 422) and "distance" in wrong_type.text
    not_json = httpx.post(url, content=b"\xff\x00{", headers={**AUTH, "content-type": "application/json"})
    assert 400 <= not_json.status_code < 500
    assert httpx.post(url, json={"record": records[0]}, headers=AUTH, timeout=10).status_code == 200


def test_sigterm_ships_every_answered_prediction_before_the_container_exits(start, spool, s3_store):
    """``podman stop`` sends SIGTERM, as ECS does when it stops or replaces a task: the shutdown hook
    ships the spool (nothing would ship on its own within the test: segments ship after 60 s)."""
    service = start(spool)
    _, records = _rows(s3_store, 300)
    before = _logged_ids(s3_store)
    answered = _predict_each(service.url, records)
    assert not set(answered) & _logged_ids(s3_store), "shipped before the stop: the test shows nothing"
    podman("stop", "-t", "60", service.name)
    assert podman("inspect", "-f", "{{.State.ExitCode}}", service.name).stdout.strip() == "0"
    logged = _logged_ids(s3_store) - before
    lost = set(answered) - logged
    assert not lost, f"{len(lost)} of {len(answered)} answered predictions lost"
    leftover = [p for p in spool.rglob("*") if p.is_file() and p.suffix in (".spool", ".open")]
    assert not leftover, leftover


def test_a_killed_container_leaves_a_spool_its_replacement_ships(start, spool, s3_store):
    """SIGKILL (the OOM killer, a failed host): no shutdown hook runs, but every answer was fsynced to
    the spool first. A replacement started on the same volume ships the dead one's rows. (On Fargate
    the task's disk goes with it: without a volume at the spool, what a killed task had not shipped is
    lost, at most ``serving.log_max_seconds`` of traffic; README, "Run it in containers".)"""
    service = start(spool)
    _, records = _rows(s3_store, 200)
    answered = _predict_each(service.url, records)
    podman("kill", "-s", "KILL", service.name)
    assert not set(answered) & _logged_ids(s3_store)
    assert any(p.suffix in (".spool", ".open") for p in spool.rglob("*")), "nothing left in the spool"
    start(spool)  # the replacement, on the same spool volume
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not set(answered) <= _logged_ids(s3_store):
        time.sleep(1)
    missing = set(answered) - _logged_ids(s3_store)
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions never shipped"


def test_an_idle_connection_outlives_uvicorns_default_keep_alive_as_the_load_balancer_needs(start, spool):
    """The load balancer keeps idle connections 60 s; a server closing one first makes the next request
    on it a 502. Started with the task definition's arguments, the service keeps a connection idle for
    8 s (uvicorn's default closes it after 5) and answers on it again."""
    service = start(spool)
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)  # one socket, never reopened
    conn.request("GET", "/readyz")
    first = conn.getresponse()
    first.read()
    assert first.status == 200 and not first.will_close
    time.sleep(8)
    try:
        conn.request("GET", "/readyz")
        again = conn.getresponse()
        again.read()
    except (http.client.RemoteDisconnected, ConnectionError) as exc:
        raise AssertionError(f"the service closed the idle connection: {exc!r}") from None
    finally:
        conn.close()
    assert again.status == 200


def test_the_image_runs_as_an_unprivileged_user(service_image):
    user = podman("image", "inspect", "-f", "{{.Config.User}}", service_image).stdout.strip()
    assert user not in ("", "root", "0"), user
