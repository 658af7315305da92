"""Value-axis ticks the charts share: round steps, and one number format per axis.

Left to itself, bqplot writes each tick with as few decimals as that tick needs, so one axis reads
``24.5, 25, 25.5``; every axis given ticks here also gets one format, with the decimals its finest tick needs.
"""

from __future__ import annotations

import bqplot as bq
import numpy as np

__all__ = ["MAX_DECIMALS", "nice_axis", "set_ticks", "tick_format", "ticks_within"]

MAX_DECIMALS = 6
"""Ticks are never written with more decimals than this."""


def nice_axis(low: float, high: float, intervals: int = 5) -> tuple[float, float, np.ndarray]:
    """Round axis ends around ``[low, high]`` and the ticks between them: steps of 1, 2 or 5 × 10^k.

    bqplot spreads its ticks evenly over the scale's range, so an axis ending at the data maximum gets
    ticks such as 0, 8, 16, 24, 31; ends and ticks on one round step read better.
    """
    if high <= low:
        high = low + 1.0
    raw = (high - low) / intervals
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * 0.9999)
    start, end = float(np.floor(low / step) * step), float(np.ceil(high / step) * step)
    return start, end, start + step * np.arange(round((end - start) / step) + 1)


def ticks_within(low: float, high: float, intervals: int = 5) -> np.ndarray:
    """The round ticks of :func:`nice_axis` that lie within ``[low, high]`` (an axis whose ends the data sets)."""
    ticks = nice_axis(low, high, intervals)[2]
    return ticks[(ticks >= low - 1e-9) & (ticks <= high + 1e-9)]


def tick_format(ticks: np.ndarray) -> str:
    """A d3 format writing every tick with the decimals the finest one needs (``",.1f"`` for 24.5, 25, 25.5)."""
    decimals = 0
    for tick in np.asarray(ticks, dtype="float64"):
        fraction = f"{abs(float(tick)):.{MAX_DECIMALS}f}".rstrip("0").partition(".")[2]
        decimals = max(decimals, len(fraction))
    return f",.{decimals}f"


def set_ticks(axis: bq.Axis, ticks: np.ndarray | None) -> None:
    """Put ``axis``'s ticks at ``ticks``, all written alike; None leaves the ticks (and their format) to bqplot."""
    axis.tick_values = ticks
    axis.tick_format = None if ticks is None else tick_format(ticks)
