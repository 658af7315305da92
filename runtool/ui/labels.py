"""How the pages name laser boxes: as briefly as the current selection allows."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from runtool.models import LEVELS, Filters

__all__ = ["distinct_laser_box_names", "laser_box_names", "short_laser_box_names"]

LEVEL_SEPARATOR = " · "
"""Between the levels of a name that skips levels (``field_045 · LB_0012``): a ``/`` would read as a path."""


def laser_box_names(lb_keys: Sequence[str], filters: Filters) -> dict[str, str]:
    """Laser box labels for tables: the key below the selected levels (``t1/lb01`` under a field)."""
    depth = min(len(filters.prefix_parts()), len(LEVELS) - 1)
    return {key: "/".join(key.split("/")[depth:]) for key in lb_keys}


def short_laser_box_names(lb_keys: Sequence[str]) -> dict[str, str]:
    """Laser box labels for chart axes: the shortest key suffix that is unique among ``lb_keys``.

    Usually just the laser box id; ``t2/lb01`` only where two trailers have an ``lb01``.
    """
    parts = {key: key.split("/") for key in lb_keys}
    names: dict[str, str] = {}
    for key, segments in parts.items():
        for length in range(1, len(segments) + 1):
            suffix = segments[-length:]
            if sum(1 for other in parts.values() if other[-length:] == suffix) == 1:
                names[key] = "/".join(suffix)
                break
        else:
            names[key] = key
    return names


def distinct_laser_box_names(lb_keys: Sequence[str]) -> dict[str, str]:
    """Laser box labels for charts: the laser box id plus the fewest upper levels that tell the boxes apart.

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
