"""The most sessions pgaasctl holds on a server at once, sampled from a session of the watcher's own while a
command runs (tests/integration/test_sessions.py, bench/plan_scale.py)."""

from __future__ import annotations

import threading

from tests.support.pgserver import PgServer


class SessionCounter:
    """Counts pgaasctl's sessions (application_name 'pgaasctl') every `interval` s; keeps the highest count."""

    def __init__(self, server: PgServer, interval: float = 0.005) -> None:
        self.server = server
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.connect() as conn:
            while not self._stop.is_set():
                count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgaasctl'"
                                     ).fetchone()[0]  # type: ignore[index]
                self.peak = max(self.peak, count)
                self._stop.wait(self.interval)  # a sampling interval

    def __enter__(self) -> SessionCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
