"""Pushes from the nodes: repmgr's event_notification_command (a promotion, a failover, a rejoin, repmgrd starting)
posts to the agent, which looks at that pair at once instead of at its next round. A push is a hint, never a fact:
the agent believes only what its own discovery then finds, so a forged "I am primary" moves nothing.

Each pair has its own token, derived from the store's key (HMAC), so the store never holds it; the agent, which
reads the same store, derives it again to check a push."""

from __future__ import annotations

import hashlib
import hmac
import re
import shlex

from pydantic import BaseModel, SecretStr

from pgaasctl.errors import PgaasError

PUSH_PATH = "/push"
# the repmgr events that change which node is primary, or whether a node follows it
EVENTS = ("standby_promote", "repmgrd_failover_promote", "repmgrd_failover_follow", "standby_follow", "node_rejoin",
          "repmgrd_start", "repmgrd_upstream_disconnect", "repmgrd_failover_abort", "standby_switchover")
URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?/?")


class PushTarget(BaseModel):
    """Where a pair's nodes post their events, and the pair's token."""

    url: str  # the agent's address as the nodes reach it, e.g. http://10.213.0.1:9187
    token: SecretStr

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + PUSH_PATH


class Push(BaseModel):
    pair: str
    node_id: int
    event: str
    successful: bool
    at: str = ""


def pair_token(key: bytes, pair: str) -> str:
    return hmac.new(key, f"push:{pair}".encode(), hashlib.sha256).hexdigest()


def push_target(agent_url: str | None, key: bytes | None, pair: str) -> PushTarget | None:
    if not agent_url or key is None:
        return None
    return PushTarget(url=agent_url, token=SecretStr(pair_token(key, pair)))


def check_agent_url(value: str) -> str:
    if not URL.fullmatch(value.strip()):
        raise ValueError(f"agent_url must be http://ADDRESS:PORT as the nodes reach the agent, got {value!r}")
    return value.strip().rstrip("/")


def parse_push(form: dict[str, list[str]], authorization: str, key: bytes | None) -> Push:
    """A push as the event script sends it (form-encoded), checked against the pair's token. PgaasError says why a
    push is refused (the agent answers 400 or 403 with it)."""
    def field(name: str) -> str:
        values = form.get(name) or [""]
        return values[0]

    pair = field("pair")
    if not pair or key is None:
        raise PgaasError("a push names no pair, or the agent has not read its store yet")
    given = authorization.removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), pair_token(key, pair).encode()):
        raise PermissionError(f"a push for pair {pair!r} with a wrong token")
    if not field("node_id").isdigit() or not field("event"):
        raise PgaasError(f"a push for pair {pair!r} without a node id or event")
    return Push(pair=pair, node_id=int(field("node_id")), event=field("event")[:64],
                successful=field("successful") == "1", at=field("at")[:40])


def event_script(pair: str, endpoint: str, header_file: str) -> str:
    """repmgr's event_notification_command on a node: posts in the background (repmgr waits for the command), with
    the token read from a 0600 file so it never shows in the process list."""
    q = shlex.quote
    return "\n".join([
        "#!/bin/sh",
        "# written by pgaasctl: repmgr's event_notification_command; tells the agent to look at this pair now",
        "# arguments: node id, event, success (1/0), timestamp",
        f"( curl -s -m 2 -o /dev/null -H @{q(header_file)} --data-urlencode pair={q(pair)} "
        '--data-urlencode "node_id=$1" --data-urlencode "event=$2" --data-urlencode "successful=$3" '
        f'--data-urlencode "at=$4" {q(endpoint)} ) >/dev/null 2>&1 </dev/null &',
        "exit 0",
        "",
    ])
