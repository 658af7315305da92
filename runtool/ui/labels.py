"""How the pages name laser boxes: as briefly as the current selection allows, one rule on every page."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

__all__ = ["distinct_laser_box_names"]

LEVEL_SEPARATOR = " · "
"""Between the levels of a name that skips levels (``field_045 · LB_0012``): a ``/`` would read as a path."""


def distinct_laser_box_names(lb_keys: Sequence[str]) -> dict[str, str]:
    """Laser box labels for charts and tables: the laser box id plus the fewest upper levels that tell the boxes apart.

    Every name uses the same levels, so a chart never mixes ``LB_0011`` with ``field_115/TW_001/LB_0001``:
    under "All", where laser box ids repeat across fields, each name is ``field · laser box``; levels shared
    by every box (the selection) and levels implied by the others are left out. Among equally short choices
    the levels nearest the laser box win. The full ``lb_key`` belongs in the hover text.
    """
    parts = {key: key.split("/") for key in lb_keys}
    depth = max((len(segments) for segments in parts.values()), default=0)
    upper = list(range(depth - 1))
    for size in range(len(upper) + 1):
        # Nearest levels first: combinations of the reversed levels come out in that preference order.
        for levels in combinations(reversed(upper), size):
            chosen = [*sorted(levels), depth - 1]
            names = {key: LEVEL_SEPARATOR.join(segments[i] for i in chosen if i < len(segments))
                     for key, segments in parts.items()}
            if len(set(names.values())) == len(names):
                return names
    return {key: key for key in lb_keys}
