"""The agent's HTTP listener: `/metrics` for Prometheus (postgres_exporter's names where one exists, with `pair`
and `node` labels, and the project's own under `pgaas_`) and `/healthz` (200 while rounds succeed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgaasctl.errors import PgaasError
from pgaasctl.monitor.metrics import METRICS, Sample
from pgaasctl.monitor.push import PUSH_PATH, parse_push

if TYPE_CHECKING:
    from pgaasctl.monitor.agent import Agent


log = logging.getLogger("pgaasctl.agent")
MAX_PUSH_BYTES = 4096


class LookupCollector(Collector):
    """What the agent's last rounds saw, read from memory at each scrape (a scrape never touches a node)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        snapshot = self.agent.snapshot()
        up = GaugeMetricFamily("pg_up", "Whether the node's PostgreSQL answered the last round (1) or not (0).",
                               labels=["pair", "node"])
        role = GaugeMetricFamily("pgaas_node_role", "The node's role at the last round (1 for the role it has).",
                                 labels=["pair", "node", "role"])
        lag = GaugeMetricFamily("pg_replication_lag_seconds", "A standby's replay lag, in seconds.",
                                labels=["pair", "node"])
        lag_bytes = GaugeMetricFamily("pgaas_replication_lag_bytes", "WAL the standby has not replayed yet, in bytes.",
                                      labels=["pair", "node"])
        degraded = GaugeMetricFamily("pgaas_pair_degraded", "1 while the pair is degraded or cannot be read.",
                                     labels=["pair"])
        for lookup in snapshot.lookups:
            degraded.add_metric([lookup.pair], 0.0 if lookup.healthy else 1.0)
            for node in lookup.nodes:
                up.add_metric([lookup.pair, node.name], 1.0 if node.up else 0.0)
                role.add_metric([lookup.pair, node.name, node.role], 1.0)
                if node.lag_seconds is not None:
                    lag.add_metric([lookup.pair, node.name], node.lag_seconds)
                if node.lag_bytes is not None:
                    lag_bytes.add_metric([lookup.pair, node.name], float(node.lag_bytes))
        yield from (up, role, lag, lag_bytes, degraded)
        yield from _sampled(snapshot.samples)
        failovers = CounterMetricFamily("pgaas_failovers", "Failovers the agent has seen since it started.",
                                        labels=["pair"])
        for pair, count in sorted(snapshot.failovers.items()):
            failovers.add_metric([pair], float(count))
        yield failovers
        pushes = CounterMetricFamily("pgaas_agent_pushes", "Pushes from the nodes, accepted or refused.",
                                     labels=["result"])
        for outcome, count in sorted(snapshot.pushes.items()):
            pushes.add_metric([outcome], float(count))
        yield pushes
        yield CounterMetricFamily("pgaas_agent_rounds", "Agent rounds run.", value=float(snapshot.rounds))
        yield CounterMetricFamily("pgaas_agent_round_errors", "Pairs a round could not read, summed over rounds.",
                                  value=float(snapshot.pair_errors))
        yield CounterMetricFamily("pgaas_agent_failed_rounds", "Rounds that could not run at all (specs, store).",
                                  value=float(snapshot.failed_rounds))
        yield GaugeMetricFamily("pgaas_agent_round_duration_seconds", "How long the last round took.",
                                value=snapshot.last_seconds)


FROM_THE_LOOKUP = ("pg_up", "pg_replication_lag_seconds")  # fresher there: the lookup is renewed every round


def _sampled(samples: dict[str, dict[str, list[Sample]]]) -> Iterator[Metric]:
    """The nodes' latest metric samples, one family per metric. Counters keep postgres_exporter's names (no _total
    suffix), so they are exposed untyped; rate() works on them all the same."""
    families: dict[str, Metric] = {}
    for pair, nodes in sorted(samples.items()):
        for node, found in sorted(nodes.items()):
            for sample in found:
                info = METRICS.get(sample.metric)
                if info is None or sample.metric in FROM_THE_LOOKUP:
                    continue
                family = families.get(sample.metric)
                if family is None:
                    family = families[sample.metric] = Metric(
                        sample.metric, info.help, "gauge" if info.kind == "gauge" else "unknown")
                labels = {"pair": pair, "node": node}
                if sample.database:
                    labels["datname"] = sample.database
                if info.label:
                    labels[info.label] = sample.label
                family.add_sample(sample.metric, labels, sample.value)
    yield from families.values()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            age = self.server.agent.seconds_since_success()
            healthy = age is not None and age < max(3 * self.server.agent.interval, 10.0)
            text = "ok" if healthy else "no successful round yet" if age is None else f"last good round {age:.0f}s ago"
            self._reply(200 if healthy else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path.split("?", 1)[0] != PUSH_PATH:
            self._reply(404, b"not found: pushes go to /push\n", "text/plain; charset=utf-8")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_PUSH_BYTES:
            self._reply(400, b"a push is a small form\n", "text/plain; charset=utf-8")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", errors="replace"))
        agent = self.server.agent
        try:
            push = parse_push(form, self.headers.get("Authorization", ""), agent.key)
        except PermissionError as exc:
            agent.pushed(None)
            log.warning("push refused: %s (from %s)", exc, self.client_address[0])
            self._reply(403, b"wrong token\n", "text/plain; charset=utf-8")
            return
        except PgaasError as exc:
            agent.pushed(None)
            self._reply(400, f"{exc.message}\n".encode(), "text/plain; charset=utf-8")
            return
        agent.pushed(push)
        self._reply(202, b"looking\n", "text/plain; charset=utf-8")

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass  # scrapes every few seconds would drown the agent's own log


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], agent: Agent) -> None:
        super().__init__(address, _Handler)
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LookupCollector(agent))


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT (an IPv4 address or a name; [v6]:PORT for IPv6)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PgaasError(f"--listen: {text!r} is not ADDR:PORT", "For example --listen 127.0.0.1:9187.")
    return host, int(port)


def serve(agent: Agent, listen: str) -> tuple[_Server, threading.Thread]:
    """Start the listener in a thread; stop it with server.shutdown()."""
    address = parse_listen(listen)
    try:
        server = _Server(address, agent)
    except OSError as exc:
        raise PgaasError(f"--listen {listen}: cannot listen there: {exc.strerror}",
                         "Pick a free port on an address of this machine.") from None
    thread = threading.Thread(target=server.serve_forever, name="agent-http", daemon=True)
    thread.start()
    return server, thread

