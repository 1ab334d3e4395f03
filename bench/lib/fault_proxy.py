"""A fault-injecting HTTP proxy: put it in front of the store (a moto server) or an HTTP source, and a
chosen share of requests fails the way real outages do: a 503 (S3's SlowDown), a connection reset
with no answer, or a 2 s stall before the answer. Everything else is forwarded unchanged.

    proxy = FaultProxy("http://127.0.0.1:5000", share=0.2, seed=1).start()
    ... point DRIFTLOOP_S3__ENDPOINT_URL at proxy.url ...
    proxy.stop(); print(proxy.counts)
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("503", "reset", "stall")
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate. (injected)</Message></Error>"
)


class FaultProxy:
    def __init__(self, upstream: str, share: float, seed: int = 0, stall_seconds: float = 2.0):
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname or "127.0.0.1", target.port or 80
        self.share, self.stall_seconds = share, stall_seconds
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._draw()
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOW_DOWN)
                    return
                if fault == "reset":
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()  # RST: no answer at all
                    return
                if fault == "stall":
                    time.sleep(proxy.stall_seconds)
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for k, v in answer.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a client resetting is not news
                pass

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _draw(self) -> str | None:
        with self._lock:
            self.counts["requests"] += 1
            if self._random.random() >= self.share:
                return None
            fault = self._random.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    def start(self) -> "FaultProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def set_share(self, share: float) -> None:
        with self._lock:
            self.share = share

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
