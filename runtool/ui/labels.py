"""How the pages name laser boxes: as briefly as the current selection allows."""

from __future__ import annotations

from collections.abc import Sequence

from runtool.models import LEVELS, Filters

__all__ = ["laser_box_names", "short_laser_box_names"]


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
