"""Axis ticks: round steps, and one number format per axis."""

from __future__ import annotations

import numpy as np
import pytest

from runtool.ui.ticks import nice_axis, tick_format, ticks_within


@pytest.mark.parametrize(("ticks", "expected"), [
    ([24.5, 25.0, 25.5, 26.0], ",.1f"),  # bqplot wrote 24.5, 25, 25.5, 26
    ([0.25, 0.5, 0.75, 1.0], ",.2f"),
    ([0, 20, 40, 60], ",.0f"),
    ([0.1 + 0.2, 0.6], ",.1f"),  # float noise (0.30000000000000004) is no decimal of its own
    ([-0.05, 0.0, 0.05], ",.2f"),
])
def test_every_tick_of_an_axis_is_written_with_the_same_decimals(ticks: list[float], expected: str) -> None:
    assert tick_format(np.array(ticks)) == expected


def test_round_ticks_within_the_data() -> None:
    start, end, ticks = nice_axis(0.0, 31.0)  # 5 intervals of at least 6.2: steps of 10
    assert (start, end, ticks.tolist()) == (0.0, 40.0, [0.0, 10.0, 20.0, 30.0, 40.0])
    assert ticks_within(24.3, 27.6).tolist() == [25.0, 26.0, 27.0]  # at least 0.66 apart: steps of 1
    assert ticks_within(0.05, 0.4).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
