"""A small closed-loop HTTP/1.1 load generator (asyncio, keep-alive, pre-encoded requests).

It exists because no HTTP load tool is installed here; it is cheap per request (a few µs of
Python), so on a shared 2-core machine it takes as little CPU from the server as a Python client can.
Each of ``concurrency`` connections sends a request, waits for the full response, and repeats until
``seconds`` pass. Latency is measured per request; non-2xx answers and socket errors count as errors.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")


def encode_post(
    url: str, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json"
) -> tuple[str, int, bytes]:
    u = urlparse(url)
    head = [
        f"POST {u.path or '/'} HTTP/1.1",
        f"Host: {u.hostname}:{u.port}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return u.hostname, u.port, ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _worker(
    host: str, port: int, request: bytes, deadline: float, lat: list[float], errs: list[int]
) -> None:
    reader = writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            t0 = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            lat.append((time.perf_counter() - t0) * 1000)
            if status >= 300:
                errs.append(status)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            errs.append(0)
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def run_load(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    warmup: float = 1.0,
    content_type: str = "application/json",
) -> LoadResult:
    host, port, request = encode_post(url, body, headers, content_type)

    async def main() -> LoadResult:
        if warmup:
            await asyncio.gather(
                *[
                    _worker(host, port, request, time.perf_counter() + warmup, [], [])
                    for _ in range(concurrency)
                ]
            )
        lat: list[float] = []
        errs: list[int] = []
        start = time.perf_counter()
        await asyncio.gather(
            *[_worker(host, port, request, start + seconds, lat, errs) for _ in range(concurrency)]
        )
        elapsed = time.perf_counter() - start
        return LoadResult(requests=len(lat), errors=len(errs), seconds=elapsed, latencies_ms=np.array(lat))

    return asyncio.run(main())
