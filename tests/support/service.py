"""`pgaasctl serve` as a real process for tests: started on a free loopback port, waited for, stopped with SIGTERM
(killed if it hangs), and a small HTTP client for it."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.local_pair import wait_until

PGAASCTL = str(Path(sys.executable).parent / "pgaasctl")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    base: str
    process: subprocess.Popen[str]
    context: ssl.SSLContext | None = None  # https: verifies the server against this CA

    def get(self, path: str, token: str | None = None) -> Reply:
        return self.call("GET", path, token)

    def call(self, method: str, path: str, token: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read())


@contextmanager
def serving(specs: Path, *args: str, env: dict[str, str] | None = None, ca: Path | None = None) -> Iterator[Server]:
    """`pgaasctl serve SPECS --listen 127.0.0.1:PORT ARGS...` until the block ends; with `ca`, over HTTPS (pass
    --tls in ARGS), its certificate verified against that CA file once it exists."""
    listen = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen([PGAASCTL, "serve", str(specs), "--listen", listen, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env if env is not None else dict(os.environ))
    running = Server(f"{'https' if ca else 'http'}://{listen}", process)
    if ca is not None:
        wait_until(lambda: ca.exists() or process.poll() is not None, 30, "the workspace CA")
        running.context = ssl.create_default_context(cafile=str(ca)) if ca.exists() else None
    try:
        wait_until(lambda: _answers(running), 30, "the API server to listen")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                _, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
            if "Traceback" in (stderr or ""):  # the server's own failures, for the failing test's report
                sys.stderr.write(f"pgaasctl serve logged:\n{stderr[-6000:]}\n")


def _answers(server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"pgaasctl serve exited: {server.process.communicate()}")
    try:
        return server.get("/healthz").status == 200
    except OSError:
        return False
