from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import browser  # noqa: F401 - one Chromium per test process, for every module
from tests.support.pgserver import PgServer
from tests.support.workspace import Workspace


@pytest.fixture
def ws(pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A workspace with a Pair named `main` on the test server and a fresh store."""
    workspace = Workspace(tmp_path, pg, monkeypatch)
    workspace.pair()
    return workspace
