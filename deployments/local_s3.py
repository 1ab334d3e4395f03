"""The local S3 API: a moto server on 127.0.0.1, spoken to through boto3 like AWS itself. The tests and
the fault-injection benchmark start one each (moto[server] is a dev dependency)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def start_moto_server(recording: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A moto server on a free loopback port; returns the process (end it with ``terminate``) and its
    URL. With ``recording``, what a client records (``POST /moto-api/recorder/start-recording``) goes
    to that file instead of the working directory."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **({"MOTO_RECORDER_FILEPATH": str(recording)} if recording else {})}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url, timeout=1)
            return proc, url
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"moto server did not start on {url} (is moto[server] installed? `make venv`)")
