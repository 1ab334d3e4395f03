"""The local Prefect stack: a server (SQLite), a ``process`` work pool, the deployments, a worker.

``python -m deployments.local_stack up`` brings everything up idempotently (a healthy server or a
running worker is reused) and ``down`` stops what it started, by PID. State lives under
``settings.prefect.home``; logs in ``server.log`` / ``worker.log`` there. Tests use the same class
with a private home and port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tasks.core.settings import PROJECT_DIR, Settings

BIN = Path(sys.executable).parent


class LocalStack:
    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None):
        self.settings = settings
        self.cfg = settings.prefect
        self.home = Path(self.cfg.home)
        self.extra_env = extra_env or {}

    # --- environment --------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for the server, the worker, CLI calls, and so for every flow run."""
        self.home.mkdir(parents=True, exist_ok=True)  # Prefect warns when its home is missing
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.cfg.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_WORKER_QUERY_SECONDS": str(self.cfg.worker_poll_seconds),
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "INFO"),
                "DRIFTLOOP_PROJECT_DIR": str(PROJECT_DIR),
                "DRIFTLOOP_PREFECT__HOME": str(self.home),
                "DRIFTLOOP_PREFECT__PORT": str(self.cfg.port),
                "DRIFTLOOP_STORE_URI": self.settings.store_uri,
                "DRIFTLOOP_SOURCES_DIR": str(self.settings.sources_dir),
                "BENTOML_HOME": env.get("BENTOML_HOME", str(self.settings.bentoml_home)),
                "BENTOML_DO_NOT_TRACK": "true",
                "WHYLOGS_NO_ANALYTICS": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _pid_file(self, name: str) -> Path:
        return self.home / f"{name}.pid"

    def _running(self, name: str) -> int | None:
        try:
            pid = int(self._pid_file(name).read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def _spawn(self, name: str, args: list[str]) -> int:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / f"{name}.log", "ab")
        proc = subprocess.Popen(
            args,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_DIR,
            start_new_session=True,
        )
        self._pid_file(name).write_text(str(proc.pid))
        return proc.pid

    # --- server -------------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.cfg.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_server(self, timeout: float = 90) -> None:
        if self.healthy():
            return
        if not self._running("server"):
            self._spawn(
                "server",
                [
                    str(BIN / "prefect"),
                    "server",
                    "start",
                    "--host",
                    self.cfg.host,
                    "--port",
                    str(self.cfg.port),
                    "--analytics-off",
                ],
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            if not self._running("server"):
                break
            time.sleep(0.5)
        tail = (self.home / "server.log").read_text()[-2000:] if (self.home / "server.log").exists() else ""
        raise RuntimeError(
            f"Prefect server did not become healthy on {self.cfg.api_url} within {timeout:.0f}s "
            f"(is port {self.cfg.port} taken? set DRIFTLOOP_PREFECT__PORT). Log tail:\n{tail}"
        )

    # --- pool, deployments, worker ------------------------------------------------------------
    def _run(self, name: str, exe: str, args: tuple[str, ...], check: bool) -> subprocess.CompletedProcess:
        out = subprocess.run([exe, *args], env=self.env(), cwd=PROJECT_DIR, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(
                f"`{name} {' '.join(args)}` failed ({out.returncode}):\n"
                f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )
        return out

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run("prefect", str(BIN / "prefect"), args, check)

    def python(self, *args: str) -> subprocess.CompletedProcess:
        return self._run("python", sys.executable, args, check=True)

    def ensure_pool(self) -> None:
        """The local ``process`` pool, created or updated by the same script the cloud uses."""
        self.python("-m", "deployments.work_pools", "--only", "local")

    def deploy(self) -> None:
        """Register the */local deployments (the */cloud ones belong to the ECS pool; see prefect.yaml)."""
        from deployments.prefect_file import deploy_name_args

        self.cli("--no-prompt", "deploy", *deploy_name_args("local"))

    def start_worker(self) -> None:
        if self._running("worker"):
            return
        self._spawn(
            "worker",
            [
                str(BIN / "prefect"),
                "worker",
                "start",
                "--pool",
                self.cfg.work_pool,
                "--type",
                "process",
                "--with-healthcheck",
            ],
        )

    def start_service(self, timeout: float = 60) -> str:
        """The BentoML prediction service on the configured port, serving the current champion."""
        serving = self.settings.serving
        url = f"http://{serving.host}:{serving.port}"
        if not self._running("service"):
            self._spawn(
                "service",
                [
                    str(BIN / "bentoml"),
                    "serve",
                    "bentos.service:Driftloop",
                    "--host",
                    serving.host,
                    "--port",
                    str(serving.port),
                ],
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            if not self._running("service"):
                break
            time.sleep(0.5)
        raise RuntimeError(
            f"the prediction service did not become ready on {url}; see {self.home / 'service.log'}"
        )

    def up(self) -> None:
        self.start_server()
        self.ensure_pool()
        self.deploy()
        self.start_worker()

    # --- stopping -----------------------------------------------------------------------------
    def _stop(self, name: str, grace: float = 10) -> None:
        pid = self._running(name)
        if pid is None:
            self._pid_file(name).unlink(missing_ok=True)
            return
        # the worker often ignores the first SIGTERM: follow with SIGINT, then SIGKILL
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    pass
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                continue
            break
        self._pid_file(name).unlink(missing_ok=True)

    def down(self) -> None:
        self._stop("service")
        self._stop("worker")
        self._stop("server")


def main(argv: list[str]) -> int:
    stack = LocalStack(Settings())
    cmd = argv[0] if argv else "up"
    if cmd == "up":
        stack.up()
        print(f"Prefect UI: {stack.cfg.ui_url}  (pool {stack.cfg.work_pool}, logs in {stack.home})")
    elif cmd == "server":
        stack.start_server()
        print(f"Prefect UI: {stack.cfg.ui_url}")
    elif cmd == "down":
        stack.down()
        print("stopped the local prediction service, Prefect worker and server")
    elif cmd == "status":
        print(
            f"server {'healthy' if stack.healthy() else 'down'} at {stack.cfg.ui_url}; "
            f"worker {'running' if stack._running('worker') else 'stopped'}"
        )
    else:
        print("usage: python -m deployments.local_stack [up|server|down|status]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
