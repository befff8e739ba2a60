"""Which pairs an agent round looks at without repmgr's view (Agent._brief): a pair with a problem never; the
healthy ones in turns, so that each has it about every REPMGR_VIEW_EVERY seconds."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pgaasctl.monitor.agent import REPMGR_VIEW_EVERY, Agent
from pgaasctl.monitor.models import LookupPair


def _agent(interval: float, healthy: list[str], unhealthy: list[str]) -> Agent:
    agent = Agent(path=Path("."), interval=interval)
    agent._state.lookups = [LookupPair(pair=name, healthy=True, checked_at="", source="agent") for name in healthy] + [
        LookupPair(pair=name, healthy=False, checked_at="", source="agent") for name in unhealthy]
    return agent


def _pairs(*names: str) -> list[Any]:
    return [SimpleNamespace(name=name) for name in names]


def test_a_pair_never_looked_at_or_not_healthy_gets_the_whole_look() -> None:
    agent = _agent(1.0, healthy=["a"], unhealthy=["b"])
    brief = agent._brief(_pairs("a", "b", "new"))
    assert "b" not in brief and "new" not in brief


def test_healthy_pairs_take_turns_and_each_has_repmgrs_view_within_the_period() -> None:
    names = [f"p{i}" for i in range(10)]
    agent = _agent(5.0, healthy=names, unhealthy=[])
    rounds_per_period = int(REPMGR_VIEW_EVERY / 5.0)
    viewed: dict[str, list[int]] = {name: [] for name in names}
    for number in range(3 * rounds_per_period):
        brief = agent._brief(_pairs(*names))
        assert len(names) - len(brief) == 2  # ceil(10 pairs * 5 s / 30 s)
        for name in set(names) - brief:
            viewed[name].append(number)
            agent._repmgr_viewed_at[name] = time.monotonic() + number  # later rounds, later times
    for name, numbers in viewed.items():
        gaps = [b - a for a, b in zip(numbers, numbers[1:])]
        assert numbers[0] < rounds_per_period and max(gaps) <= rounds_per_period, (name, numbers)


def test_with_a_long_interval_every_round_has_repmgrs_view() -> None:
    agent = _agent(60.0, healthy=["a", "b"], unhealthy=[])
    agent._repmgr_viewed_at = {"a": time.monotonic(), "b": time.monotonic()}
    assert agent._brief(_pairs("a", "b")) == set()
