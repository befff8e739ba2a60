"""What the cloud fakes share: a local ThreadingHTTPServer that logs every call, answers scripted faults, and
hands the rest to the fake's `route`."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Answer = tuple[int, Any, dict[str, str]]


class ApiError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    body: Any
    headers: dict[str, str]
    after: bool = False  # the call is done, and then its answer is lost (an error instead)


class FakeHttpApi:
    """Subclasses implement `route(method, path, query, body, headers)` -> (status, body, headers)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.busy = 0.0  # seconds spent answering (booting emulated VMs included): the cloud's share of a command
        self.server_http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server_http.daemon_threads = True
        self.thread = threading.Thread(target=self.server_http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_http.server_address[1]}"

    def start_http(self) -> None:
        self.thread.start()

    def stop_http(self) -> None:
        self.server_http.shutdown()
        self.server_http.server_close()

    def add_fault(self, method: str, pattern: str, status: int, body: Any, times: int = 1,
                  headers: dict[str, str] | None = None, after: bool = False) -> None:
        with self.lock:
            self.faults.append(Fault(method, re.compile(pattern), status, times, body, headers or {}, after))

    def calls(self, prefix: str = "") -> int:
        return sum(1 for _, path in self.requests if path.startswith(prefix))

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any,
              headers: dict[str, str]) -> Answer:
        raise NotImplementedError

    def parse_body(self, raw: bytes, content_type: str) -> Any:
        if not raw:
            return None
        if content_type.startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        return json.loads(raw)

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]], body: Any,
                  headers: dict[str, str]) -> Answer:
        lost: Fault | None = None
        with self.lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.pattern.search(path):
                    fault.times -= 1
                    if not fault.after:
                        raise ApiError(fault.status, fault.body, fault.headers)
                    lost = fault
                    break
        started = time.perf_counter()
        try:
            answer = self.route(method, path, query, body, headers)
        finally:
            with self.lock:
                self.busy += time.perf_counter() - started
        if lost is not None:
            raise ApiError(lost.status, lost.body, lost.headers)
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _respond(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed = urlparse(self.path)
                try:
                    body = fake.parse_body(raw, self.headers.get("Content-Type") or "")
                except ValueError:
                    self._respond(400, {"error": {"code": 400, "message": "Malformed request body"}})
                    return
                try:
                    status, answer, headers = fake._dispatch(method, parsed.path, parse_qs(parsed.query), body,
                                                             {k.lower(): v for k, v in self.headers.items()})
                except ApiError as exc:
                    self._respond(exc.status, exc.body, exc.headers)
                    return
                self._respond(status, answer, headers)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        return Handler


def check_fields(item: Any, required: set[str], allowed: set[str], error: Any) -> dict[str, Any]:
    """The real APIs refuse a missing required field and an unknown one; so do the fakes."""
    if not isinstance(item, dict):
        raise error("the body must be a JSON object")
    missing = required - set(item)
    unknown = set(item) - allowed
    if missing:
        raise error(f"missing field(s): {sorted(missing)}")
    if unknown:
        raise error(f"Unknown name(s) {sorted(unknown)}")
    return item
