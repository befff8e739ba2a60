"""What a cloud server is after it boots, made on this machine for the cloud fakes.

A server the fake cloud reports ACTIVE is an ``EmulatedVm``:
  - a network namespace holding the server's address on a bridge of the test's subnet (providers/netns.py, as
    provider local makes its nodes), so pgaasctl reaches it and the nodes reach each other as on a cloud network;
  - a private mount namespace in which /var/lib/pgaasctl, /var/lib/postgresql (the postgres user's home),
    /usr/local/sbin, /etc/sudoers.d and /run/pgaasctl-keepalived are the VM's own directories under its root, so that what the first boot
    writes there (pgaasctl's key, the keepalived helper, the sudoers rule) stays inside this VM;
  - the first-boot data pgaasctl sent, run there as root: cloud-init's `write_files` and `runcmd` (openstack) or
    the startup script (gcp), with apt-get and systemctl stubbed (the packages are installed on this machine,
    and there is no systemd); the stubs record what they were asked, for the tests to check;
  - then sshd on port 22 of the address, as a Debian cloud image runs it (keys in ~/.ssh/authorized_keys).

Stopping the VM kills every process in its namespace; deleting it removes the namespace and its root.
"""

from __future__ import annotations

import base64
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

import yaml

from providers.netns import NamespaceNetwork, kill_all, namespace_exists, namespace_pids

SSHD = "/usr/sbin/sshd"
PRIVATE_DIRS = {"/var/lib/pgaasctl": "pgaasctl", "/var/lib/postgresql": "home", "/usr/local/sbin": "sbin",
                "/etc/sudoers.d": "sudoers.d", "/run/pgaasctl-keepalived": "run-keepalived"}
STUBS = {"apt-get": 0, "systemctl": 0, "pg_dropcluster": 0}


class FirstBootFailed(Exception):
    pass


def cloud_config_script(user_data: str) -> str:
    """cloud-init's part that matters here, as a shell script: write_files, then runcmd. The document must be a
    #cloud-config with the packages pgaasctl needs."""
    if not user_data.startswith("#cloud-config\n"):
        raise FirstBootFailed("user data is not a #cloud-config document")
    config = yaml.safe_load(user_data)
    packages = set(config.get("packages") or [])
    missing = {"postgresql-15", "postgresql-15-repmgr", "keepalived", "sudo"} - packages
    if missing:
        raise FirstBootFailed(f"user data does not install {sorted(missing)}")
    lines = ["set -eu"]
    for item in config.get("write_files") or []:
        path, content = item["path"], item.get("content", "")
        encoded = base64.b64encode(content.encode()).decode()
        lines.append(f"mkdir -p {shlex.quote(str(Path(path).parent))}")
        lines.append(f"echo {encoded} | base64 -d > {shlex.quote(path)}")
        lines.append(f"chmod {item.get('permissions', '0644')} {shlex.quote(path)}")
        lines.append(f"chown {item.get('owner', 'root:root')} {shlex.quote(path)}")
    for command in config.get("runcmd") or []:
        lines.append(" ".join(shlex.quote(str(word)) for word in command) if isinstance(command, list) else command)
    return "\n".join(lines) + "\n"


@dataclass
class EmulatedVm:
    name: str
    address: str
    subnet: IPv4Network
    root: Path  # the VM's own files
    first_boot: str  # a shell script (already converted from cloud-config)
    booted: bool = field(default=False, init=False)

    @property
    def net(self) -> NamespaceNetwork:
        return NamespaceNetwork(self.subnet)

    @property
    def namespace(self) -> str:
        return self.net.namespace(self.address)

    def _layout(self) -> None:
        for mount_point, own in PRIVATE_DIRS.items():
            Path(mount_point).mkdir(parents=True, exist_ok=True)  # an empty mount point on this machine
            (self.root / own).mkdir(parents=True, exist_ok=True)
        (self.root / "home").chmod(0o755)
        shutil.chown(self.root / "home", "postgres", "postgres")
        stubs = self.root / "stubs"
        stubs.mkdir(exist_ok=True)
        for program, code in STUBS.items():
            stub = stubs / program
            stub.write_text(f"#!/bin/sh\necho \"{program} $*\" >> {self.root}/stubs.log\nexit {code}\n")
            stub.chmod(0o755)
        ssh = self.root / "ssh"
        ssh.mkdir(exist_ok=True)
        if not (ssh / "host_key").exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "host_key")], check=True)
        (ssh / "sshd_config").write_text("\n".join([
            "ListenAddress 0.0.0.0:22",  # every address of the VM, as a cloud image's sshd does
            f"HostKey {ssh / 'host_key'}",
            f"PidFile {ssh / 'sshd.pid'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
        ]) + "\n")

    def boot(self) -> None:
        """Power on: the mounts, the first boot once, sshd."""
        self._layout()
        self.net.ensure_node(self.address)
        mounts = "\n".join(f"mount --bind {shlex.quote(str(self.root / own))} {shlex.quote(point)}"
                           for point, own in PRIVATE_DIRS.items())
        first = ""
        if not self.booted:
            (self.root / "first-boot.sh").write_text(self.first_boot)
            first = (f"PATH={shlex.quote(str(self.root / 'stubs'))}:$PATH sh {shlex.quote(str(self.root / 'first-boot.sh'))} "
                     f">> {shlex.quote(str(self.root / 'first-boot.log'))} 2>&1 || exit 3")
        script = f"set -e\n{mounts}\n{first}\nexec {SSHD} -f {shlex.quote(str(self.root / 'ssh' / 'sshd_config'))} " \
                 f"-E {shlex.quote(str(self.root / 'ssh' / 'sshd.log'))}\n"
        result = subprocess.run([*self.net.exec_prefix(self.address), "unshare", "--mount", "--propagation", "private",
                                 "sh", "-c", script], capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            log = (self.root / "first-boot.log").read_text()[-800:] if (self.root / "first-boot.log").exists() else ""
            raise FirstBootFailed(f"VM {self.name} did not boot ({result.returncode}): {result.stderr.strip()} {log}")
        self.booted = True
        deadline = time.monotonic() + 10
        while not (self.root / "ssh" / "sshd.pid").exists():
            if time.monotonic() > deadline:
                raise FirstBootFailed(f"VM {self.name}: sshd did not start")
            time.sleep(0.02)  # polling for sshd's pid file

    def add_address(self, address: str) -> None:
        """An address the cloud routes to this VM (a floating IP): on its interface, and routed to its bridge."""
        from providers.netns import IP

        subprocess.run([IP, "-n", self.namespace, "addr", "replace", f"{address}/32", "dev", "eth0"], check=True)
        subprocess.run([IP, "route", "replace", f"{address}/32", "dev", self.net.bridge], check=True)

    def remove_address(self, address: str) -> None:
        from providers.netns import IP

        subprocess.run([IP, "route", "del", f"{address}/32"], capture_output=True, check=False)
        subprocess.run([IP, "-n", self.namespace, "addr", "del", f"{address}/32", "dev", "eth0"], capture_output=True,
                       check=False)

    def stop(self) -> None:
        """Power off: every process of the VM dies (its mount namespace with them)."""
        if namespace_exists(self.namespace):
            for _ in range(5):
                pids = namespace_pids(self.namespace)
                if not pids:
                    break
                kill_all(pids)
        (self.root / "ssh" / "sshd.pid").unlink(missing_ok=True)

    def delete(self) -> None:
        self.stop()
        self.net.remove_node(self.address)
        shutil.rmtree(self.root, ignore_errors=True)

    def stub_calls(self) -> list[str]:
        log = self.root / "stubs.log"
        return log.read_text().splitlines() if log.exists() else []
