"""The download manager's inventory table: one row per run, for the raw or the ML side, in an ipydatagrid.

:func:`inventory_rows` turns the run table into display rows (vectorised: 10,000 runs in well under
200 ms), :func:`filter_rows` applies a status filter, and :class:`InventoryGrid` shows them in a
sortable, filterable grid whose selected rows map back to run coordinates whatever the grid's own
sorting and filtering did to the row order. A click on a column header sorts by that column (the grid
itself would select every row, so the next operation would cover them all); a click on a start time opens
that run (the time is drawn as a link); a click anywhere else in a row selects it. The columns fit a 1280 px wide
window (a laptop's); a text longer than its column ends in "…".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from ipydatagrid import DataGrid, TextRenderer, VegaExpr

from runtool.models import SyncStatus
from runtool.services.inventory import COORD_COLUMNS
from runtool.ui.theme import LINK_COLOUR, NO_SAMPLES, SYNC_STYLES, StatusStyle, sync_style

__all__ = [
    "COLUMNS",
    "ISSUES_MEANING",
    "NO_SAMPLES",
    "STATUS_FILTERS",
    "Family",
    "InventoryGrid",
    "filter_rows",
    "inventory_rows",
]

Family = Literal["raw", "ml"]

STATUS_FILTERS: dict[Family, tuple[str, ...]] = {
    "raw": ("All", "Not downloaded", "Local only", "Issues"),
    "ml": ("All", "Not downloaded", "Not uploaded", "Issues"),
}
"""The status filter's choices per side: raw bags come from the cloud, ML samples are made locally."""


_FILTER_STATUSES: dict[Family, dict[str, tuple[str, ...]]] = {
    "raw": {
        "Not downloaded": (SyncStatus.CLOUD_ONLY.value,),
        "Local only": (SyncStatus.LOCAL_ONLY.value,),
    },
    "ml": {
        "Not downloaded": (SyncStatus.CLOUD_ONLY.value,),
        "Not uploaded": (SyncStatus.LOCAL_ONLY.value,),
    },
}
"""The statuses each status filter keeps; "Issues" keeps the runs whose Issues column lists something (the card
above the table counts the same runs)."""

ISSUES_MEANING: dict[Family, str] = {
    "raw": "Issues: of the raw bags (local copy differs, none in the bucket, too few labelled).",
    "ml": "Issues: of the ML samples (local copy differs, frames without labels, not uploaded).",
}
"""What the Issues column of each side lists (the other side's problems are on its own tab)."""

_STATUS_STYLES: dict[Family, dict[str, StatusStyle]] = {
    family: {status.value: sync_style(status, family) for status in SyncStatus} for family in ("raw", "ml")
}
STATUS_STYLES: tuple[StatusStyle, ...] = (*SYNC_STYLES.values(), NO_SAMPLES)
"""Every style a status cell can have, in the order the status counts list them."""

COLUMNS = (
    "Laser box",
    "Start (UTC)",
    "Status",
    "Cloud bags",
    "Local bags",
    "Cloud labels",
    "Local labels",
    "Cloud size",
    "Local size",
    "Issues",
)
"""The grid's columns; sizes are bytes (shown in KiB/MiB/GiB, sorted as numbers). The rows also hold ``Run``, the full
coordinate: the laser box column names it short, and the CSV has it whole."""
SIZE_COLUMNS = ("Cloud size", "Local size")
OPEN_COLUMN = "Start (UTC)"
"""Clicking a cell of this column opens the run: with the laser box beside it, the start time names the run."""
CHAR_PX = 7.2
"""About the width of a character of the grid's 12 px sans-serif font, to size text columns to their content."""


def inventory_rows(runs: pd.DataFrame, family: Family, lb_names: Mapping[str, str]) -> pd.DataFrame:
    """Display rows of ``runs`` (a :meth:`DataStateService.state_overview` table), newest first.

    Indexed by the run's coordinate path (also the ``Run`` column); ``sync`` keeps the status key for
    filtering, ``can_download`` and ``can_upload`` say whether the run has something to move that way. Bags and
    samples are shown for both sides (bags are raw, samples are labels); the sizes and the status are
    ``family``'s. ``lb_names`` shortens the laser box keys (:func:`runtool.ui.labels.distinct_laser_box_names`).
    """
    sync = runs[f"{family}_sync"].astype(str)
    cloud_bytes, local_bytes = ("raw_bytes", "local_raw_bytes") if family == "raw" else ("ml_bytes", "local_ml_bytes")
    paths = _paths(runs)
    rows = pd.DataFrame(
        {
            "Laser box": runs["lb_key"].astype(str).map(lb_names).to_numpy(),
            "Start (UTC)": runs["start_time"].dt.strftime("%Y-%m-%d %H:%M").to_numpy(),
            "Status": sync.map({k: v.label for k, v in _STATUS_STYLES[family].items()}).to_numpy(),
            "Cloud bags": runs["raw_bags"].to_numpy(),
            "Local bags": runs["local_bags"].to_numpy(),
            "Cloud labels": runs["ml_labels"].to_numpy(),
            "Local labels": runs["local_labels"].to_numpy(),
            "Cloud size": runs[cloud_bytes].to_numpy(),
            "Local size": runs[local_bytes].to_numpy(),
            "Issues": _issue_text(runs, sync, family),
            "Run": paths,
            "sync": sync.to_numpy(),
            "can_download": _fits(runs, sync, _SOURCES[family][0]),
            "can_upload": _fits(runs, sync, _SOURCES[family][1]),
        },
        index=pd.Index(paths, name="run"),
    )
    return rows.sort_values("Start (UTC)", ascending=False, kind="stable")


def _issue_text(runs: pd.DataFrame, sync: pd.Series, family: Family) -> np.ndarray:
    """The issues of the run's ``family`` side (:data:`ISSUES_MEANING`), and for a run only on this disk what that
    means (its status alone does not say)."""
    text = runs[f"{family}_issues"].astype(str).to_numpy()
    local_only = (sync == SyncStatus.LOCAL_ONLY.value).to_numpy()
    if family == "raw":
        note = "Only on this disk: " + runs["local_bags"].astype(str) + " bags, none in the raw bucket"
    else:
        note = ("Only on this disk: " + runs["local_labels"].astype(str) + " labels, "
                + runs["local_frames"].astype(str) + " frames, not uploaded yet")
    notes = note.to_numpy()
    joined = np.where(text == "", notes, notes + "; " + text)
    return np.where(local_only, joined, text)


_SOURCES: dict[Family, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "raw": (("raw_bags",), ("local_bags",)),
    "ml": (("ml_labels", "ml_frames"), ("local_labels", "local_frames")),
}
"""Where each side's download and upload sources are counted."""


def _fits(runs: pd.DataFrame, sync: pd.Series, source: tuple[str, ...]) -> np.ndarray:
    """Runs with something at the source and not already in sync."""
    has_source = np.zeros(len(runs), dtype=bool)
    for column in source:
        has_source |= runs[column].to_numpy() > 0
    return has_source & (sync.to_numpy() != SyncStatus.SYNCED.value)


def _paths(runs: pd.DataFrame) -> np.ndarray:
    columns = [runs[c].astype(str) for c in COORD_COLUMNS]
    joined = columns[0]
    for column in columns[1:]:
        joined = joined + "/" + column
    return joined.to_numpy()


def filter_rows(rows: pd.DataFrame, status_filter: str, family: Family = "raw") -> pd.DataFrame:
    """The rows a status filter of ``family``'s side keeps ("All" keeps every row)."""
    if status_filter == "All":
        return rows
    if status_filter == "Issues":
        return rows[(rows["Issues"] != "").to_numpy()]
    statuses = _FILTER_STATUSES[family].get(status_filter)
    if statuses is None:
        raise ValueError(f"Unknown status filter {status_filter!r}")
    return rows[rows["sync"].isin(statuses).to_numpy()]


def _status_colours() -> VegaExpr:
    """Cell background per status word, the ui guide's colours (the words stay in the cell)."""
    expression = "'#ffffff'"
    for style in STATUS_STYLES:
        expression = f"cell.value === '{style.label}' ? '{style.colour}' : {expression}"
    return VegaExpr(expression)


def _size_text() -> VegaExpr:
    """A byte count as :func:`runtool.formatting.format_bytes` writes it (``0 B``, ``40.8 KiB``, ``1.3 GiB``).

    The cell keeps the number, so the column sorts by size; only its text has a unit.
    """
    expression = "format(cell.value / 1099511627776, '.1f') + ' TiB'"
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        expression = (f"cell.value < {1024 ** (power + 1)} ? format(cell.value / {1024 ** power}, '.1f') + ' {unit}' "
                      f": {expression}")
    return VegaExpr(f"cell.value < 1024 ? cell.value + ' B' : {expression}")


class InventoryGrid:
    """A sortable, filterable ipydatagrid of inventory rows; selected rows are reported as run paths.

    A column header click sorts by that column (again: the other way) and leaves the selection as it was.
    """

    MAX_HEIGHT_PX = 420
    ROW_PX = 24
    CHROME_PX = 46
    """The column header (20 px), the horizontal scroll bar (16 px) and the grid's border and padding: with less,
    the last row of a short table hides under the scroll bar."""
    WIDTHS: ClassVar[dict[str, int]] = {
        "Laser box": 190, "Start (UTC)": 130, "Status": 120, "Cloud bags": 100, "Local bags": 95, "Cloud labels": 105,
        "Local labels": 105, "Cloud size": 95, "Local size": 95, "Issues": 360,
    }
    """Column widths before the rows are known; the text columns then fit their longest text (see :meth:`widths`)."""
    FITTED: ClassVar[dict[str, tuple[int, int]]] = {"Laser box": (120, 330), "Issues": (160, 720)}
    """Text columns sized to their longest text, within these bounds (px)."""
    FIT_PX = 1220
    """The grid's inner width in a 1280 px wide window, which the columns share: wider, the last column was cut at the
    grid's edge in the middle of a word, with no "…" to say so (and a 1280 × 800 laptop scrolled the grid sideways)."""
    HEADER_CLICK_S = 2.0
    """How long after a header click a selection of every row is taken as the grid's reaction to that click."""

    def __init__(self) -> None:
        self.rows = pd.DataFrame(columns=[*COLUMNS, "Run", "sync", "can_download", "can_upload"])
        self._grid: DataGrid | None = None
        self._on_select: list[Callable[[list[str]], None]] = []
        self._on_view: list[Callable[[], None]] = []
        self._on_open: list[Callable[[str], None]] = []
        self._sort: tuple[str, bool] | None = None
        self._header_clicked = float("-inf")
        self._kept: list[dict[str, Any]] = []

    @property
    def created(self) -> bool:
        """Whether the grid widget exists (until it is shown, its model and JavaScript are not sent to a browser)."""
        return self._grid is not None

    @property
    def grid(self) -> DataGrid:
        """The ipydatagrid, created at first use with the rows, sort and callbacks given so far."""
        if self._grid is None:
            self._grid = DataGrid(
                self.rows[list(COLUMNS)],
                selection_mode="row",
                header_visibility="column",
                base_row_size=self.ROW_PX,
                base_column_size=100,
                column_widths=self.widths(self.rows),
                renderers={
                    OPEN_COLUMN: TextRenderer(text_color=LINK_COLOUR),
                    "Status": TextRenderer(background_color=_status_colours(), text_color="#ffffff"),
                    **{name: TextRenderer(format=",d", horizontal_alignment="right") for name in COLUMNS[3:7]},
                    **{name: TextRenderer(text_value=_size_text(), horizontal_alignment="right")
                       for name in SIZE_COLUMNS},
                },
                layout={"height": self._height(), "width": "100%"},
            ).add_class("rt-inventory-grid")
            self._grid.observe(self._selection_changed, names="selections")
            self._grid.observe(lambda _change: [callback() for callback in self._on_view], names="_visible_rows")
            self._grid.on_cell_click(self._cell_clicked)
            if self._sort is not None:
                self._apply_sort()
        return self._grid

    def _height(self) -> str:
        return f"{min(self.MAX_HEIGHT_PX, self.CHROME_PX + self.ROW_PX * max(1, len(self.rows)))}px"

    @classmethod
    def widths(cls, rows: pd.DataFrame) -> dict[str, int]:
        """Column widths for ``rows``: the text columns as wide as their longest text (or header), within bounds, and
        together no wider than what the others leave of :attr:`FIT_PX`: the Issues column gives room first, down to
        its least width, then the laser box (a longer text ends in "…").

        A fixed width left room for a laser box name only as long as ``field · laser box``.
        """
        widths = dict(cls.WIDTHS)
        for column, (low, high) in cls.FITTED.items():
            if column in rows and len(rows):
                longest = max(len(column), int(rows[column].astype(str).str.len().max()))
                widths[column] = int(min(high, max(low, longest * CHAR_PX + 24)))
        room = cls.FIT_PX - sum(width for column, width in widths.items() if column not in cls.FITTED)
        widths["Laser box"] = min(widths["Laser box"], room - cls.FITTED["Issues"][0])
        widths["Issues"] = min(widths["Issues"], room - widths["Laser box"])
        return widths

    def show(self, rows: pd.DataFrame) -> None:
        """Show ``rows`` (from :func:`inventory_rows`); the selection is cleared, a header sort stays."""
        self.rows = rows
        if self._grid is None:
            return  # the grid is made with these rows when it is first used
        self._grid.selections = []
        self._grid.data = rows[list(COLUMNS)]
        self._grid.column_widths = self.widths(rows)
        if self._sort is not None:
            self._apply_sort()
        self._grid.layout.height = self._height()

    def on_select(self, callback: Callable[[list[str]], None]) -> None:
        self._on_select.append(callback)

    def on_open(self, callback: Callable[[str], None]) -> None:
        """Call ``callback`` with a run's path when its start time is clicked."""
        self._on_open.append(callback)

    def on_view_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the grid's own sorting or filtering changes the rows it shows."""
        self._on_view.append(callback)

    def _visible(self) -> Sequence[int]:
        """Data row positions in the order the grid shows them (after its own sorting and filtering).

        ipydatagrid exposes that order only as this synced trait.
        """
        return (self._grid._visible_rows if self._grid is not None else None) or range(len(self.rows))

    def selected_runs(self) -> list[str]:
        """Paths of the selected runs, in the order the grid shows them."""
        visible = self._visible()
        chosen: list[int] = []
        for rect in self._grid.selections if self._grid is not None else []:
            for position in range(int(rect["r1"]), int(rect["r2"]) + 1):
                if 0 <= position < len(visible) and visible[position] < len(self.rows):
                    chosen.append(int(visible[position]))
        paths = self.rows.index.to_numpy()
        return list(dict.fromkeys(str(paths[i]) for i in chosen))

    def select_all(self) -> None:
        """Select every row the grid shows."""
        self._header_clicked = float("-inf")  # asked for: not the grid's reaction to a header click
        rows = len(self._visible())
        self.grid.selections = [{"r1": 0, "c1": 0, "r2": rows - 1, "c2": len(COLUMNS) - 1}] if rows else []

    def select_runs(self, paths: Sequence[str]) -> None:
        """Select the rows of ``paths`` (as a user would by clicking them)."""
        shown = {position: row for row, position in enumerate(self._visible())}
        rows = sorted(shown[p] for p in self.rows.index.get_indexer(list(paths)) if p in shown)
        self.grid.selections = [{"r1": r, "c1": 0, "r2": r, "c2": len(COLUMNS) - 1} for r in rows]

    def clear(self) -> None:
        if self._grid is not None:
            self._grid.selections = []

    @property
    def sort(self) -> tuple[str, bool] | None:
        """The column the rows are sorted by and whether descending, or None for the rows' own order."""
        return self._sort

    def sort_by(self, column: str) -> None:
        """Sort by ``column``: ascending first, descending when it already sorts ascending by it."""
        self._sort = (column, self._sort == (column, False))
        if self._grid is not None:
            self._apply_sort()

    def _apply_sort(self) -> None:
        assert self._sort is not None
        column, descending = self._sort
        self.grid.transform([{"type": "sort", "column": column, "desc": descending}])

    def _cell_clicked(self, cell: Mapping[str, Any]) -> None:
        if cell.get("region") == "body" and cell.get("column") == OPEN_COLUMN:
            path = self._clicked_run(cell)
            if path is not None:
                for callback in self._on_open:
                    callback(path)
            return
        if cell.get("region") != "column-header" or cell.get("column") not in COLUMNS:
            return
        # The grid selects the whole column on this click, which in row mode is every row: undo that below.
        self._header_clicked = time.monotonic()
        self.sort_by(str(cell["column"]))

    def _clicked_run(self, cell: Mapping[str, Any]) -> str | None:
        """The path of the run in the clicked body cell's row (``row`` is its position as shown, after sorting)."""
        visible = self._visible()
        row = cell.get("row")
        if not isinstance(row, int) or not 0 <= row < len(visible) or visible[row] >= len(self.rows):
            return None
        return str(self.rows.index[int(visible[row])])

    def _every_row(self, selections: Sequence[Mapping[str, Any]]) -> bool:
        last = len(self.rows) - 1
        return last > 0 and any(
            (rect.get("r1") or 0) <= 0 and (rect.get("r2") is None or rect["r2"] >= last) for rect in selections
        )

    def _selection_changed(self, change: Mapping[str, Any]) -> None:
        recent = time.monotonic() - self._header_clicked < self.HEADER_CLICK_S
        if recent and self._every_row(change["new"]) and not self._every_row(self._kept):
            self._header_clicked = float("-inf")
            self.grid.selections = list(self._kept)
            return
        self._kept = list(change["new"])
        runs = self.selected_runs()
        for callback in self._on_select:
            callback(runs)
