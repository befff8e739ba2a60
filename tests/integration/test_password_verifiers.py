"""Password drift detection agrees with PostgreSQL's own SCRAM verifiers, SASLprep included."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from pgaasctl.passwords import password_matches, scram_verifier
from tests.support.pgserver import PgServer

PASSWORDS = ["plain-ascii", "naïve-ｐａｓｓ", "soft\u00adhyphen", "zero\u200bwidth", "nbsp\u00a0x", "\u0627\u0644\u0633", "ｆｕｌｌ width"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_verifier_made_by_postgres_is_recognised(pg: PgServer, password: str) -> None:
    with pg.connect() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(sql.SQL("CREATE ROLE t PASSWORD {}").format(sql.Literal(password)))
    verifier = pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 't'")[0][0]
    assert password_matches(password, verifier, "t")
    assert not password_matches(password + "x", verifier, "t")


@pytest.mark.parametrize("password", PASSWORDS)
def test_verifier_made_by_pgaasctl_lets_the_user_log_in(pg: PgServer, password: str) -> None:
    with pg.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE t LOGIN PASSWORD {}").format(sql.Literal(scram_verifier(password))))
    with psycopg.connect(host=pg.host, port=pg.port, user="t", password=password, dbname="postgres") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("t",)
