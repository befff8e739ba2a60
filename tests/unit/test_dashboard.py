"""The Grafana dashboard in the repository queries only metrics the agent's /metrics serves, with the labels it
serves them with: rendered by prometheus-client from a snapshot holding every metric, and parsed back."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgaasctl.monitor.agent import Agent
from pgaasctl.monitor.endpoint import LookupCollector
from pgaasctl.monitor.metrics import METRICS, Sample
from pgaasctl.monitor.models import LookupNode, LookupPair

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "pgaasctl-pair.json"
PROMQL_WORDS = {"sum", "by", "rate", "increase", "clamp_min", "label_values", "pair", "node", "datname", "state",
                "role", "application_name", "slot_name", "__range", "range"}


def _served() -> dict[str, set[str]]:
    """Metric name -> the labels it carries, as /metrics renders them."""
    agent = Agent(path=Path("."))
    agent._state.lookups = [LookupPair(pair="orders", healthy=True, checked_at="t", source="agent", nodes=[
        LookupNode(name="orders-a", role="primary", up=True, address="a:5432"),
        LookupNode(name="orders-b", role="standby", up=True, address="b:5432", lag_seconds=0.1, lag_bytes=10)])]
    agent._state.samples = {"orders": {"orders-a": [
        Sample(metric=name, value=1.0, database="app" if name.startswith(("pg_stat_database", "pg_database")) else "",
               label="x" if info.label else "") for name, info in METRICS.items()]}}
    agent._state.failovers = {"orders": 1}
    agent._state.pushes = {"accepted": 1}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LookupCollector(agent))
    served: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
    return served


def test_every_metric_the_dashboard_queries_is_served_with_its_labels() -> None:
    served = _served()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 16
    for expr in exprs:
        names = {w for w in re.findall(r"\b(p(?:g|gaas)_[a-z_]+)\b", expr)}
        assert names, expr
        for name in names:
            assert name in served, f"{name} (in {expr!r}) is not served"
            for label in re.findall(r"\b([a-z_]+)=\"", expr) + re.findall(r"by \(([^)]*)\)", expr):
                for one in (x.strip() for x in label.split(",")):
                    assert one in served[name], f"{name} has no label {one!r} (in {expr!r})"


def test_the_pair_variable_comes_from_a_served_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "pair"]
    assert variable["query"] == "label_values(pg_up, pair)" and "pair" in _served()["pg_up"]
