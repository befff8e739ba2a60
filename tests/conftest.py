"""Suite-wide fixtures: one real PostgreSQL 15 server per test process.

``pg_server`` (session) starts the server; ``pg`` (function) hands out the
same server after ``reset()``, so each test starts from a clean cluster.
Under pytest-xdist every worker runs its own server on its own loopback
address: gw0 -> 127.0.0.10, gw1 -> 127.0.0.11, ...; without xdist 127.0.0.2.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

# `tests.support` must import however pytest was launched (`pytest` does not
# put the repository root on sys.path; `python -m pytest` does).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support.pgserver import PgServer, make_base_dir  # noqa: E402

_INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"

# Application Default Credentials, when a test's gcp pair has no key file, must fail at once: never probe the
# metadata server (169.254.169.254), which is not ours to reach.
os.environ["NO_GCE_CHECK"] = "True"


def _loopback_host() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... or unset
    if not worker.startswith("gw"):
        return "127.0.0.2"
    index = int(worker[2:])
    if index > 244:
        raise pytest.UsageError(f"too many xdist workers for one loopback address each: {worker}")
    return f"127.0.0.{10 + index}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    # Not tmp_path_factory: /tmp/pytest-of-<user> is 0700, and as root the
    # server runs as the postgres OS user, who must reach its data dir.
    base_dir = make_base_dir(prefix=f"pgaasctl-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    server = PgServer(base_dir, host=_loopback_host())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture
def pg(pg_server: PgServer) -> PgServer:
    pg_server.reset()
    return pg_server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
