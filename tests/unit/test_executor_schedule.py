"""How apply schedules one wave's changes (Executor._drive): dependencies first, plan order among the ready ones,
nothing new after a failure. No server: `_apply_change` is replaced by a recorder, the scheduling is the real one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from pgaasctl.apply.executor import ApplyFailed, ApplyResult, Executor
from pgaasctl.plan.model import Change


class Recorder(Executor):
    def __init__(self, workers: int, failing: set[str] | None = None) -> None:
        self.workers = workers
        self.failing = failing or set()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.lock = threading.Lock()

    @property
    def pair(self) -> str:
        return "p"

    def _apply_change(self, change: Change) -> None:
        with self.lock:
            self.started.append(change.address)
        if change.address in self.failing:
            raise psycopg.errors.DuplicateObject("already there")
        with self.lock:
            self.finished.append(change.address)


def role(name: str) -> Change:
    return Change(address=f"role.p.{name}", kind="role", name=name, action="create")


def drive(executor: Recorder, wave: list[Change], waiting_on: dict[str, set[str]]) -> tuple[ApplyResult, Any]:
    result = ApplyResult(pair="p")
    with ThreadPoolExecutor(max_workers=executor.workers) as pool:
        failure = executor._drive(pool, wave, waiting_on, result)
    return result, failure


def test_a_change_starts_only_after_what_it_waits_on_finished() -> None:
    wave = [role(n) for n in ("member", "parent", "grandparent", "other")]
    waiting = {"role.p.member": {"role.p.parent"}, "role.p.parent": {"role.p.grandparent"},
               "role.p.grandparent": set(), "role.p.other": set()}
    executor = Recorder(workers=4)
    result, failure = drive(executor, wave, waiting)
    assert failure is None and sorted(result.done) == sorted(c.address for c in wave)
    order = executor.finished
    assert order.index("role.p.grandparent") < order.index("role.p.parent") < order.index("role.p.member")


def test_one_worker_runs_the_ready_changes_in_plan_order() -> None:
    wave = [role(f"r{i}") for i in range(6)]
    waiting = {c.address: set() for c in wave}
    waiting["role.p.r0"] = {"role.p.r5"}  # first in the plan, but waits on the last
    executor = Recorder(workers=1)
    drive(executor, wave, waiting)
    assert executor.started == ["role.p.r1", "role.p.r2", "role.p.r3", "role.p.r4", "role.p.r5", "role.p.r0"]


def test_after_a_failure_nothing_new_starts_and_the_failure_names_the_change() -> None:
    wave = [role(f"r{i}") for i in range(5)]
    waiting = {c.address: ({f"role.p.r{i - 1}"} if i else set()) for i, c in enumerate(wave)}  # a chain
    executor = Recorder(workers=2, failing={"role.p.r2"})
    result, failure = drive(executor, wave, waiting)
    assert isinstance(failure, ApplyFailed) and "role.p.r2" in str(failure)
    assert executor.started == ["role.p.r0", "role.p.r1", "role.p.r2"] and result.done == ["role.p.r0", "role.p.r1"]


@pytest.mark.parametrize("size", [5000])
def test_a_large_wave_with_a_lane_runs_every_change_once(size: int) -> None:
    wave = [role(f"r{i}") for i in range(size)]
    waiting: dict[str, set[str]] = {c.address: set() for c in wave}
    for i in range(1, size, 2):  # every other change in one lane, chained in plan order
        waiting[f"role.p.r{i}"] = {f"role.p.r{i - 2}"} if i > 1 else set()
    executor = Recorder(workers=4)
    result, failure = drive(executor, wave, waiting)
    assert failure is None and len(result.done) == size == len(set(executor.started))
    lane = [a for a in executor.finished if int(a.rsplit("r", 1)[1]) % 2 == 1]
    assert lane == [f"role.p.r{i}" for i in range(1, size, 2)]
