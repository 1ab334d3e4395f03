"""The cloud setup scripts refuse bad input with a message naming it, before touching anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tasks.core.settings import PROJECT_DIR


def _run(module: str, *args: str, **env: str | None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=full,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", ["deployments.work_pools", "deployments.cloud"])
def test_no_prefect_api_is_refused_instead_of_a_throwaway_server(module, tmp_path):
    args = ["check"] if module == "deployments.cloud" else []
    out = _run(module, *args, PREFECT_API_URL=None, PREFECT_HOME=str(tmp_path))
    assert out.returncode == 2 and "PREFECT_API_URL is not set" in out.stderr


def test_an_unreachable_prefect_api_is_named():
    out = _run(
        "deployments.blocks",
        "--bucket",
        "b",
        "--store-prefix",
        "p",
        "--region",
        "us-east-1",
        PREFECT_API_URL="http://127.0.0.1:9/api",
    )
    assert out.returncode == 2 and "http://127.0.0.1:9/api does not answer" in out.stderr


def test_blocks_need_a_store_and_both_keys_or_none():
    out = _run("deployments.blocks", "--region", "us-east-1")
    assert out.returncode == 2 and "--from-stack STACK, or --bucket and --store-prefix" in out.stderr
    out = _run(
        "deployments.blocks",
        "--bucket",
        "b",
        "--store-prefix",
        "p",
        "--region",
        "us-east-1",
        "--keys-from-env",
        AWS_ACCESS_KEY_ID="only-the-id",
        AWS_SECRET_ACCESS_KEY=None,
    )
    assert (
        out.returncode == 2 and "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set" in out.stderr
    )
