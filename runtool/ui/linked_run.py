"""The run a link names (its ``timestamp``).

A link that skips levels (``?lbid=LB_0001&timestamp=…``, or ``?lbid=LB_0001`` without a run) is completed on
every page when one run (one laser box, field, …) of the inventory matches it; otherwise the page says why its run
is not shown, or lists the places several of the same name match (:func:`complete_link`, called by
:class:`~runtool.ui.page.Page`). The per-run page, which needs every level, says which levels a link
without a run gave and which it skipped (:func:`skipped_levels`). On the pages that show laser boxes (coverage and
fleet KPIs), a link to a run selects the run's laser box; the page marks the run there, and a note at the top names
it, says where it is and links to it on the per-run page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import ipywidgets as widgets
import pyarrow.compute as pc

from runtool.models import LEVELS, Filters, RunCoordinate, parse_timestamp
from runtool.services import ServiceContainer
from runtool.services.run_search import canonical, canonical_timestamps
from runtool.ui.components import LEVEL_LABELS, Message
from runtool.ui.formatting import format_count, format_time
from runtool.ui.query import run_url
from runtool.ui.tables import Cell
from runtool.ui.theme import LINK_COLOUR, StatusStyle

__all__ = ["LinkedRunNote", "complete_link", "level_words", "linked_run", "marked", "skipped_levels"]

IN_THE_LINK = StatusStyle("in the link", LINK_COLOUR)
_PARTS = RunCoordinate.PARTS


def _words(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def level_words(levels: Sequence[str]) -> str:
    """Levels (``cid``, …) as a sentence names them: ``client, region, field and TW``."""
    return _words([LEVEL_LABELS[level] if level == "twid" else LEVEL_LABELS[level].lower() for level in levels])


def skipped_levels(filters: Filters, source: str = "link") -> str:
    """What a ``source`` (the link, or the selection) that skips levels above one it sets names and lacks, as a
    sentence to put before what to pick (``?cid=c1&lbid=LB_0001``: "The link names client c1 and laser box LB_0001
    but not its region, field and TW. "); "" when it skips none."""
    given = [level for level in LEVELS if getattr(filters, level) is not None]
    skipped = [level for level in LEVELS[:LEVELS.index(given[-1])] if getattr(filters, level) is None] if given else []
    if not skipped:
        return ""
    named = _words([f"{level_words([level])} {getattr(filters, level)}" for level in given])
    return f"The {source} names {named} but not its {level_words(skipped)}. "


CANDIDATES_SHOWN = 8
"""A link's ambiguous levels list at most this many of the places they match."""


def complete_link(services: ServiceContainer | None, filters: Filters) -> tuple[Filters, Message | None]:
    """The selection to show for a link whose ``filters`` skip levels above the deepest part they name
    (``?lbid=LB_0001``, ``?lbid=LB_0001&timestamp=…``): those levels filled in when one place of the inventory
    matches (one laser box of that name, one run at that time). Else ``filters`` and what the page says: for a run,
    an error saying why it is not shown; for a level set several places match, a warning that lists them."""
    given = [part for part in _PARTS if getattr(filters, part) is not None]
    depth = _PARTS.index(given[-1]) + 1 if given else 0
    skipped = [level for level in LEVELS[:depth] if getattr(filters, level) is None]
    if not skipped:
        return filters, None
    places = _places(services, filters, depth)
    if len(places) == 1:
        return filters.replace(**dict(zip(_PARTS[:depth], places[0], strict=True))), None
    if filters.timestamp is not None:
        found = f"{format_count(len(places))} runs match it" if places else "no run of the inventory matches it"
        return filters, Message("error", (
            f"The link names a run started {format_time(parse_timestamp(filters.timestamp))} but not its "
            f"{level_words(skipped)}, and {found}, so the run is not shown. Type its laser box and time in the run "
            "search box above to find it."
        ))
    if not places:
        return filters, None
    deepest = LEVEL_LABELS[given[-1]] if given[-1] == "twid" else LEVEL_LABELS[given[-1]].lower()
    plural = {"TW": "TWs", "laser box": "laser boxes"}.get(deepest, f"{deepest}s")
    shown = ["/".join(place) for place in places[:CANDIDATES_SHOWN]]
    if len(places) > CANDIDATES_SHOWN:
        shown.append(f"{format_count(len(places) - CANDIDATES_SHOWN)} more")
    named = _words([f"{level_words([level])} {getattr(filters, level)}" for level in given])
    return filters, Message("warning", (
        f"The link names {named} but not its {level_words(skipped)}, and {format_count(len(places))} {plural} are "
        f"called {getattr(filters, given[-1])}: {_words(shown)}. Pick one in the filters above, or add its levels "
        "to the link."
    ))


def _places(services: ServiceContainer | None, filters: Filters, depth: int) -> list[tuple[str, ...]]:
    """The distinct places (their first ``depth`` coordinate parts) of the inventory's runs that match every part
    ``filters`` set, sorted; a timestamp matches in either spelling, as the run search's does."""
    if services is None or not services.inventory.has_data:
        return []
    runs = services.data_state.all_runs()
    for level in LEVELS:
        if getattr(filters, level) is not None:
            runs = runs[runs[level].astype(str) == getattr(filters, level)]
    if filters.timestamp is not None:
        same_time = pc.equal(canonical_timestamps(runs["timestamp"]), canonical(filters.timestamp))
        runs = runs[same_time.to_numpy(zero_copy_only=False)]
    return sorted(set(runs[list(_PARTS[:depth])].astype(str).itertuples(index=False, name=None)))


def linked_run(filters: Filters) -> RunCoordinate | None:
    """The run a selection names (every level and a timestamp set), else None."""
    if filters.timestamp is None or any(getattr(filters, level) is None for level in LEVELS):
        return None
    return RunCoordinate.from_filters(filters)


def marked(cell: Cell) -> Cell:
    """A table cell of the linked run's row, with a badge saying so."""
    return Cell(f'{cell.html} <span class="rt-badge rt-linked-badge" style="background:{LINK_COLOUR}">'
                f"{html.escape(IN_THE_LINK.label)}</span>")


class LinkedRunNote:
    """One line at the top of the page: which run the link names, where the page shows it, and a link to open it."""

    def __init__(self) -> None:
        self.widget = widgets.HTML().add_class("rt-linked-run")

    def show(self, run: RunCoordinate | None, where: str) -> None:
        """Name ``run`` (None: no line) and say ``where`` it is ("ringed in the chart…", a sentence's end)."""
        if run is None:
            self.widget.value = ""
            return
        name = html.escape(f"{run.lbid} · {format_time(run.start_time)}")
        self.widget.value = (
            f'The link names run <b title="{html.escape(run.to_path_str(), quote=True)}">{name}</b>: '
            f'{html.escape(where)}. <a class="rt-linked-open" href="{html.escape(run_url(run), quote=True)}" '
            'target="_self">Open it on the per-run page</a>.'
        )

    @property
    def text(self) -> str:
        """The line as text (tags dropped)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.widget.value))
