"""RunPipeline on the demo fleet's real bags served by fake-gcs-server: one run, and a selection on the executor."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtool.errors import ReadOnlyError
from runtool.formatting import format_bytes
from runtool.models import Filters, NextAction, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.analytics import ANALYSIS_DIR
from runtool.services.container import writable_pipeline
from runtool.services.executor import DaskExecutor, LocalExecutor
from runtool.services.pipeline import (
    PipelineCancelled,
    PipelineError,
    PipelineOutcome,
    PipelineProgress,
    RunUpdate,
    _worker_pipeline,
    update_run,
)
from runtool.storage import local_raw_dir, processed_dir
from tests.conftest import SeededFleet

COLUMNS = ["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"]


def fresh_services(fleet: SeededFleet, root: Path) -> ServiceContainer:
    services = ServiceContainer(fleet.config.with_overrides(
        data_dir=root, raw_root=root / "raw", processed_root=root / "processed", ml_root=root / "ML",
        cache_dir=root / "cache",
    ))
    services.inventory.refresh()
    return services


def runs_with_bags(services: ServiceContainer, count: int) -> list[RunCoordinate]:
    """The first ``count`` runs with 1-3 raw bags, in coordinate order (small, so the tests stay quick)."""
    runs = services.data_state.all_runs()
    rows = runs[(runs["raw_bags"] > 0) & (runs["raw_bags"] <= 3)].sort_values(COLUMNS).head(count)
    return [RunCoordinate(*(str(row[c]) for c in COLUMNS)) for _, row in rows.iterrows()]


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[DaskExecutor]:
    with DaskExecutor("local-cluster") as executor:
        yield executor


def test_bring_up_to_date_downloads_extracts_and_analyses_then_reads_the_cache(
    demo_fleet: SeededFleet, tmp_path: Path
) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    assert services.data_state.get_complete_run_state(coord).next_action is NextAction.DOWNLOAD
    events: list[str] = []

    update = services.pipeline.bring_up_to_date(coord, progress=lambda e: events.append(e.step))

    assert update.steps == ("download", "extract", "analyze")
    assert events[0] == "check" and events.index("download") < events.index("extract") < events.index("analyze")
    bags = list(local_raw_dir(services.config.raw_root, coord).glob("*.bag"))
    assert len(bags) == services.data_state.get_complete_run_state(coord).cloud_raw.bag_count > 0
    assert services.data_state.get_complete_run_state(coord).next_action is NextAction.COMPLETE
    # The KPIs are the run's cached analysis, which a second pass reads instead of recomputing.
    assert update.kpis == services.analytics.load_cached(coord).kpis  # type: ignore[union-attr]
    again = services.pipeline.bring_up_to_date(coord)
    assert again.steps == () and again.kpis == update.kpis


def test_a_local_bag_of_the_wrong_size_is_downloaded_again_before_the_extraction(
    demo_fleet: SeededFleet, tmp_path: Path
) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    bags = sorted(local_raw_dir(services.config.raw_root, coord).glob("*.bag"))
    sizes = {path.name: path.stat().st_size for path in bags}
    bags[0].write_bytes(b"cut short")
    services.local.refresh_run(coord)
    assert services.data_state.get_complete_run_state(coord).next_action is NextAction.DOWNLOAD

    update = services.pipeline.bring_up_to_date(coord)

    assert update.steps == ("download", "extract", "analyze") and update.failed_bags == ()
    assert {path.name: path.stat().st_size for path in bags} == sizes


def test_bags_missing_from_a_partial_local_copy_are_downloaded_before_the_extraction(
    demo_fleet: SeededFleet, tmp_path: Path
) -> None:
    """A run with 1 of its 4 bags locally (raw sync "mismatch") is downloaded first, the bag already there kept,
    then extracted and analysed from all four: extracting the one local bag would give KPIs that look normal."""
    services = fresh_services(demo_fleet, tmp_path)
    runs = services.data_state.all_runs()
    row = runs[runs["raw_bags"] == 4].sort_values(COLUMNS).iloc[0]
    coord = RunCoordinate(*(str(row[c]) for c in COLUMNS))
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    bags = sorted(local_raw_dir(services.config.raw_root, coord).glob("*.bag"))
    assert len(bags) == 4
    sizes = {path.name: path.stat().st_size for path in bags}
    for path in bags[1:]:
        path.unlink()
    kept = bags[0].stat()
    services.local.refresh_run(coord)
    state = services.data_state.get_complete_run_state(coord)
    assert state.raw_sync == "mismatch" and len(state.missing_bags) == 3 and state.differing_bags == ()
    assert state.next_action is NextAction.DOWNLOAD
    plan = services.pipeline.plan(Filters(lbid=coord.lbid), since=coord.start_time.date(),
                                  until=coord.start_time.date())
    assert (coord, NextAction.DOWNLOAD) in plan.runs

    result = services.pipeline.update_many(plan, executor=LocalExecutor(1))

    outcome = next(o for o in result.outcomes if o.coordinate == coord)
    assert outcome.update is not None and outcome.update.steps == ("download", "extract", "analyze")
    assert {path.name: path.stat().st_size for path in bags} == sizes
    assert bags[0].stat().st_mtime_ns == kept.st_mtime_ns and bags[0].stat().st_ino == kept.st_ino  # skipped
    tables = services.analytics.load_tables(coord)
    assert len(tables.bags) == 4 and tables.frames["bag_file"].nunique() == 4
    assert services.data_state.get_complete_run_state(coord).next_action is NextAction.COMPLETE


def test_an_ml_only_or_unknown_run_stops_at_the_check_step(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    unknown = RunCoordinate.parse("client_001/region_north/field_115/TW_001/LB_0003/2024_01_01T00:00:00Z")
    with pytest.raises(PipelineError, match="^Unknown run ") as caught:
        services.pipeline.bring_up_to_date(unknown)
    assert caught.value.step == "check" and caught.value.coordinate == unknown


def test_a_failing_step_passes_on_the_details_of_its_error(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    """Bags of the right size that no reader can open: the extraction's sentence, its list of every bag kept."""
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    bags = sorted(local_raw_dir(services.config.raw_root, coord).glob("*.bag"))
    for bag in bags:
        bag.write_bytes(b"\0" * bag.stat().st_size)
    services.local.refresh_run(coord)
    with pytest.raises(PipelineError, match=f"^Bringing {coord} up to date stopped at the extract step: None of ") \
            as caught:
        services.pipeline.bring_up_to_date(coord)
    assert caught.value.step == "extract" and caught.value.details is not None
    assert [line.split(": ", 1)[0] for line in caught.value.details.splitlines()] == [bag.stem for bag in bags]


def test_read_only_refuses_before_any_work(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    coords = runs_with_bags(services, 1)
    reader = ServiceContainer(services.config, read_only=True)
    with pytest.raises(ReadOnlyError):
        reader.pipeline.bring_up_to_date(coords[0])
    with pytest.raises(ReadOnlyError):
        reader.pipeline.update_many(coords)
    assert not services.config.raw_root.exists()


def test_a_cancel_set_before_the_start_changes_nothing(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PipelineCancelled, match="cancelled before the check step; nothing was changed") as caught:
        services.pipeline.bring_up_to_date(coord, cancel=cancel)
    assert caught.value.step == "check" and caught.value.coordinate == coord
    assert not services.config.raw_root.exists() and not services.config.processed_root.exists()


def test_cancel_reaches_the_download_which_keeps_no_partial_file(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    """Cancel as the download starts (its first progress event, sent before the transfer runs): the transfer gets
    the cancel and moves nothing; a pipeline that did not pass it on would download every bag and stop later."""
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    cancel = threading.Event()
    steps: list[str] = []

    def progress(event: PipelineProgress) -> None:
        steps.append(event.step)
        if event.step == "download":
            cancel.set()

    with pytest.raises(PipelineCancelled, match="cancelled during the download: 0 complete bags kept") as caught:
        services.pipeline.bring_up_to_date(coord, progress=progress, cancel=cancel)

    assert caught.value.step == "download" and "extract" not in steps
    raw = local_raw_dir(services.config.raw_root, coord)
    assert not raw.exists() or not [path for path in raw.rglob("*") if path.is_file()]
    assert services.data_state.get_complete_run_state(coord).next_action is NextAction.DOWNLOAD


def test_cancel_during_the_extraction_keeps_the_bags_and_writes_no_output(
    demo_fleet: SeededFleet, tmp_path: Path
) -> None:
    """Cancel at the extraction's first progress event: the extraction stops at its next one and its temporary
    folder is removed; without the cancel passed on it would finish and the update would stop before the analysis."""
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    cancel = threading.Event()

    def progress(event: PipelineProgress) -> None:
        if event.step == "extract" and event.message.startswith("Extracting:"):
            cancel.set()

    with pytest.raises(PipelineCancelled, match="cancelled during the extraction; the downloaded bags and any "
                                                "previous extraction are kept") as caught:
        services.pipeline.bring_up_to_date(coord, progress=progress, cancel=cancel)

    assert caught.value.step == "extract"
    state = services.data_state.get_complete_run_state(coord)
    assert state.local_raw.bag_count == state.cloud_raw.bag_count and state.missing_bags == ()
    assert state.differing_bags == () and state.next_action is NextAction.EXTRACT
    output = processed_dir(services.config.processed_root, coord)
    assert not output.exists() and not list(output.parent.glob("*"))  # no temporary folder left behind
    # Bringing it up to date again resumes where the cancel stopped it.
    update = services.pipeline.bring_up_to_date(coord)
    assert update.steps == ("extract", "analyze")


def test_download_progress_says_bags_and_bytes_with_the_fraction_done(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    cloud = services.data_state.get_complete_run_state(coord).cloud_raw
    bags, size = cloud.bag_count, format_bytes(cloud.total_size)
    events: list[PipelineProgress] = []

    services.pipeline.bring_up_to_date(coord, progress=events.append)

    downloads = [event for event in events if event.step == "download"]
    assert downloads[0].fraction == 0.0 and downloads[0].message.startswith(f"Download {bags} bag")
    assert downloads[-1].fraction == 1.0
    assert downloads[-1].message == f"Downloading: {bags} of {bags} bags done, {size} of {size}"
    fractions = [event.fraction for event in downloads if event.fraction is not None]
    assert fractions == sorted(fractions)
    extracts = [event for event in events if event.step == "extract"]
    assert extracts[-1].fraction == 1.0 and extracts[-1].message == f"Extracting: {bags} of {bags} bags done"


def block_download(services: ServiceContainer, coord: RunCoordinate) -> Path:
    """A file where the run's raw folder belongs: no bag of it can be downloaded. (A corrupt bag would not do:
    it fails alone in metadata.yaml and the run is still analysed, by design.)"""
    blocker = local_raw_dir(services.config.raw_root, coord)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder", encoding="utf-8")
    return blocker


@pytest.mark.parametrize("where", ["local", "dask"])
def test_a_selection_runs_on_the_executor_and_a_failing_run_does_not_stop_the_others(
    demo_fleet: SeededFleet, tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    coords = runs_with_bags(services, 3)
    blocker = block_download(services, coords[1])
    executor = LocalExecutor(2) if where == "local" else request.getfixturevalue("dask_executor")
    seen: list[tuple[int, int, PipelineOutcome]] = []

    result = services.pipeline.update_many(coords, progress=lambda d, t, o: seen.append((d, t, o)), executor=executor)

    assert [o.coordinate for o in result.outcomes] == coords
    assert [o.status for o in result.outcomes] == ["ok", "failed", "ok"]
    failed = result.outcomes[1]
    assert failed.step == "download"
    assert failed.error and failed.error.startswith(f"The download of {coords[1]} failed for ")
    assert blocker.name in failed.error or "Not a directory" in failed.error
    for outcome in (result.outcomes[0], result.outcomes[2]):
        assert outcome.update is not None and outcome.update.steps == ("download", "extract", "analyze")
        # The analysis the worker wrote is the one this process reads back.
        assert services.analytics.load_cached(outcome.coordinate).kpis == outcome.update.kpis  # type: ignore[union-attr]
    assert sorted(d for d, _, _ in seen) == [1, 2, 3] and {t for _, t, _ in seen} == {3}
    # This process's local state was re-read after each run: the views show the new extractions.
    extracted = services.data_state.runs(Filters())
    done = {str(o.coordinate) for o in result.outcomes if o.status == "ok"}
    paths = extracted[COLUMNS].astype(str).agg("/".join, axis=1)
    assert set(paths[extracted["analyzed"].to_numpy()]) == done
    assert not result.ok and "2 runs up to date, 1 failed" in result.summary()


def test_cancel_in_the_middle_leaves_the_remaining_runs_not_started(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    coords = runs_with_bags(services, 3)
    cancel = threading.Event()

    def progress(done: int, _total: int, _outcome: PipelineOutcome) -> None:
        if done == 1:
            cancel.set()

    result = services.pipeline.update_many(coords, progress=progress, cancel=cancel, executor=LocalExecutor(1))

    assert [o.status for o in result.outcomes] == ["ok", "cancelled", "cancelled"]
    assert all(o.error == "not started (cancelled)" for o in result.outcomes[1:])
    for coord in coords[1:]:
        assert not local_raw_dir(services.config.raw_root, coord).exists()
        assert not processed_dir(services.config.processed_root, coord).exists()
    assert "2 not started (cancelled)" in result.summary()


def test_cancel_stops_a_run_in_flight_not_only_the_runs_not_started(
    demo_fleet: SeededFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or the page's Cancel) while a run extracts: that run stops at its extraction's next bag, keeping its
    bags, instead of being downloaded, extracted and analysed to the end while the user waits."""
    services = fresh_services(demo_fleet, tmp_path)
    coords = runs_with_bags(services, 2)
    cancel = threading.Event()
    extract = services.extraction.extract

    def cancelled_as_it_starts(*args: object, **kwargs: object) -> object:
        cancel.set()  # the real extraction, with the cancel arriving as it begins
        return extract(*args, **kwargs)

    monkeypatch.setattr(services.extraction, "extract", cancelled_as_it_starts)
    result = services.pipeline.update_many(coords, cancel=cancel, executor=LocalExecutor(1))

    first, second = result.outcomes
    assert (first.status, first.step) == ("cancelled", "extract"), first
    assert first.error is not None and "cancelled during the extraction" in first.error
    assert (second.status, second.error) == ("cancelled", "not started (cancelled)")
    state = services.data_state.get_complete_run_state(coords[0])
    assert state.local_raw.bag_count == state.cloud_raw.bag_count and state.next_action is NextAction.EXTRACT
    assert not processed_dir(services.config.processed_root, coords[0]).exists()
    assert "0 runs up to date, 0 failed, 1 stopped in flight (cancelled), 1 not started (cancelled)" in \
        result.summary()


def test_a_run_whose_analysis_cache_lost_a_series_is_planned_again(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    """Its kpis.json is current, so the KPI table lists it; the hostile review found bulk analysis calling it up to
    date for good, while only opening its page (not possible read-only) repaired it."""
    services = fresh_services(demo_fleet, tmp_path)
    (coord,) = runs_with_bags(services, 1)
    services.pipeline.bring_up_to_date(coord)
    assert services.pipeline.plan(coord.to_filters()).up_to_date == (coord,)
    (processed_dir(services.config.processed_root, coord) / ANALYSIS_DIR / "detections_series.parquet").unlink()

    plan = services.pipeline.plan(coord.to_filters())

    assert dict(plan.runs) == {coord: NextAction.ANALYZE} and plan.up_to_date == ()
    assert services.pipeline.update_many(plan).ok
    assert services.analytics.cache_files_present(coord)


def test_plan_gives_each_run_its_next_step_and_leaves_out_runs_without_bags(
    demo_fleet: SeededFleet, tmp_path: Path
) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    first, second = runs_with_bags(services, 2)
    services.pipeline.bring_up_to_date(first)
    selection = Filters(cid=first.cid)

    plan = services.pipeline.plan(selection)

    actions = dict(plan.runs)
    # The first run's analysis is current: it is up to date, not planned (the preview counts only the work).
    assert first not in actions and plan.up_to_date == (first,) and actions[second] is NextAction.DOWNLOAD
    assert "; 1 run up to date already" in plan.describe()
    runs = services.data_state.runs(selection)
    without_bags = int(((runs["raw_bags"] == 0) & (runs["local_bags"] == 0)).sum())
    assert len(plan.left_out) == without_bags and len(plan.runs) == len(runs) - without_bags - 1
    assert dict(services.pipeline.plan(selection, force=True).runs)[first] is NextAction.ANALYZE
    shutil.rmtree(processed_dir(services.config.processed_root, first) / ANALYSIS_DIR)
    assert dict(services.pipeline.plan(selection).runs)[first] is NextAction.ANALYZE


def test_a_run_brought_up_to_date_is_planned_again_as_nothing_to_do(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    services = fresh_services(demo_fleet, tmp_path)
    coords = runs_with_bags(services, 2)
    day = coords[0].start_time.date()
    selection = Filters(lbid=coords[0].lbid)
    plan = services.pipeline.plan(selection, since=day, until=day)
    assert plan.runs and not plan.up_to_date

    result = services.pipeline.update_many(plan, executor=LocalExecutor(1))
    assert result.ok

    again = services.pipeline.plan(selection, since=day, until=day)
    assert again.runs == () and set(again.up_to_date) == set(plan.coordinates)
    assert again.describe().startswith("Nothing to do; ")


def test_a_worker_keeps_its_services_between_runs_and_still_sees_what_changed(
    demo_fleet: SeededFleet, tmp_path: Path
) -> None:
    """update_run (what process and Dask workers run) reuses one pipeline per configuration; the inventory
    cache is not reloaded for every run, yet a run changed on disk by another process since, or a new
    inventory cache, is seen."""
    services = fresh_services(demo_fleet, tmp_path)
    first, second = runs_with_bags(services, 2)
    config = services.config

    update = update_run(writable_pipeline, config, False, first)
    assert isinstance(update, RunUpdate) and update.steps == ("download", "extract", "analyze")
    worker = _worker_pipeline(writable_pipeline, config, first)
    assert _worker_pipeline(writable_pipeline, config, first) is worker  # kept: no new services

    # Another process brings the second run up to date and drops its analysis: the worker, whose local index
    # predates that, must only analyse it, not download and extract it again.
    services.pipeline.bring_up_to_date(second)
    shutil.rmtree(processed_dir(config.processed_root, second) / ANALYSIS_DIR)
    update = update_run(writable_pipeline, config, False, second)
    assert isinstance(update, RunUpdate) and update.steps == ("analyze",)
    assert _worker_pipeline(writable_pipeline, config, second) is worker

    services.inventory.refresh()  # a new cache file: the worker builds fresh services on it
    worker = _worker_pipeline(writable_pipeline, config, first)
    assert _worker_pipeline(writable_pipeline, config, first) is worker
    services.inventory.refresh(second.to_filters())  # one run refreshed: only the delta file changes
    assert _worker_pipeline(writable_pipeline, config, first) is not worker
    other = config.with_overrides(processed_root=tmp_path / "elsewhere")
    assert _worker_pipeline(writable_pipeline, other, first).config == other
