"""Run reports against the demo fleet: papermill in a real kernel, nbconvert HTML, read offline in chromium.

The services get their own local roots and cache (the demo fleet's buckets are only read), so every run
starts "not downloaded" and the first report goes through download → extract → analyse.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest

from runtool.analysis.figures import (
    detection_stats_figure,
    envelope,
    figure_png,
    fps_figure,
    latency_figure,
    track_lifecycle_figure,
)
from runtool.analysis.perception import ExtractionTables, analyze
from runtool.config import RuntoolConfig, load_config
from runtool.errors import ReadOnlyError
from runtool.models import Filters, NextAction, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.reports import (
    REPORT_NOTEBOOK,
    ReportCancelled,
    ReportError,
    ReportFailure,
    ReportProgress,
    ReportResult,
    ReportService,
    ReportStage,
    RunReport,
    format_kpi,
    report_stem,
)
from runtool.storage import local_raw_dir
from tests.conftest import SeededFleet
from tests.extract.bagfiles import truncate_half

RUN = RunCoordinate.parse("client_001/region_north/field_115/TW_001/LB_0003/2025_09_12T09:13:30Z")
"""Two real bags in the raw bucket, nothing local: the report has to download, extract and analyse."""
BAD_RUN = RunCoordinate.parse("client_001/region_north/field_115/TW_001/LB_0002/2025_09_12T09:13:02Z")
"""Three real bags; the test truncates one after downloading it."""
MIXED_BOX = Filters(cid="client_001", regionid="region_south", fieldid="field_177", twid="TW_002", lbid="LB_0006")
"""Two runs in the buckets: 2025_07_03 with three real bags, 2025-09-03 with ML samples and no raw bags."""
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CODE_FRAGMENTS = ("RunReport.load", "figure_png(", "display(HTML", "import ", "config_path =")
"""Text of the notebook's code cells, none of which may reach the HTML."""


def own_config(fleet: SeededFleet, root: Path) -> RuntoolConfig:
    return fleet.config.with_overrides(data_dir=root, raw_root=root / "raw", processed_root=root / "processed",
                                       ml_root=root / "ML", cache_dir=root / "cache")


@pytest.fixture(scope="module")
def services(demo_fleet: SeededFleet, tmp_path_factory: pytest.TempPathFactory) -> ServiceContainer:
    container = ServiceContainer(own_config(demo_fleet, tmp_path_factory.mktemp("reports")))
    container.inventory.refresh()
    return container


@dataclass(frozen=True)
class Rendered:
    result: ReportResult
    events: list[ReportProgress]
    next_action_before: NextAction

    @property
    def html(self) -> str:
        return self.result.html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rendered(services: ServiceContainer) -> Rendered:
    """The report of :data:`RUN`, rendered once for the module (a kernel start and a download are slow)."""
    before = services.data_state.get_complete_run_state(RUN).next_action
    events: list[ReportProgress] = []
    result = services.reports.render(RUN, progress=events.append)
    return Rendered(result, events, before)


class KpiCells(HTMLParser):
    """Collects the text of every ``<td data-kpi="name">`` cell."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        kpi = dict(attrs).get("data-kpi")
        if tag == "td" and kpi:
            self._current = kpi
            self.cells[kpi] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self.cells[self._current] += data


# -- one report, from a run that is not downloaded yet ------------------------------------------------


def test_render_downloads_extracts_and_analyses_then_writes_both_files(
    rendered: Rendered, services: ServiceContainer
) -> None:
    result = rendered.result
    assert rendered.next_action_before is NextAction.DOWNLOAD
    assert result.steps == ("download", "extract", "analyze")
    folder = services.reports.default_dir(RUN)
    stem = "client_001_region_north_field_115_TW_001_LB_0003_2025_09_12T09-13-30Z"
    assert report_stem(RUN) == stem
    assert (result.ipynb, result.html) == (folder / f"{stem}.ipynb", folder / f"{stem}.html")
    assert sorted(p.name for p in folder.iterdir()) == [f"{stem}.html", f"{stem}.ipynb"]  # no temporary files
    assert services.data_state.get_complete_run_state(RUN).next_action is NextAction.COMPLETE
    stages = [event.stage for event in rendered.events]
    assert stages[0] == "check" and stages[-1] == "done"
    for stage in ("download", "extract", "analyze", "execute", "convert", "write"):
        assert stage in stages
    assert stages.index("download") < stages.index("extract") < stages.index("analyze") < stages.index("execute")
    assert result.seconds > 0 and result.to_dict()["coordinate"] == RUN.to_path_str()


def test_the_rendered_report_is_listed_for_its_run_and_its_selection(
    rendered: Rendered, services: ServiceContainer,
) -> None:
    listed = ServiceContainer(services.config, read_only=True).reports.listing(RUN)
    assert [(r.coordinate, r.path) for r in listed] == [(RUN, rendered.result.html)]
    assert listed[0].relative == rendered.result.html.relative_to(services.config.processed_root).as_posix()
    assert RUN in [r.coordinate for r in services.reports.listing(Filters(cid=RUN.cid))]


def test_ipynb_has_the_injected_parameters_and_no_error(rendered: Rendered) -> None:
    notebook = nbformat.read(rendered.result.ipynb, as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in notebook.cells]
    parameters = next(i for i, t in enumerate(tags) if "parameters" in t)
    injected = next(i for i, t in enumerate(tags) if "injected-parameters" in t)
    assert injected == parameters + 1
    assert f'coordinate = "{RUN.to_path_str()}"' in notebook.cells[injected].source
    assert "config_path = " in notebook.cells[injected].source
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], "warnings in the kernel"
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4


def test_html_has_no_code_and_embeds_images_and_the_kpis(rendered: Rendered, services: ServiceContainer) -> None:
    page = rendered.html
    for fragment in CODE_FRAGMENTS:
        assert html.escape(fragment) not in page and fragment not in page, fragment
    assert not re.findall(r'class="[^"]*(?:jp-InputPrompt|jp-OutputPrompt|jp-CodeMirrorEditor|highlight)\b', page)
    assert "In&nbsp;[" not in page
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) >= 4
    assert not re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="(?:https?:)?//', page), "external resource"
    assert "<script" not in page  # nothing to load, nothing to run: the page is complete as it is
    assert not re.findall(r"""(?:url\(\s*['"]?|@import\s+['"])https?:""", page)

    analysis = services.analytics.analyze_run(RUN)
    parser = KpiCells()
    parser.feed(page)
    assert set(parser.cells) == set(analysis.kpis)
    for name, value in analysis.kpis.items():
        assert parser.cells[name] == format_kpi(name, value), name
    assert RUN.to_path_str() in page
    assert "2025-09-12 09:13:30 UTC" in page
    assert "Every bag was extracted." in page


def test_html_shows_its_images_offline_in_chromium(rendered: Rendered, browser: Any) -> None:
    requested: list[str] = []
    context = browser.new_context(offline=True, viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(rendered.result.html.as_uri(), wait_until="load")
        images = page.evaluate(
            "() => Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth}))"
        )
        tables = page.locator("td[data-kpi]").count()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "run_report.png"), full_page=True)
    finally:
        context.close()
    assert len(images) >= 4
    assert all(image["complete"] and image["width"] > 0 for image in images), images
    assert tables > 0
    assert [url for url in requested if not url.startswith(("file:", "data:"))] == []


# -- faults ---------------------------------------------------------------------------------------------


def test_a_bad_bag_is_listed_with_its_error(services: ServiceContainer, tmp_path: Path) -> None:
    services.transfers.execute(services.transfers.plan_raw_download(BAD_RUN))
    bags = sorted(local_raw_dir(services.config.raw_root, BAD_RUN).glob("*.bag"))
    truncate_half(bags[1])

    result = services.reports.render(BAD_RUN, out_dir=tmp_path)

    assert result.steps == ("extract", "analyze")
    failed = services.analytics.analyze_run(BAD_RUN).failed_bags
    assert [bag.name for bag in failed] == [bags[1].stem]
    text = html.unescape(result.html.read_text(encoding="utf-8"))
    assert "1 bag could not be read" in text
    assert failed[0].name in text
    assert failed[0].error and failed[0].error in text
    assert "Bag size differs" in text  # the state section shows the mismatch with the cloud


def test_unknown_run_is_refused_before_any_work(services: ServiceContainer, tmp_path: Path) -> None:
    unknown = RunCoordinate.parse("client_001/region_north/field_115/TW_001/LB_0003/2024_01_01T00:00:00Z")
    with pytest.raises(ReportError, match=r"^Unknown run client_001/.*2024_01_01T00:00:00Z: it is in neither") as e:
        services.reports.render(unknown, out_dir=tmp_path)
    assert e.value.stage == "check" and e.value.coordinate == unknown
    assert list(tmp_path.iterdir()) == []


def test_a_failing_notebook_cell_is_named_in_the_error(
    rendered: Rendered, services: ServiceContainer, tmp_path: Path
) -> None:
    notebook = nbformat.read(REPORT_NOTEBOOK, as_version=4)
    kpis = next(cell for cell in notebook.cells if cell.get("id") == "kpis")
    kpis.source = "report.no_such_section()"
    broken = tmp_path / "broken_report.ipynb"
    nbformat.write(notebook, broken)
    out = tmp_path / "out"

    with pytest.raises(ReportError) as caught:
        ReportService(services.config, services.data_state, services.pipeline, notebook=broken).render(RUN, out_dir=out)

    error = caught.value
    assert error.stage == "execute" and error.ename == "AttributeError" and error.cell is not None
    message = str(error)
    assert message.startswith(f"The report notebook failed for {RUN} in cell [{error.cell}]")
    assert "`report.no_such_section()`" in message and "AttributeError" in message and "no_such_section" in message
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("stage", ["check", "execute", "convert"])
def test_a_cancel_stops_the_report_and_writes_no_file_of_it(
    stage: ReportStage, rendered: Rendered, services: ServiceContainer, tmp_path: Path
) -> None:
    """Set as the run pipeline checks the run, as the notebook starts (it stops before its first cell), and as the
    HTML is made (nothing is written)."""
    cancel = threading.Event()
    stages: list[ReportStage] = []

    def progress(event: ReportProgress) -> None:
        stages.append(event.stage)
        if event.stage == stage:
            cancel.set()

    with pytest.raises(ReportCancelled, match=f"^The report of {re.escape(str(RUN))} was cancelled; no report was "
                                              "written.$"):
        services.reports.render(RUN, out_dir=tmp_path, progress=progress, cancel=cancel)
    assert stages[-1] == stage and list(tmp_path.iterdir()) == []


def test_the_notebook_refuses_a_missing_or_unknown_coordinate(services: ServiceContainer, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="No run given: set `coordinate`"):
        RunReport.load("", "")
    config_path = tmp_path / "runtool.toml"
    config_path.write_text(services.config.to_toml(read_only=True), encoding="utf-8")
    with pytest.raises(ReportError, match="^Unknown run "):
        RunReport.load("client_009/r/f/TW_9/LB_9/2024_01_01T00:00:00Z", str(config_path))


def test_read_only_services_refuse_to_render(services: ServiceContainer, tmp_path: Path) -> None:
    with pytest.raises(ReadOnlyError):
        ServiceContainer(services.config, read_only=True).reports.render(RUN, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- many runs ------------------------------------------------------------------------------------------


def test_render_many_reports_each_run_and_continues_after_a_failure(
    services: ServiceContainer, tmp_path: Path
) -> None:
    events: list[ReportProgress] = []
    outcomes = services.reports.render_many(MIXED_BOX, out_dir=tmp_path, progress=events.append)

    assert [outcome.coordinate.timestamp for outcome in outcomes] == ["2025_07_03T07:50:24Z", "2025-09-03T09:56:49Z"]
    done, failed = outcomes
    assert isinstance(done, ReportResult) and done.steps == ("download", "extract", "analyze")
    assert isinstance(failed, ReportFailure) and failed.stage == "check"
    assert "has ML samples but no raw bags" in failed.error
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{report_stem(done.coordinate)}.html",
                                                         f"{report_stem(done.coordinate)}.ipynb"]
    assert {(e.run_index, e.runs_total) for e in events} == {(1, 2), (2, 2)}
    assert [e.stage for e in events if e.run_index == 2] == ["check"]


# -- pieces without a kernel ----------------------------------------------------------------------------


def test_config_to_toml_reads_back_equal(tmp_path: Path) -> None:
    config = RuntoolConfig(
        raw_bucket="raw-bucket", ml_bucket="ml-bucket", emulator_host="http://127.0.0.1:4443",
        data_dir=tmp_path / 'odd "dir"', raw_root=tmp_path / "r", processed_root=tmp_path / "p",
        ml_root=tmp_path / "m", cache_dir=tmp_path / "c", expected_samples_per_bag=12.5, under_labelled_pct=70.0,
        list_workers=3, request_retry_s=4.0, topics={"image": "/cam", "detections": "/det", "tracks": "/trk"},
    )
    path = tmp_path / "runtool.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    loaded = load_config(path, environ={})
    assert {f.name: getattr(loaded, f.name) for f in fields(RuntoolConfig) if f.name != "source"} == {
        f.name: getattr(config, f.name) for f in fields(RuntoolConfig) if f.name != "source"
    }
    path.write_text(config.to_toml(read_only=True), encoding="utf-8")
    assert load_config(path, environ={}).read_only


def test_format_kpi() -> None:
    assert format_kpi("frames_messages", 12345) == "12,345"
    assert format_kpi("detections_share_below_target", 0.125) == "12.5 %"
    assert format_kpi("avg_track_confidence", 0.81234) == "0.812"
    assert format_kpi("mean_detections_per_frame", 3.14159) == "3.14"
    assert format_kpi("detection_latency_p95_ms", 1234.56) == "1,234.6"
    assert format_kpi("fps_target", 25.0) == "25"
    assert format_kpi("tracking_median_fps", None) == "–"


def test_envelope_keeps_every_extreme_of_a_long_series() -> None:
    values = np.sin(np.arange(100_000) / 500.0)
    values[12_345] = 5.0
    values[54_321] = np.nan
    x, y = envelope(values, max_points=1000)
    assert len(x) == len(y) == 1000
    assert np.nanmax(y) == 5.0 and np.nanmin(y) == pytest.approx(np.nanmin(values))
    assert np.all(np.diff(x) >= 0)
    short_x, short_y = envelope(values[:10], max_points=1000)
    assert np.array_equal(short_y, values[:10]) and np.array_equal(short_x, np.arange(10))


def test_streams_without_data_say_no_data() -> None:
    """Frames only: every detection and tracking panel (and the track lifecycles) says "no data"."""
    stamps = 1000.0 + np.arange(60) / 30.0
    frames = pd.DataFrame({"bag_file": "b0", "seq": np.arange(60), "bag_timestamp_s": stamps,
                           "header_timestamp_s": stamps, "has_data": True})
    data = analyze(ExtractionTables(frames=frames))

    def texts(figure: object) -> list[str]:
        return [t.get_text() for ax in figure.axes for t in ax.texts]  # type: ignore[attr-defined]

    assert texts(fps_figure(data)).count("no data") == 6  # detection and tracking columns, three rows each
    assert texts(detection_stats_figure(data)).count("no data") == 6
    assert texts(latency_figure(data)).count("no data") == 4
    assert texts(track_lifecycle_figure(data)).count("no data") == 4
    png = figure_png(fps_figure(data))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_report_notebook_is_thin_and_tagged() -> None:
    notebook = nbformat.read(REPORT_NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'coordinate = ""' in code[0].source and 'config_path = ""' in code[0].source
    assert all(not cell.outputs for cell in code)
    assert sum(len(cell.source.splitlines()) for cell in code) < 30


def test_kpi_tables_say_which_stream_is_missing() -> None:
    """Frames only: the detection and tracking cells say "no … stream" (as the page does), never "–", 0 or 100 %."""
    stamps = 1000.0 + np.arange(60) / 30.0
    frames = pd.DataFrame({"bag_file": "b0", "seq": np.arange(60), "bag_timestamp_s": stamps,
                           "header_timestamp_s": stamps, "has_data": True})
    kpis = analyze(ExtractionTables(frames=frames)).kpis.to_dict()
    report = RunReport(RunCoordinate.parse("c/r/f/t/lb/2025_01_01T00:00:00Z"), None,  # type: ignore[arg-type]
                       SimpleNamespace(kpis=kpis), datetime.now(UTC))  # type: ignore[arg-type]
    cells = dict(re.findall(r'<td data-kpi="([^"]+)">([^<]*)</td>', report.kpi_html()))
    assert cells["frames_median_fps"] == format_kpi("frames_median_fps", kpis["frames_median_fps"]) != "–"
    assert cells["detections_messages"] == "0" and cells["tracking_messages"] == "0"
    for name in ("detections_median_fps", "detections_dropped_frames", "detections_share_below_target",
                 "detection_latency_p95_ms"):
        assert cells[name] == "no detection stream", name
    for name in ("tracking_p5_fps", "tracking_dropped_frames", "tracking_latency_p99_ms"):
        assert cells[name] == "no tracking stream", name
