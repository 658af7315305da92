"""The visual language shared by every page: status colours, the coverage scale, series colours, CSS.

Colours are never the only carrier of meaning: every status colour comes with its words
(:class:`StatusStyle`), and coverage cells print their percentage next to the colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runtool.models import SyncStatus

__all__ = [
    "COVERAGE_AMBER",
    "COVERAGE_COLOUR_NAMES",
    "COVERAGE_GREEN",
    "COVERAGE_NONE",
    "COVERAGE_RED",
    "DETECTIONS_COLOUR",
    "EMPTY_CELL_COLOUR",
    "FRAMES_COLOUR",
    "LABELS_COLOUR",
    "LINK_COLOUR",
    "ML_FRAMES_COLOUR",
    "NO_SAMPLES",
    "RAW_BAGS_COLOUR",
    "STYLESHEET",
    "SYNC_STYLES",
    "TARGET_COLOUR",
    "TRACKING_COLOUR",
    "StatusStyle",
    "coverage_colour",
    "coverage_stops",
    "sync_style",
]


@dataclass(frozen=True)
class StatusStyle:
    """The words and the colour of one sync status."""

    label: str
    colour: str


SYNC_STYLES: dict[str, StatusStyle] = {
    "synced": StatusStyle("synced", "#2e7d32"),
    "not_downloaded": StatusStyle("not downloaded", "#ef6c00"),
    "not_uploaded": StatusStyle("not uploaded", "#f9a825"),
    "local_only": StatusStyle("local only", "#607d8b"),
    "mismatch": StatusStyle("mismatch", "#d32f2f"),
    "missing": StatusStyle("missing", "#8e0000"),
}
"""The six sync states of the ui guide, keyed by a stable name."""


NO_SAMPLES = StatusStyle("no samples yet", "#9e9e9e")
"""The ML side of a run nobody has labelled yet: not a problem, so grey and not counted as an issue."""


def sync_style(status: SyncStatus | str, role: Literal["raw", "ml"] = "raw") -> StatusStyle:
    """The style of a run's raw or ML sync status.

    Raw bags originate in the cloud, so a bag that exists only on disk is "local only". ML samples are
    produced locally by labelling and belong in the bucket, so ML samples missing from the cloud are
    "not uploaded" (amber: work to do) rather than merely local.
    """
    status = SyncStatus(status)
    if status is SyncStatus.MISSING and role == "ml":
        return NO_SAMPLES  # nobody has labelled the run yet: not a problem
    if status is SyncStatus.CLOUD_ONLY:
        return SYNC_STYLES["not_downloaded"]
    if status is SyncStatus.LOCAL_ONLY:
        return SYNC_STYLES["not_uploaded" if role == "ml" else "local_only"]
    return SYNC_STYLES[status.value]


LINK_COLOUR = "#1565c0"
"""Links, and what a link names (a run in the link, ringed in this colour on the charts)."""

# The diverging coverage scale: red at 0 %, amber at the under-labelled threshold, green at 100 %.
COVERAGE_RED = "#d32f2f"
COVERAGE_AMBER = "#ffb300"
COVERAGE_GREEN = "#2e7d32"
COVERAGE_NONE = "#9e9e9e"
"""Runs or days without raw bags have no coverage: drawn grey, never on the scale."""
EMPTY_CELL_COLOUR = "#f4f4f4"
"""Heatmap cells where a laser box recorded nothing."""
COVERAGE_COLOUR_NAMES: dict[str, str] = {
    COVERAGE_RED: "red", COVERAGE_AMBER: "amber", COVERAGE_GREEN: "green", COVERAGE_NONE: "grey",
}
"""What a legend calls the coverage scale's colours."""


def coverage_stops(threshold_pct: float) -> tuple[list[float], list[str]]:
    """Domain stops and colours of the coverage scale, for charting libraries (``[0, t, 100]``)."""
    return [0.0, float(threshold_pct), 100.0], [COVERAGE_RED, COVERAGE_AMBER, COVERAGE_GREEN]


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _mix(start: str, end: str, fraction: float) -> str:
    a, b = _rgb(start), _rgb(end)
    channels = (round(x + (y - x) * fraction) for x, y in zip(a, b, strict=True))
    return "#" + "".join(f"{c:02x}" for c in channels)


def coverage_colour(pct: float | None, threshold_pct: float) -> str:
    """The colour of a coverage value, interpolated linearly in RGB between the scale's stops."""
    if pct is None:
        return COVERAGE_NONE
    pct = min(100.0, max(0.0, pct))
    if pct < threshold_pct:
        return _mix(COVERAGE_RED, COVERAGE_AMBER, pct / threshold_pct)
    if threshold_pct >= 100.0:
        return COVERAGE_AMBER
    return _mix(COVERAGE_AMBER, COVERAGE_GREEN, (pct - threshold_pct) / (100.0 - threshold_pct))


# Series colours. Coverage charts: raw bags blue, labels orange, frames a lighter orange.
RAW_BAGS_COLOUR = "#1f77b4"
LABELS_COLOUR = "#ff7f0e"
ML_FRAMES_COLOUR = "#ffbb78"
# Perception plots (as the legacy): frames blue, detections green, tracking orange, targets dashed red.
FRAMES_COLOUR = "#1f77b4"
DETECTIONS_COLOUR = "#2ca02c"
TRACKING_COLOUR = "#ff7f0e"
TARGET_COLOUR = "#d62728"

STYLESHEET = """
<style>
.rt-page { font-family: var(--jp-ui-font-family, sans-serif); gap: 6px; }
.rt-header { align-items: center; border-bottom: 1px solid #ddd; padding-bottom: 4px; row-gap: 4px; }
/* On a narrow window the header wraps between its parts, never inside one: at 760 px "Download | manager",
   "times in | UTC" and "cache 2 min | old" each broke over two lines. */
.rt-header .rt-nav, .rt-header .rt-caption, .rt-header .rt-cache-age { white-space: nowrap; }
.rt-title { font-size: 18px; font-weight: 700; margin-right: 12px; }
/* Every link in the link colour, by one rule: listed class by class, the linked-run note's link was left black. */
.rt-page a { color: LINK_COLOUR; }
.rt-nav a { margin: 0 6px; text-decoration: none; }
.rt-nav .rt-nav-current { margin: 0 6px; font-weight: 700; color: #222; }
.rt-cache-age { color: #555; margin: 0 8px; }
.rt-caption { color: #555; font-size: 13px; }
.rt-kpis { flex-wrap: wrap; gap: 8px; }
.rt-kpi { border: 1px solid #ddd; border-radius: 6px; padding: 6px 14px; min-width: 150px; background: #fafafa; }
.rt-kpi-value { font-size: 26px; font-weight: 600; line-height: 32px; }
.rt-kpi-label { font-size: 13px; color: #333; }
.rt-kpi-caption { font-size: 11px; color: #777; }
.rt-section-title { font-size: 15px; font-weight: 600; margin-top: 8px; }
.rt-empty-state { padding: 18px; border: 1px dashed #bbb; border-radius: 6px; color: #444; font-size: 14px; }
table.rt-table { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
table.rt-table th { text-align: left; border-bottom: 2px solid #ccc; padding: 3px 8px; background: #f5f5f5; }
table.rt-table td { border-bottom: 1px solid #eee; padding: 3px 8px; vertical-align: top; }
table.rt-table td.rt-num, table.rt-table th.rt-num { text-align: right; font-variant-numeric: tabular-nums; }
.rt-badge { display: inline-block; padding: 0 6px; border-radius: 8px; color: #fff; font-size: 12px;
            white-space: nowrap; }
.rt-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
.rt-more { color: #777; font-size: 12px; }
.rt-message { align-items: stretch; border-left: 4px solid #999; padding: 2px 6px; margin: 2px 0; }
.rt-message-info { border-left-color: #1565c0; background: #e3f2fd; }
.rt-message-warning { border-left-color: #f9a825; background: #fff8e1; }
.rt-message-error { border-left-color: #d32f2f; background: #ffebee; }
.rt-message-details pre { font-size: 11px; white-space: pre-wrap; }
.rt-page-download-manager .widget-hbox { gap: 8px; }
.rt-run-bar { display: inline-block; width: 160px; height: 10px; background: #eee; border-radius: 3px;
              vertical-align: middle; }
.rt-run-bar div { height: 100%; background: #1565c0; border-radius: 3px; }
.rt-page .jupyter-widgets.rt-analysis-tabs > .lm-TabBar .lm-TabBar-tab { flex: 0 0 auto; }
.rt-status-card { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 200px; }
.rt-legend { display: flex; align-items: center; gap: 8px; font-size: 12px; color: #333; margin: 2px 0 14px 0; }
.rt-legend-title { font-weight: 600; }
.rt-legend-scale { position: relative; display: inline-block; width: 220px; height: 12px; margin-right: 12px; }
.rt-legend-bar { display: block; width: 100%; height: 100%; border-radius: 2px; }
.rt-legend-tick { position: absolute; top: 13px; transform: translateX(-50%); font-size: 10px; color: #555;
                  white-space: nowrap; }
.rt-swatch-empty { border: 1px solid #ccc; }
.rt-cal-scroll { overflow-x: auto; max-width: 100%; }
table.rt-cal { border-collapse: separate; border-spacing: 1px; font-size: 11px; line-height: 13px; }
table.rt-cal td { width: 10px; min-width: 10px; height: 13px; padding: 0; background: #f4f4f4; }
table.rt-cal td a { display: block; width: 100%; height: 100%; }
table.rt-cal td:hover { outline: 2px solid #222; }
table.rt-cal th { font-weight: 400; color: #444; padding: 0; white-space: nowrap; }
table.rt-cal th.rt-cal-month { text-align: left; border-left: 1px solid #999; padding-left: 2px; }
table.rt-cal th.rt-cal-day { position: relative; height: 14px; }
table.rt-cal th.rt-cal-day span { position: absolute; left: 0; top: 0; font-size: 10px; color: #666; }
table.rt-cal th.rt-cal-name { text-align: right; padding-right: 6px; }
table.rt-cal th.rt-cal-name a { text-decoration: none; }
table.rt-cal th.rt-cal-corner { text-align: right; padding-right: 6px; color: #777; vertical-align: bottom; }
.rt-csv a, a.rt-csv { font-size: 12px; }
/* The run links above the inventory grid keep one line, empty or not: appearing with the first selected row, they
   pushed the grid 28 px down under the mouse, and the next Ctrl-click landed on the row above (toggling it off). */
.rt-run-links { min-height: 28px; height: 28px; }
.rt-run-links .widget-html-content { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.rt-pager { align-items: center; gap: 8px; }
/* A dropdown is as wide as its widest choice: with the widgets' 20 px on the right, that choice ran into the arrow. */
.rt-page .widget-dropdown > select { padding-right: 28px; }
/* A value written on a chart (target, mean, median) keeps a white edge: it often sits on the plotted line. */
.rt-page .bqplot text.label { paint-order: stroke; stroke: #ffffff; stroke-width: 3px; stroke-linejoin: round; }
</style>
""".replace("LINK_COLOUR", LINK_COLOUR)
"""CSS for the ``rt-*`` classes, shown once per page in an HTML widget (Voila applies ``<style>`` there)."""
