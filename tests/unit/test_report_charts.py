"""A report's charts: one with no points in the period is drawn as a note, not a crash (matplotlib's date
formatter fails on an axis without dates)."""

from __future__ import annotations

import pytest

from pgaasctl.monitor.report import Chart, Series, _chart_svg


@pytest.mark.parametrize("series", [[], [Series(label="orders", points=[])]])
def test_a_chart_without_points_says_so(series: list[Series]) -> None:
    svg = _chart_svg(Chart(title="Database size", unit="bytes", series=series))
    assert svg.startswith("<svg") and "no data in this period" in svg


def test_a_chart_with_points_draws_its_series() -> None:
    points = [("2026-12-01T10:00:00+00:00", 1.0), ("2026-12-01T10:05:00+00:00", 3.0)]
    svg = _chart_svg(Chart(title="Commits", unit="per s", series=[Series(label="orders", points=points)]))
    assert "orders" in svg and "no data in this period" not in svg
