"""provider local as a normal user: sshd on a high port and PostgreSQL both run as that user.

Runs pgaasctl as the `postgres` OS user with Debian's python3 (the venv's interpreter may live where
that user cannot read) and the venv's packages, as an unprivileged user of this machine would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw9")[2:] or 9)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_pair_lifecycle_as_an_unprivileged_user() -> None:
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(str(REPO)))
    work = Path(tempfile.mkdtemp(prefix="pgaasctl-nonroot-"))
    local_dir = Path(tempfile.mkdtemp(prefix="pgaasctl-nonroot-", dir="/dev/shm"))
    shutil.chown(work, "postgres")
    shutil.chown(local_dir, "postgres")
    (work / "specs").mkdir()
    (work / "specs" / "pair.yaml").write_text(
        f"kind: Workspace\nspec: {{local_dir: {local_dir}, local_addresses: 127.0.4.{10 + WORKER * 4}-127.0.4.{13 + WORKER * 4}}}\n"
        "---\nkind: Pair\nmetadata: {name: nr}\n"
        "spec: {provider: local, nodes: [{name: nr-a}, {name: nr-b}], deletion_protection: false}\n"
    )
    shutil.chown(work / "specs", "postgres")
    shutil.chown(work / "specs" / "pair.yaml", "postgres")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{site}", "HOME": str(work), "LANG": "C.UTF-8"}

    def pgaasctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/usr/sbin/runuser", "-u", "postgres", "--", "/usr/bin/python3", "-m", "pgaasctl.cli", *args],
                              cwd=work, env=env, capture_output=True, text=True, timeout=300)

    try:
        applied = pgaasctl("apply", "specs", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        status = pgaasctl("status", "specs", "--json")
        assert status.returncode == 0, status.stderr
        assert '"role": "standby"' in status.stdout and '"role": "primary"' in status.stdout
        owners = {p.owner() for p in local_dir.rglob("data")}
        assert owners == {"postgres"}
        sshd = (local_dir / "nr" / "nr-a" / "ssh" / "sshd.pid").read_text().strip()
        assert Path(f"/proc/{sshd}").owner() == "postgres"  # sshd itself runs unprivileged
    finally:
        destroyed = pgaasctl("destroy", "specs", "--auto-approve")
        subprocess.run(["pkill", "-KILL", "-f", str(local_dir)], check=False)
        shutil.rmtree(local_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert subprocess.run(["pgrep", "-f", str(local_dir)], capture_output=True).returncode == 1
