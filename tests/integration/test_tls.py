"""TLS on a pair pgaasctl creates, through real libpq connections on the namespace network: the nodes serve
certificates from the workspace CA with their addresses as names, refuse plaintext, and stream replication over
verify-full; a wrong host name and another CA are refused."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import psycopg
import pytest

from pgaasctl.tls.authority import Authority
from tests.support.local_pair import Lab, LocalPair, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI runs as root)")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("tls", slot=1, network="namespaces") as lab:
        vip = str(IPv4Network(lab.subnet).network_address + 200)
        lab.add_pair("tp", replication="synchronous", tls={"mode": "verify-full"}, virtual_ip=vip,
                     witness={"name": "tp-w"})
        lab.add_pair("tq", replication="synchronous")
        yield lab


@pytest.fixture
def tp(lab: Lab) -> LocalPair:
    pair = lab.pairs["tp"]
    pair.ensure_healthy()
    return pair


def _ca(tp: LocalPair) -> Path:
    return tp.lab.base / "tls" / "ca.crt"


def _connect(tp: LocalPair, node: str, **params: str) -> psycopg.Connection:
    options = {"host": tp.address(node), "port": 5432, "user": "postgres", "password": tp.admin_password,
               "dbname": "postgres", "connect_timeout": 5, **params}
    return psycopg.connect(**options, autocommit=True)  # type: ignore[arg-type]


def test_a_verify_full_pair_serves_tls_alone_and_replicates_over_it(tp: LocalPair, tmp_path: Path) -> None:
    primary = tp.primary()
    standby = tp.other(primary)
    ca = str(_ca(tp))
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _connect(tp, primary, sslmode="disable")  # plaintext: no pg_hba line takes it
    with _connect(tp, primary, sslmode="verify-full", sslrootcert=ca) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        streaming = conn.execute("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)").fetchall()
        assert streaming == [(True,)]  # the standby streams over TLS
        with _connect(tp, primary, sslmode="verify-full", sslrootcert=ca, dbname="repmgr") as repmgr:
            witness = repmgr.execute("SELECT conninfo FROM repmgr.nodes WHERE type = 'witness'").fetchone()
        assert witness is not None and "sslmode=verify-full" in witness[0]  # the witness is reached verified
        repmgr_sessions = conn.execute("SELECT bool_and(s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s "
                                       "USING (pid) WHERE a.usename = 'repmgr' AND a.client_addr IS NOT NULL").fetchone()
        assert repmgr_sessions is not None and repmgr_sessions[0] is True and repmgr_sessions[1] >= 1
    with _connect(tp, standby, sslmode="verify-full", sslrootcert=ca) as conn:
        primary_conninfo = conn.execute("SHOW primary_conninfo").fetchone()[0]  # type: ignore[index]
        assert "sslmode='verify-full'" in primary_conninfo and "sslrootcert=" in primary_conninfo

    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        _connect(tp, primary, host="wrong.example", hostaddr=tp.address(primary), sslmode="verify-full",
                 sslrootcert=ca)
    other = tmp_path / "other-ca.crt"
    other.write_bytes(Authority.create("someone else's CA").cert_pem)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(tp, primary, sslmode="verify-full", sslrootcert=str(other))


def test_the_cli_connects_verified_and_hands_out_a_verify_full_uri(tp: LocalPair) -> None:
    assert tp.ws.plan("--detailed-exitcode").exit_code == 0  # pgaasctl's own sessions verify the servers too
    uri = tp.ws.connection("tp").stdout.strip()
    assert "sslmode=verify-full" in uri and f"sslrootcert={_ca(tp)}" in uri
    done = subprocess.run(["psql", uri, "-X", "-A", "-t", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PGUSER": "postgres", "PGPASSWORD": tp.admin_password})
    assert done.returncode == 0 and done.stdout.strip() == "t", done.stderr


def test_the_ca_key_is_private_and_never_in_the_store(tp: LocalPair) -> None:
    key = tp.lab.base / "tls" / "ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    store = Path(tp.ws.store_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in store.parent.glob(store.name + "*"))
    assert b"PRIVATE KEY" not in stored and b"sha256:" in stored  # its fingerprint alone
    for node in tp.nodes:
        server_key = tp.etc(node) / "tls" / "server.key"
        assert stat.S_IMODE(server_key.stat().st_mode) == 0o600


def test_turning_tls_on_for_a_pair_is_a_reload_not_a_rebuild(lab: Lab) -> None:
    tq = lab.pairs["tq"]
    tq.ensure_healthy()
    primary = tq.primary()
    standby = tq.other(primary)
    tq.execute(primary, "CREATE TABLE IF NOT EXISTS kept (n int)")
    tq.execute(primary, "INSERT INTO kept VALUES (1)")
    started = tq.value(primary, "SELECT pg_postmaster_start_time()")
    with _connect(tq, primary, sslmode="disable"):
        pass  # before: plaintext is let in
    try:
        tq.rewrite_spec(tls={"mode": "verify-full"})
        planned = tq.ws.plan()
        assert planned.exit_code == 0, planned.output
        assert "TLS verify-full" in planned.flat and "clone" not in planned.flat and "init_primary" not in planned.flat
        applied = tq.ws.apply()
        assert applied.exit_code == 0, applied.output
        assert tq.ws.plan("--detailed-exitcode").exit_code == 0
        with pytest.raises(psycopg.OperationalError, match="no encryption"):
            _connect(tq, primary, sslmode="disable")
        with _connect(tq, primary, sslmode="verify-full", sslrootcert=str(_ca(tq))) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)  # the same data: no rebuild
            assert conn.execute("SELECT pg_postmaster_start_time()").fetchone() == (started,)  # no restart
            wait_until(lambda: conn.execute("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) "
                                            "WHERE r.state = 'streaming'").fetchall() == [(True,)],
                       20, "the standby to stream again, over TLS")
        with _connect(tq, standby, sslmode="verify-full", sslrootcert=str(_ca(tq))) as conn:
            shown = conn.execute("SHOW primary_conninfo").fetchone()[0]  # type: ignore[index]
            assert "sslmode=verify-full" in shown.replace("'", "")
    finally:
        tq.rewrite_spec()  # TLS off again: plaintext let in, TLS still offered (a client may still ask for it)
        turned_off = tq.ws.apply()
        assert turned_off.exit_code == 0, turned_off.output
    assert tq.primary() == primary  # no client that still asked for TLS was cut off: no failover on the way
    with _connect(tq, primary, sslmode="disable"):
        pass
    assert tq.ws.plan("--detailed-exitcode").exit_code == 0


def _expired_client_cert(ca_dir: Path, role: str, out: Path) -> tuple[Path, Path]:
    """A certificate for `role` from the workspace CA itself, whose validity ended yesterday."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from pgaasctl.tls.authority import cert_pem, key_pem, write_private

    ca = Authority.load(ca_dir / "ca.crt", ca_dir / "ca.key", None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=10)).not_valid_after(now - dt.timedelta(days=1))
            .sign(ca.key, hashes.SHA256()))  # type: ignore[arg-type]
    write_private(out / "expired.key", key_pem(key))
    (out / "expired.crt").write_bytes(cert_pem(cert))
    return out / "expired.crt", out / "expired.key"


def test_a_role_logs_in_with_its_client_certificate_until_it_is_revoked(tp: LocalPair, tmp_path: Path) -> None:
    tp.ws.write("role-cert.yaml", "kind: Role\nmetadata: {name: app_cert, pair: tp}\n"
                                  "spec: {login: true, client_certificate: true}\n")
    applied = tp.ws.apply()
    assert applied.exit_code == 0, applied.output
    assert "TLS verify-full" in applied.flat  # pg_hba names the role: a reload on each node
    out = tmp_path / "certs"
    issued = tp.ws.run("cert", "issue", "app_cert", str(tp.ws.specs), "--pair", "tp", "--out", str(out))
    assert issued.exit_code == 0, issued.output
    assert stat.S_IMODE((out / "app_cert.key").stat().st_mode) == 0o600
    uri = tp.ws.run("connection", "tp", str(tp.ws.specs), "--role", "app_cert", "--cert-dir", str(out)).stdout.strip()
    assert "sslcert=" in uri and "sslkey=" in uri and "sslmode=verify-full" in uri

    def login(*extra: str, password: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["psql", *extra, "-X", "-A", "-t", "-c", "SELECT current_user"], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "PGPASSWORD": password,
                                                          "PGCONNECT_TIMEOUT": "5"})

    good = login(uri)
    assert good.returncode == 0 and good.stdout.strip() == "app_cert", good.stderr
    plain_uri = tp.ws.run("connection", "tp", str(tp.ws.specs), "--role", "app_cert").stdout.strip()
    assert login(plain_uri, password="anything").returncode != 0  # no certificate: refused, whatever the password
    other = Authority.create("someone else's CA").issue_client("app_cert")
    (tmp_path / "other.crt").write_bytes(other.cert_pem)
    (tmp_path / "other.key").write_bytes(other.key_pem)
    (tmp_path / "other.key").chmod(0o600)
    foreign = login(f"{plain_uri}&sslcert={tmp_path / 'other.crt'}&sslkey={tmp_path / 'other.key'}")
    assert foreign.returncode != 0 and "unknown ca" in foreign.stderr.lower(), foreign.stderr
    expired_cert, expired_key = _expired_client_cert(tp.lab.base / "tls", "app_cert", tmp_path)
    expired = login(f"{plain_uri}&sslcert={expired_cert}&sslkey={expired_key}")
    assert expired.returncode != 0 and "expired" in expired.stderr.lower(), expired.stderr

    revoked = tp.ws.run("cert", "revoke", str(tp.ws.specs), "--pair", "tp", "--role", "app_cert")
    assert revoked.exit_code == 0, revoked.output
    assert "revocation list is on tp/tp-a, tp/tp-b" in revoked.flat
    after = login(uri)
    assert after.returncode != 0 and "revoked" in after.stderr.lower(), after.stderr
    listed = tp.ws.run("cert", "list", str(tp.ws.specs), "--pair", "tp")
    assert "client tp/app_cert revoked" in listed.flat and "server tp/tp-a" in listed.flat


def test_rotating_server_certificates_keeps_replication_streaming(tp: LocalPair) -> None:
    primary = tp.primary()
    ca = str(_ca(tp))
    with _connect(tp, primary, sslmode="verify-full", sslrootcert=ca) as conn:
        before = conn.execute("SELECT pid FROM pg_stat_replication").fetchall()
        tp.execute(primary, "CREATE TABLE IF NOT EXISTS rotation (n int)")
        rotated = tp.ws.run("cert", "rotate", "tp", str(tp.ws.specs))
        assert rotated.exit_code == 0, rotated.output
        assert conn.execute("SELECT pid FROM pg_stat_replication").fetchall() == before  # the same walsender
        tp.execute(primary, "INSERT INTO rotation VALUES (1)")  # a synchronous commit: the standby confirms it
    servers = [c for c in json.loads(tp.ws.run("cert", "list", str(tp.ws.specs), "--pair", "tp", "--json").stdout) if c["kind"] == "server"]
    assert {c["subject"] for c in servers} == {"tp-a", "tp-b", "tp-w"} and len(servers) >= 6  # each one's old and new
    with _connect(tp, primary, sslmode="verify-full", sslrootcert=ca) as conn:  # new sessions get the new one
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)


def test_a_verify_full_pair_fails_over_and_clients_follow_through_the_uri_and_the_virtual_ip(tp: LocalPair) -> None:
    uri = tp.ws.connection("tp").stdout.strip()
    vip_uri = tp.ws.connection("tp", "--virtual-ip").stdout.strip()
    assert "sslmode=verify-full" in uri and "sslmode=verify-full" in vip_uri
    old = tp.primary()
    new = tp.other(old)

    def primary_behind(target: str) -> str | None:
        try:
            with psycopg.connect(target, user="postgres", password=tp.admin_password, connect_timeout=2,
                                 autocommit=True) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS followed (n int)")
                conn.execute("INSERT INTO followed VALUES (1)")  # a write: the primary, verified, answered
                return str(conn.execute("SELECT inet_server_addr()").fetchone()[0])  # type: ignore[index]
        except psycopg.OperationalError:
            return None

    assert primary_behind(uri) == tp.address(old)
    tp.kill_postmaster(old)
    wait_until(lambda: primary_behind(uri) == tp.address(new), 60, "the URI to reach the new primary, verify-full")
    wait_until(lambda: primary_behind(vip_uri) is not None, 60,
               "the virtual IP to reach the new primary, its name in the new primary's certificate")


def test_pg_hba_lets_in_the_pairs_own_network_alone_unless_the_spec_widens_it(tp: LocalPair) -> None:
    hba = (tp.etc(tp.primary()) / "pg_hba.conf").read_text()
    assert tp.lab.subnet in hba and "0.0.0.0/0" not in hba and "::/0" not in hba
    tp.rewrite_spec(clients=["10.99.0.0/16"])  # besides the pair's own network, which stays (replication is there)
    planned = tp.ws.plan()
    assert planned.exit_code == 0 and "reconfigure" in planned.flat.lower() or "repmgr.conf" in planned.flat
    assert tp.ws.apply().exit_code == 0
    hba = (tp.etc(tp.primary()) / "pg_hba.conf").read_text()
    assert "10.99.0.0/16" in hba and tp.lab.subnet in hba
    assert tp.ws.plan("--detailed-exitcode").exit_code == 0
    tp.assert_whole()  # the standby still streams, the witness still sees the primary


def test_the_console_hands_a_roles_owner_its_client_certificate(tp: LocalPair, browser: object, tmp_path: Path) -> None:
    import zipfile

    from tests.support.browser import new_tab
    from tests.support.service import serving

    tp.ws.write("cert-db.yaml", "kind: Role\nmetadata: {name: owner_cert, pair: tp}\n"
                                "spec: {login: true, client_certificate: true}\n---\n"
                                "kind: Database\nmetadata: {name: certdb, pair: tp}\nspec: {owner: owner_cert}\n")
    assert tp.ws.apply().exit_code == 0
    password = tp.ws.run("user", "create", "cara", "--role", "admin", str(tp.ws.specs)).stdout.strip()
    with serving(tp.ws.specs, "--interval", "2s", env={**os.environ, "PGAASCTL_STORE": tp.ws.store_url}) as console:
        tab = new_tab(browser, console.base)
        try:
            tab.sign_in("cara", password)
            tab.open("/pairs/tp/databases/certdb")
            with tab.page.expect_download() as downloading:
                tab.page.get_by_role("button", name="Download a client certificate for owner_cert").click()
            bundle = tmp_path / "bundle.zip"
            downloading.value.save_as(bundle)
            assert tab.errors == []
        finally:
            tab.close()
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == ["owner_cert.crt", "owner_cert.key", "root.crt"]
        archive.extractall(tmp_path / "certs")
    (tmp_path / "certs" / "owner_cert.key").chmod(0o600)
    uri = tp.ws.run("connection", "tp", str(tp.ws.specs), "--role", "owner_cert", "--database", "certdb",
                    "--cert-dir", str(tmp_path / "certs")).stdout.strip()
    done = subprocess.run(["psql", uri, "-X", "-A", "-t", "-c", "SELECT current_user"], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PGCONNECT_TIMEOUT": "5"})
    assert done.returncode == 0 and done.stdout.strip() == "owner_cert", done.stderr


def test_a_revocation_says_which_nodes_it_did_not_reach(tp: LocalPair, tmp_path: Path) -> None:
    tp.ws.write("role-late.yaml", "kind: Role\nmetadata: {name: late_cert, pair: tp}\n"
                                  "spec: {login: true, client_certificate: true}\n")
    assert tp.ws.apply().exit_code == 0
    issued = tp.ws.run("cert", "issue", "late_cert", str(tp.ws.specs), "--pair", "tp", "--out", str(tmp_path))
    assert issued.exit_code == 0, issued.output
    standby = tp.other(tp.primary())
    tp.stop_postgres(standby)
    try:
        revoked = tp.ws.run("cert", "revoke", str(tp.ws.specs), "--pair", "tp", "--role", "late_cert")
        assert revoked.exit_code == 0, revoked.output
        assert f"Not on tp/{standby}" in revoked.flat and "cert rotate" in revoked.flat
        again = tp.ws.run("cert", "revoke", str(tp.ws.specs), "--pair", "tp", "--role", "late_cert")
        assert again.exit_code == 0 and "Already revoked" in again.flat
    finally:
        tp.start_postgres(standby)
