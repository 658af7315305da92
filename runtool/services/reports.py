"""Per-run reports: bring a run up to date, execute ``runtool/notebooks/run_report.ipynb`` with papermill, write HTML.

:class:`ReportService` brings the run up to date through the run pipeline
(:class:`~runtool.services.pipeline.RunPipeline`: download → extract → analyse as needed), then executes the
report notebook in a fresh kernel with the run's coordinate and a config file as parameters, and converts
the executed notebook to HTML without code. The ``.ipynb`` (with the injected parameters, for whoever wants
to see how a number was made) and the ``.html`` (for everyone else) land side by side.

The notebook stays thin: it calls :meth:`RunReport.load` and displays the HTML sections and the figures of
:mod:`runtool.analysis.figures`, so everything a report shows is testable here without a kernel.

Offline reading is a requirement (design.md, "Reports"): figures are embedded PNGs, tables are plain
HTML, and the nbconvert template is trimmed of the scripts it would load from a CDN (require.js,
MathJax, Mermaid, the widget manager), none of which a static report needs.

papermill, nbformat and nbconvert are imported where they are used: the report kernel imports this module
for :class:`RunReport` and never needs them, and nbformat alone takes ~1.7 s to import (its JSON-schema
format checkers compile a grammar), a sixth of a whole report.
"""

from __future__ import annotations

import glob
import html
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runtool.analysis.perception import STREAMS, no_stream_text
from runtool.config import RuntoolConfig, load_config
from runtool.errors import ReadOnlyError, RuntoolError
from runtool.files import write_atomic
from runtool.formatting import format_bytes, format_count
from runtool.models import CoordinateError, CoverageSettings, Filters, RunCoordinate, RunState
from runtool.notebooks import REPORT_NOTEBOOK
from runtool.services.analytics import AnalyticsService, RunAnalysis
from runtool.services.data_state import DataStateService
from runtool.services.inventory import CloudInventoryService
from runtool.services.local_state import LocalStateService
from runtool.storage import make_client, processed_dir

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from runtool.services.pipeline import PipelineProgress, RunPipeline

__all__ = [
    "REPORT_DIR",
    "REPORT_NOTEBOOK",
    "ReportCancelled",
    "ReportError",
    "ReportFailure",
    "ReportFile",
    "ReportProgress",
    "ReportResult",
    "ReportService",
    "ReportStage",
    "RunReport",
    "find_report",
    "format_kpi",
    "list_reports",
    "report_stem",
]

REPORT_DIR = "report"
"""The default output folder, inside the run's processed folder: a re-extraction replaces that folder and
so drops reports that no longer match the data."""

ReportStage = Literal["check", "download", "extract", "analyze", "execute", "convert", "write", "done"]
"""The steps of one report, in order; ``download``, ``extract`` and ``analyze`` run only when needed."""

# The lab template minus everything it loads from a CDN; its CSS is inlined, so the page keeps its look.
_TEMPLATE_NAME = "runtool_report.html.j2"
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


class ReportError(RuntoolError):
    """A report could not be rendered; the message names the run, the step and the cause.

    ``stage`` is the step that failed; for a failing notebook cell, ``cell`` is its execution count and
    ``ename``/``evalue`` the exception raised in the kernel.
    """

    def __init__(
        self,
        message: str,
        coordinate: RunCoordinate | None = None,
        stage: ReportStage | None = None,
        cell: int | None = None,
        ename: str | None = None,
        evalue: str | None = None,
    ) -> None:
        super().__init__(message)
        self.coordinate = coordinate
        self.stage = stage
        self.cell = cell
        self.ename = ename
        self.evalue = evalue


class ReportCancelled(ReportError):
    """A report was cancelled: no file of it was written (the steps of the run pipeline it completed are kept)."""


@dataclass(frozen=True)
class ReportProgress:
    """One step of a report; ``run_index`` of ``runs_total`` when several runs are rendered."""

    coordinate: RunCoordinate
    stage: ReportStage
    message: str
    run_index: int = 1
    runs_total: int = 1


@dataclass(frozen=True)
class ReportResult:
    """A rendered report: where its two files are, how long it took and which pipeline steps it ran."""

    coordinate: RunCoordinate
    ipynb: Path
    html: Path
    seconds: float
    steps: tuple[ReportStage, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"coordinate": self.coordinate.to_path_str(), "ipynb": str(self.ipynb), "html": str(self.html),
                "seconds": round(self.seconds, 3), "steps": list(self.steps)}


@dataclass(frozen=True)
class ReportFailure:
    """A run of :meth:`ReportService.render_many` whose report failed, and why."""

    coordinate: RunCoordinate
    error: str
    stage: ReportStage | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"coordinate": self.coordinate.to_path_str(), "error": self.error, "stage": self.stage}


def report_stem(coord: RunCoordinate) -> str:
    """``<cid>_<regionid>_<fieldid>_<twid>_<lbid>_<timestamp>`` with ``:`` as ``-`` (valid on every disk)."""
    return "_".join(coord.to_path_tuple()).replace(":", "-")


@dataclass(frozen=True)
class ReportFile:
    """A rendered report page on disk, in its run's report folder under the processed root."""

    coordinate: RunCoordinate
    path: Path
    relative: str
    """``<cid>/<regionid>/<fieldid>/<twid>/<lbid>/<timestamp>/report/<name>.html`` (``/``-separated): the
    report's path under the processed root, and under ``runtool/reports/`` on a served app."""
    modified: datetime
    """When the file was last written (UTC): when the report was rendered."""
    size: int


def find_report(processed_root: Path, relative: str) -> Path | None:
    """The report page at ``relative`` (as :attr:`ReportFile.relative`) under ``processed_root``, or None.

    None unless ``relative`` names a visible ``.html`` file in a run's ``report`` folder, by a valid run
    coordinate, with no empty, ``.`` or ``..`` part, no backslash or NUL, and the file, symlinks followed, a
    regular file inside ``processed_root``. Untrusted input (a URL path) is safe to pass.
    """
    if not relative or "\\" in relative or "\0" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if len(parts) != 8 or parts[6] != REPORT_DIR or any(part in ("", ".", "..") for part in parts):
        return None
    name = parts[7]
    if name.startswith(".") or not name.endswith(".html"):
        return None
    try:
        RunCoordinate(*parts[:6])
    except CoordinateError:
        return None
    try:
        root = processed_root.resolve()
        real = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    if not real.is_relative_to(root) or real.suffix != ".html" or not real.is_file():
        return None
    return real


def list_reports(processed_root: Path, selection: RunCoordinate | Filters | None = None) -> list[ReportFile]:
    """The report pages under ``processed_root`` of one run or of a selection (None: every run), newest first.

    A report page is a ``.html`` file in a run's ``report`` folder (:data:`REPORT_DIR`) that
    :func:`find_report` accepts; the listing reads only the folders the selection can match.
    """
    filters = selection.to_filters() if isinstance(selection, RunCoordinate) else selection or Filters()
    pattern = [glob.escape(getattr(filters, part)) if getattr(filters, part) else "*" for part in RunCoordinate.PARTS]
    found: list[ReportFile] = []
    for candidate in processed_root.glob("/".join((*pattern, REPORT_DIR, "*.html"))):
        relative = candidate.relative_to(processed_root).as_posix()
        path = find_report(processed_root, relative)
        if path is None:
            continue
        try:
            stat = path.stat()
        except OSError:
            continue  # removed since the listing
        found.append(ReportFile(RunCoordinate(*relative.split("/")[:6]), candidate, relative,
                                datetime.fromtimestamp(stat.st_mtime, UTC), stat.st_size))
    found.sort(key=lambda report: (report.modified, report.relative), reverse=True)
    return found


# -- what the notebook shows ----------------------------------------------------------------------

_STREAM_COLUMNS = (("frames", "Frames"), ("detections", "Detections"), ("tracking", "Tracking"))
_STREAM_ROWS = (
    ("messages", "Messages"),
    ("median_fps", "Median rate (FPS over 1 s windows)"),
    ("p5_fps", "5th percentile rate (FPS)"),
    ("share_below_target", "Time below the FPS target"),
    ("dropped_frames", "Dropped frames (frames: gap estimate; others: frames without a message)"),
)
_LATENCY_COLUMNS = (("detection_latency", "Detections"), ("tracking_latency", "Tracking"))
_LATENCY_PREFIX = {"detections": "detection_latency", "tracking": "tracking_latency"}
_LATENCY_ROWS = (("mean_ms", "Mean"), ("p50_ms", "Median (p50)"), ("p95_ms", "p95"), ("p99_ms", "p99"))
_RUN_ROWS = (
    ("run_duration_s", "Recorded duration (s)"),
    ("failed_bags", "Failed bags"),
    ("fps_target", "FPS target"),
    ("mean_detections_per_frame", "Detections per message"),
    ("avg_detection_confidence", "Mean detection confidence"),
    ("mean_tracks_per_frame", "Tracks per message"),
    ("avg_track_confidence", "Mean track confidence"),
    ("total_tracks", "Tracks"),
    ("tracks_per_minute", "Tracks per minute"),
    ("avg_track_lifetime", "Mean track span (frames)"),
    ("mean_track_density", "Mean track density"),
)
_COUNT_KPIS = ("messages", "dropped_frames", "failed_bags", "total_tracks")
_THREE_DECIMALS = ("confidence", "density")


def format_kpi(name: str, value: float | int | None) -> str:
    """How the report writes KPI ``name``: counts with separators, shares as %, confidences with 3 decimals."""
    if value is None:
        return "–"
    if name.endswith(_COUNT_KPIS):
        return format_count(value)
    if name.endswith("share_below_target"):
        return f"{100 * value:.1f} %"
    if name == "fps_target":
        return f"{value:g}"
    if name.endswith(_THREE_DECIMALS):
        return f"{value:.3f}"
    if name.startswith("mean_") and name.endswith("_per_frame"):
        return f"{value:,.2f}"
    return f"{value:,.1f}"


@dataclass(frozen=True)
class RunReport:
    """What one report shows: the run's state, its analysis, and the HTML sections built from them."""

    coordinate: RunCoordinate
    state: RunState
    analysis: RunAnalysis
    generated_at: datetime

    @classmethod
    def load(cls, coordinate: str, config_path: str = "") -> RunReport:
        """The report of the run at ``coordinate`` (path form), as the notebook's parameters give it.

        With ``config_path`` the settings come from that file alone: it is the complete configuration
        :class:`ReportService` wrote for the kernel, and environment variables (whose relative paths
        would resolve against the kernel's working directory) must not change it. Without it, the
        usual file + environment configuration applies, as for a notebook opened by hand.
        """
        if not coordinate:
            raise ReportError("No run given: set `coordinate` in the parameters cell (cid/regionid/fieldid/"
                              "twid/lbid/timestamp) or render the report with `runtool report COORD`.")
        config = load_config(Path(config_path), environ={}) if config_path else load_config()
        # The kernel reads the run's state (the inventory cache and the local roots) and its analysis; it builds
        # just those services here, as the container would, so this module never imports the container.
        local = LocalStateService(config)
        inventory = CloudInventoryService(config, partial(make_client, config.gcp_project, config.emulator_host),
                                          read_only=config.read_only)
        settings = CoverageSettings(config.expected_samples_per_bag, config.under_labelled_pct)
        analytics = AnalyticsService(config, local, read_only=config.read_only)
        return cls.of_run(RunCoordinate.parse(coordinate), DataStateService(inventory, local, settings), analytics)

    @classmethod
    def of_run(cls, coord: RunCoordinate, data_state: DataStateService, analytics: AnalyticsService) -> RunReport:
        """The report of ``coord`` from its state and its analysis (computed now unless cached)."""
        from runtool.services.pipeline import PipelineError, check_has_bags

        state = data_state.get_complete_run_state(coord)
        try:
            check_has_bags(state, analytics.config)
        except PipelineError as exc:
            raise ReportError(str(exc), coord, exc.step) from exc
        return cls(coord, state, analytics.analyze_run(coord), datetime.now(UTC))

    def header_html(self) -> str:
        """Title, start time and generation time, then the run's cloud, local and extraction state."""
        coord, state, analysis = self.coordinate, self.state, self.analysis
        raw = state.cloud_raw
        ml = state.cloud_ml
        local = state.local_raw
        rows = [
            ("Cloud raw bags", f"{format_count(raw.bag_count)} bags, {format_bytes(raw.total_size)}"
             if raw.exists else "not in the raw bucket inventory"),
            ("Cloud ML samples", f"{format_count(ml.frame_count)} frames, {format_count(ml.label_count)} labels"
             if ml.exists else "none"),
            ("Local raw bags", f"{format_count(local.bag_count)} bags, {format_bytes(local.total_size)} "
             f"({state.raw_sync.label})" if local.exists else "not downloaded"),
            ("Extraction", "complete" if state.extraction.extracted
             else "missing " + ", ".join(state.extraction.missing)),
            ("Analysis", f"{analysis.analysed_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
             + (" (cached)" if analysis.from_cache else "")),
        ]
        issues = "".join(f"<li>{html.escape(issue)}</li>" for issue in state.issues)
        return (
            f"<h1>Run report</h1>\n<p class=\"rt-coordinate\"><code>{html.escape(coord.to_path_str())}</code></p>\n"
            f"<p>Run start: <b>{coord.start_time:%Y-%m-%d %H:%M:%S} UTC</b> · "
            f"Report generated: {self.generated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC</p>\n"
            "<h2>Run state</h2>\n"
            + _table(("", "State"), [(html.escape(k), html.escape(v)) for k, v in rows], "rt-state")
            + (f"\n<p>Issues:</p>\n<ul class=\"rt-issues\">{issues}</ul>" if issues else "")
        )

    def kpi_html(self) -> str:
        """Three tables: per-stream rates, latency percentiles, and run-level figures.

        Every KPI cell carries ``data-kpi="<name>"``, so the value shown can be checked against
        :attr:`RunAnalysis.kpis`; KPIs none of the tables name are listed at the end, never dropped.
        """
        kpis = self.analysis.kpis
        target = kpis.get("fps_target")
        shown: set[str] = set()

        # A stream without messages has unknown figures, said as such (as on the page), never "–", 0 or 100 %.
        absent = {prefix: no_stream_text(stream) for stream in STREAMS
                  for prefix in (stream, _LATENCY_PREFIX.get(stream)) if prefix and not kpis.get(f"{stream}_messages")}

        def cell(name: str) -> str:
            shown.add(name)
            prefix = next((p for p in absent if name.startswith(f"{p}_") and name != f"{p}_messages"), None)
            text = absent[prefix] if prefix else format_kpi(name, kpis.get(name))
            return f'<td data-kpi="{html.escape(name)}">{html.escape(text)}</td>'

        def label(key: str, text: str) -> str:
            if key == "share_below_target" and target is not None:
                text = f"Time below {target:g} FPS"
            return html.escape(text)

        streams = _table(
            ("", *(title for _, title in _STREAM_COLUMNS)),
            [(label(key, text), *(cell(f"{stream}_{key}") for stream, _ in _STREAM_COLUMNS))
             for key, text in _STREAM_ROWS],
            "rt-kpi-streams", raw_cells=True,
        )
        latency = _table(
            ("Latency (ms)", *(title for _, title in _LATENCY_COLUMNS)),
            [(html.escape(text), *(cell(f"{prefix}_{key}") for prefix, _ in _LATENCY_COLUMNS))
             for key, text in _LATENCY_ROWS],
            "rt-kpi-latency", raw_cells=True,
        )
        run_rows = [(html.escape(text), cell(key)) for key, text in _RUN_ROWS]
        run_rows += [(html.escape(key), cell(key)) for key in kpis if key not in shown]
        run = _table(("Run", ""), run_rows, "rt-kpi-run", raw_cells=True)
        return f"<h2>Key figures</h2>\n{streams}\n{latency}\n{run}"

    def failed_bags_html(self) -> str:
        """The bags the extractor could not read, with their errors (or a sentence saying there are none)."""
        failed = self.analysis.failed_bags
        if not failed:
            return "<h2>Bags</h2>\n<p>Every bag was extracted.</p>"
        rows = [(html.escape(bag.name), html.escape(bag.error or "no error recorded")) for bag in failed]
        noun = "bag" if len(failed) == 1 else "bags"
        return (f"<h2>Bags</h2>\n<p class=\"rt-failed\"><b>{len(failed)} {noun} could not be read</b>; "
                "the figures and key figures cover the other bags only.</p>\n"
                + _table(("Bag", "Error"), rows, "rt-failed-bags"))


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]], css_class: str, raw_cells: bool = False) -> str:
    """An HTML table; ``rows`` hold escaped text, or whole ``<td>`` elements when ``raw_cells``."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in header)
    body = []
    for first, *rest in rows:
        cells = "".join(rest) if raw_cells else "".join(f"<td>{text}</td>" for text in rest)
        body.append(f"<tr><th>{first}</th>{cells}</tr>")
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# -- rendering ------------------------------------------------------------------------------------


class ReportService:
    """Renders per-run reports, running whatever download, extraction and analysis a run still needs."""

    def __init__(
        self,
        config: RuntoolConfig,
        data_state: DataStateService,
        pipeline: RunPipeline,
        read_only: bool = False,
        notebook: Path = REPORT_NOTEBOOK,
        kernel_name: str = "python3",
        cell_timeout_s: int = 600,
    ) -> None:
        self.config = config
        self.data_state = data_state
        self.pipeline = pipeline
        self.read_only = read_only
        self.notebook = notebook
        self.kernel_name = kernel_name
        self.cell_timeout_s = cell_timeout_s

    def default_dir(self, coord: RunCoordinate) -> Path:
        """``<processed_root>/<coord>/report``."""
        return processed_dir(self.config.processed_root, coord) / REPORT_DIR

    def existing(self, coord: RunCoordinate) -> Path | None:
        """The run's report HTML in :meth:`default_dir`, if one was rendered there (read-only services too)."""
        path = self.default_dir(coord) / f"{report_stem(coord)}.html"
        return path if path.is_file() else None

    def listing(self, selection: RunCoordinate | Filters | None = None) -> list[ReportFile]:
        """The report pages of a run or a selection in the processed folder, newest first (read-only services
        too); see :func:`list_reports`."""
        return list_reports(self.config.processed_root, selection)

    def render(
        self,
        coord: RunCoordinate,
        out_dir: Path | None = None,
        progress: Callable[[ReportProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ReportResult:
        """Bring the run up to date, execute the report notebook and write ``<stem>.ipynb`` and ``<stem>.html``.

        The files go to ``out_dir`` (default :meth:`default_dir`), each written to a temporary name and
        renamed, so a file at its final name is always a complete report. ``cancel`` stops the report at the run
        pipeline's next check, before the notebook's next cell, or before the files are written.

        Raises:
            ReadOnlyError: the services are read-only (a report writes files, and may download and extract).
            ReportCancelled: ``cancel`` was set; no file of the report was written.
            ReportError: the run is unknown or has no raw bags, a step failed (a download, the extraction,
                the analysis), or a notebook cell raised; the message names the run, the step and the cause.
        """
        return self._render(coord, out_dir, _Notifier(progress, coord), cancel)

    def render_many(
        self,
        selection: Filters | Iterable[RunCoordinate],
        out_dir: Path | None = None,
        progress: Callable[[ReportProgress], None] | None = None,
    ) -> list[ReportResult | ReportFailure]:
        """One report per selected run (a :class:`Filters` selection or explicit coordinates), in order.

        A run whose report fails is recorded as a :class:`ReportFailure` and the next run goes ahead.
        With ``out_dir`` every report goes there (file names are unique per run); without, each goes to
        its run's :meth:`default_dir`.

        Raises:
            ReadOnlyError: the services are read-only.
        """
        self._refuse_read_only()
        if isinstance(selection, Filters):
            coords = self.data_state.generate_coordinates_from_filters(selection)
        else:
            coords = list(selection)
        outcomes: list[ReportResult | ReportFailure] = []
        for index, coord in enumerate(coords, start=1):
            notifier = _Notifier(progress, coord, index, len(coords))
            try:
                outcomes.append(self._render(coord, out_dir, notifier))
            except ReportError as exc:
                outcomes.append(ReportFailure(coord, str(exc), exc.stage))
        return outcomes

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise ReadOnlyError("Rendering reports is not allowed in read-only mode.")

    def _render(
        self, coord: RunCoordinate, out_dir: Path | None, notify: _Notifier, cancel: threading.Event | None = None
    ) -> ReportResult:
        self._refuse_read_only()

        def check_cancel(**_cell: object) -> None:
            if cancel is not None and cancel.is_set():
                raise _cancelled(coord)

        started = time.perf_counter()
        steps = self._bring_up_to_date(coord, notify, cancel)
        target = out_dir if out_dir is not None else self.default_dir(coord)
        with tempfile.TemporaryDirectory(prefix="runtool-report-") as tmp:
            work = Path(tmp)
            config_path = work / "runtool.toml"
            # Read-only for the kernel: everything was computed above, the notebook only reads and shows.
            config_path.write_text(self.config.to_toml(read_only=True), encoding="utf-8")
            check_cancel()
            notify("execute", f"Executing {self.notebook.name}")
            executed = self._execute(coord, config_path, work, check_cancel)
            notify("convert", "Converting to HTML")
            notebook_text, page = _export(executed, coord)
        check_cancel()
        notify("write", f"Writing to {target}")
        stem = report_stem(coord)
        ipynb, page_path = target / f"{stem}.ipynb", target / f"{stem}.html"
        try:
            target.mkdir(parents=True, exist_ok=True)
            write_atomic(ipynb, notebook_text)
            write_atomic(page_path, page)
        except OSError as exc:
            raise ReportError(f"Could not write the report of {coord} to {target}: {exc}", coord, "write") from exc
        result = ReportResult(coord, ipynb, page_path, time.perf_counter() - started, steps)
        notify("done", f"Report written in {result.seconds:.1f} s: {page_path}")
        return result

    def _bring_up_to_date(
        self, coord: RunCoordinate, notify: _Notifier, cancel: threading.Event | None
    ) -> tuple[ReportStage, ...]:
        """The run pipeline's download, extraction and analysis as the run needs them; the steps that ran."""
        from runtool.services.pipeline import PipelineCancelled, PipelineError

        try:
            update = self.pipeline.bring_up_to_date(coord, progress=notify.pipeline, cancel=cancel)
        except PipelineCancelled as exc:
            raise _cancelled(coord) from exc
        except PipelineError as exc:
            raise ReportError(str(exc), coord, exc.step) from exc
        return update.steps

    def _execute(
        self, coord: RunCoordinate, config_path: Path, work: Path, before_cell: Callable[..., None]
    ) -> NotebookNode:
        """Execute the notebook in a new kernel whose working directory is ``work`` (set on the kernel, not by
        changing this process's directory, which other threads share). ``before_cell`` is called before each cell
        (an error it raises stops the notebook, and the kernel is shut down)."""
        import papermill
        from jupyter_client.kernelspec import NoSuchKernel
        from papermill.exceptions import PapermillException, PapermillExecutionError
        from traitlets.config import Config

        try:
            executed: NotebookNode = papermill.execute_notebook(
                str(self.notebook),
                None,
                parameters={"coordinate": coord.to_path_str(), "config_path": str(config_path)},
                kernel_name=self.kernel_name,
                progress_bar=False,
                execution_timeout=self.cell_timeout_s,
                resources={"metadata": {"path": str(work)}},
                on_cell_start=before_cell,
                # CurveZMQ between this process and the kernel where the kernel supports it: the kernel
                # listens on loopback TCP, and otherwise warns on stderr at every report.
                config=Config({"KernelManager": {"transport_encryption": "auto"}}),
            )
        except PapermillExecutionError as exc:
            first_line = next((line for line in str(exc.source).splitlines() if line.strip()), "")
            raise ReportError(
                f"The report notebook failed for {coord} in cell [{exc.exec_count}] (`{first_line.strip()}`): "
                f"{exc.ename}: {exc.evalue}",
                coord, "execute", exc.exec_count, exc.ename, exc.evalue,
            ) from exc
        except (PapermillException, NoSuchKernel, OSError, RuntimeError, TimeoutError) as exc:
            raise ReportError(f"The report notebook {self.notebook} could not be executed for {coord}: "
                              f"{type(exc).__name__}: {exc}", coord, "execute") from exc
        return executed


def _cancelled(coord: RunCoordinate) -> ReportCancelled:
    return ReportCancelled(f"The report of {coord} was cancelled; no report was written.", coord)


class _Notifier:
    """Sends :class:`ReportProgress` events for one run (no-op without a callback)."""

    def __init__(
        self,
        callback: Callable[[ReportProgress], None] | None,
        coord: RunCoordinate,
        index: int = 1,
        total: int = 1,
    ) -> None:
        self.callback = callback
        self.coord = coord
        self.index = index
        self.total = total

    def __call__(self, stage: ReportStage, message: str) -> None:
        if self.callback is not None:
            self.callback(ReportProgress(self.coord, stage, message, self.index, self.total))

    def pipeline(self, event: PipelineProgress) -> None:
        self(event.step, event.message)


def _export(notebook: NotebookNode, coord: RunCoordinate) -> tuple[str, str]:
    """The executed notebook as ``.ipynb`` text, and as one self-contained HTML page without code or prompts."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _OFFLINE_TEMPLATE})],
        template_file=_TEMPLATE_NAME,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": f"Run report {coord}"}})
    return nbformat.writes(notebook), str(body)


