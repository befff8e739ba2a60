"""Which of two primaries to keep: the evidence rules, without servers (the integration tests run them for real)."""

from __future__ import annotations

import pytest

from pgaasctl.errors import PlanError
from pgaasctl.live.split_brain import Primary, fork_point, lsn_bytes, settle

HISTORY_3 = "1\t0/3000150\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n"


def primary(name: str, timeline: int | None, lsn: str | None = None, sync: str = "", history: str | None = None) -> Primary:
    return Primary(name=name, label=f"{name} (10.0.0.{ord(name[0])})", timeline=timeline, lsn=lsn,
                   synchronous_standby_names=sync, history=history)


def test_the_newer_timeline_is_kept_and_the_discarded_wal_is_counted() -> None:
    verdict = settle("p", [primary("a", 2, lsn="0/5000400", sync="*"), primary("b", 3, lsn="0/6000000", history=HISTORY_3)])
    assert (verdict.keep.name, verdict.stale.name) == ("b", "a")
    assert verdict.fork_lsn == "0/5000000" and verdict.discarded_bytes == 0x400
    text = verdict.explanation()
    assert "a is a stale primary on timeline 2; b was promoted later (timeline 3, forked from timeline 2 at 0/5000000)" in text
    assert "discards 1024 bytes" in text and "none of those commits was acknowledged" in text


def test_asynchronous_replication_says_acknowledged_commits_are_lost() -> None:
    verdict = settle("p", [primary("a", 2, lsn="0/5000400"), primary("b", 3, lsn="0/6000000", history=HISTORY_3)])
    assert "commits acknowledged on it after the fork are lost" in verdict.explanation()


def test_nothing_past_the_fork_discards_nothing() -> None:
    verdict = settle("p", [primary("a", 2, lsn="0/4000000", sync="*"), primary("b", 3, history=HISTORY_3)])
    assert verdict.discarded_bytes == 0 and "acknowledged" not in verdict.explanation()


@pytest.mark.parametrize("timelines", [(2, 2), (None, 3), (2, None)])
def test_timelines_that_do_not_differ_are_refused_with_the_evidence(timelines: tuple[int | None, int | None]) -> None:
    with pytest.raises(PlanError, match="split brain") as caught:
        settle("p", [primary("a", timelines[0], lsn="0/1"), primary("b", timelines[1])])
    assert "changes neither" in caught.value.hint


def test_a_history_that_does_not_pass_through_the_stale_timeline_is_refused() -> None:
    unrelated = "1\t0/3000150\tx\n"  # b's timeline 3 forked from 1, never from a's timeline 2
    with pytest.raises(PlanError, match="does not pass through timeline 2"):
        settle("p", [primary("a", 2), primary("b", 3, history=unrelated)])


def test_history_and_lsn_parsing() -> None:
    assert fork_point(HISTORY_3, 2) == "0/5000000" and fork_point(HISTORY_3, 7) is None
    assert lsn_bytes("1/0") == 1 << 32 and lsn_bytes("0/10") == 16
