"""A private, throw-away environment for a benchmark: its own Prefect home and port, store, sources,
W&B and BentoML directories. Call before Prefect is imported (it reads its settings at import)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path


def private_environment(prefix: str, **extra: str) -> tuple[Path, int]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        {
            "PREFECT_HOME": str(root / "prefect"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "DRIFTLOOP_PREFECT__HOME": str(root / "prefect"),
            "DRIFTLOOP_PREFECT__PORT": str(port),
            "DRIFTLOOP_STORE_URI": str(root / "store"),
            "DRIFTLOOP_SOURCES_DIR": str(root / "sources"),
            "DRIFTLOOP_TRACKING__DIR": str(root / "wandb"),
            "DRIFTLOOP_BENTOML_HOME": str(root / "bentoml"),
            "BENTOML_HOME": str(root / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "WHYLOGS_NO_ANALYTICS": "1",
            **extra,
        }
    )
    return root, port
