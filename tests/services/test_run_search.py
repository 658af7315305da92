"""Run search: what a typed or pasted text finds in a run table (pure), and over a real inventory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtool.config import RuntoolConfig
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.run_search import TEXT_MAX, RunIndex, RunSearch, RunSearchError, canonical
from runtool.storage import make_client, ml_file_key, raw_bag_key
from tests.conftest import make_config

RUNS = [
    RunCoordinate.parse(path)
    for path in (
        "client_001/region_north/field_115/TW_001/LB_0001/2025_09_12T09:13:00Z",
        "client_001/region_north/field_115/TW_001/LB_0001/2025-09-14T10:00:00Z",
        "client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:20:00Z",
        "client_001/region_north/field_115/TW_002/LB_0002/2025_09_13T08:00:00Z",
        "client_001/region_north/field_116/TW_001/LB_0001/2025_09_15T07:30:00Z",
        "client_002/region_south/field_200/TW_009/LB_0001/2025_09_12T09:13:00Z",
    )
]


def table(coordinates: list[RunCoordinate]) -> pd.DataFrame:
    """A run table as DataStateService.all_runs() orders it (hierarchy, then start time)."""
    frame = pd.DataFrame([c.to_dict() for c in coordinates])
    frame["start_time"] = [c.start_time for c in coordinates]
    return frame.sort_values([*RunCoordinate.PARTS[:-1], "start_time"], ignore_index=True)


@pytest.fixture(scope="module")
def index() -> RunIndex:
    return RunIndex(table(RUNS))


def paths(hits: object) -> list[str]:
    return [hit.path for hit in hits]  # type: ignore[attr-defined]


def test_canonical_spells_every_date_and_time_alike() -> None:
    for text in ("2025_09_12T09:13:00Z", "2025-09-12T09:13:00Z", "2025-09-12t09-13-00", "2025-09-12 09:13:00"):
        assert canonical(text) == "2025-09-12t09:13:00z"
    assert canonical("2025_09_12 09:1") == "2025-09-12t09:1"
    assert canonical("_2025-09-12-09-13-25_0.bag") == "_2025-09-12-09-13-25_0.bag"  # a bag stem is no run time
    assert canonical("LB_0011") == "lb_0011"


def test_empty_text_finds_nothing_and_says_nothing(index: RunIndex) -> None:
    for text in ("", "   ", "/", "\n"):
        result = index.search(text)
        assert result.hits == () and result.matched_runs == 0 and result.exact is None


@pytest.mark.parametrize("text", [
    "client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:20:00Z",
    "  client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:20:00Z\n",  # pasted with a line end
    "client_001\tregion_north\tfield_115\tTW_001\tLB_0011\t2025_09_12T09:20:00Z\r\n",  # a spreadsheet's cells
    "/client_001/region_north/field_115/TW_001/LB_0011/2025-09-12T09:20:00Z/",  # the other date spelling
    "client_001/region_north/field_115/TW_001/LB_0011/2025-09-12T09-20-00",  # a folder name's spelling
    "CLIENT_001/REGION_NORTH/FIELD_115/TW_001/LB_0011/2025_09_12T09:20:00Z",
    "client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:20:00Z/rosbag/_2025-09-12-09-20-25_0.bag",
    "gs://fleet-raw/client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:20:00Z/rosbag/_x_0.bag",
    "raw/client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:20:00Z/rosbag/_x_0/labels/1.2.txt",
    "https://storage.googleapis.com/b/client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09%3A20%3A00Z",
    r"C:\data\raw\client_001\region_north\field_115\TW_001\LB_0011\2025_09_12T09:20:00Z\rosbag_x_0.bag",
    "http://127.0.0.1:8866/voila/render/02_per_run_analysis.ipynb?cid=client_001&regionid=region_north"
    "&fieldid=field_115&twid=TW_001&lbid=LB_0011&timestamp=2025_09_12T09:20:00Z",
])
def test_a_full_coordinate_in_any_form_finds_its_run(index: RunIndex, text: str) -> None:
    result = index.search(text)
    expected = Filters(**RUNS[2].to_dict())
    assert result.exact is not None and result.exact.filters == expected
    assert [hit.filters for hit in result.hits] == [expected]
    assert result.exact.is_run and result.exact.level == "timestamp"


def test_a_coordinate_not_in_the_inventory_finds_nothing(index: RunIndex) -> None:
    result = index.search("client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:21:00Z")
    assert result.hits == () and result.exact is None


def test_a_laser_box_name_finds_the_laser_box_then_its_runs(index: RunIndex) -> None:
    result = index.search("LB_0011")
    assert paths(result.hits) == [
        "client_001/region_north/field_115/TW_001/LB_0011",
        "client_001/region_north/field_115/TW_001/LB_0011/2025_09_12T09:20:00Z",
    ]
    laser_box = result.hits[0]
    assert not laser_box.is_run and laser_box.level == "lbid" and laser_box.runs == 1
    assert result.exact is None  # the name alone does not say which field's LB_0011
    assert (result.matched_runs, result.matched_sets, result.more_runs, result.more_sets) == (1, 1, 0, 0)


def test_a_partial_path_names_a_level_set_down_to_its_level(index: RunIndex) -> None:
    result = index.search("field_115/TW_001")
    assert result.hits[0].filters == Filters("client_001", "region_north", "field_115", "TW_001")
    assert result.hits[0].runs == 3
    assert [hit.is_run for hit in result.hits] == [False, True, True, True]


def test_a_full_level_path_is_exact(index: RunIndex) -> None:
    result = index.search("client_001/region_north/field_116")
    assert result.exact is not None and result.exact.filters == Filters("client_001", "region_north", "field_116")


def test_a_name_shared_by_two_branches_lists_both(index: RunIndex) -> None:
    result = index.search("lb_0001")
    sets = [hit for hit in result.hits if not hit.is_run]
    assert paths(sets) == [
        "client_001/region_north/field_115/TW_001/LB_0001",
        "client_001/region_north/field_116/TW_001/LB_0001",
        "client_002/region_south/field_200/TW_009/LB_0001",
    ]
    assert [hit.runs for hit in sets] == [2, 1, 1]
    assert result.matched_runs == 4


def test_whole_names_come_before_parts_of_names(index: RunIndex) -> None:
    result = index.search("TW_00")
    assert result.hits[0].filters.twid == "TW_001"  # part of a name: no whole TW_00 exists
    whole = index.search("field_11")
    assert paths(whole.hits)[:2] == ["client_001/region_north/field_115", "client_001/region_north/field_116"]


def test_a_time_as_the_pages_write_it_finds_runs_of_both_spellings(index: RunIndex) -> None:
    result = index.search("2025-09-12 09:13")
    assert [hit.filters.lbid for hit in result.hits] == ["LB_0001", "LB_0001"]
    assert {hit.filters.cid for hit in result.hits} == {"client_001", "client_002"}
    assert all(hit.is_run for hit in result.hits)
    assert index.search("2025_09_14").hits[0].filters.timestamp == "2025-09-14T10:00:00Z"


@pytest.mark.parametrize("text", ["LB_0011 2025-09-12 09:20", "LB_0011 · 2025-09-12 09:20", "TW_001 LB_0011"])
def test_a_run_as_a_table_writes_it_finds_it_as_with_slashes(index: RunIndex, text: str) -> None:
    """Tables write a run as "LB_0011 · 2025-09-12 09:20"; a copied line found nothing (only "/" separated)."""
    spaced, slashed = index.search(text), index.search(text.replace(" · ", "/").replace(" 2025", "/2025")
                                                       .replace("TW_001 ", "TW_001/"))
    assert spaced.hits and paths(spaced.hits) == paths(slashed.hits)


def test_leading_segments_of_a_prefix_url_are_dropped(index: RunIndex) -> None:
    result = index.search("gs://fleet-ml/raw/client_002/region_south/")
    assert result.hits[0].filters == Filters("client_002", "region_south")


def test_a_link_to_a_level_set_selects_what_the_link_selects(index: RunIndex) -> None:
    result = index.search("01_temporal_coverage.ipynb?cid=client_001&fieldid=field_115&token=abc")
    assert result.exact is not None and result.exact.filters == Filters(cid="client_001", fieldid="field_115")
    assert result.exact.runs == 4 and result.exact.path == "client_001/field_115"
    assert index.search("cid=client_009").hits == ()


@pytest.mark.parametrize(("timestamp", "stored"), [("2025-09-13T08:00:00Z", "2025_09_13T08:00:00Z"),
                                                   ("2025_09_14T10:00:00Z", "2025-09-14T10:00:00Z")])
def test_a_link_finds_its_run_whichever_date_separator_it_uses(index: RunIndex, timestamp: str, stored: str) -> None:
    """A link with a run's laser box and time in the other spelling matched no run (hostile review)."""
    lbid = "LB_0002" if stored.startswith("2025_09_13") else "LB_0001"
    result = index.search(f"?lbid={lbid}&timestamp={timestamp}")
    assert result.exact is not None and result.exact.filters.timestamp == stored
    assert result.exact.path.startswith("client_001/region_north/field_115/")


def test_the_list_is_capped_and_the_rest_counted() -> None:
    many = [RunCoordinate("c", "r", "f", "t", f"LB_{i:04d}", f"2025_09_{1 + i % 28:02d}T08:00:00Z") for i in range(60)]
    result = RunIndex(table(many)).search("LB_00", limit=20)
    assert len(result.hits) == 20
    assert sum(not hit.is_run for hit in result.hits) == 10  # level sets take at most half when runs match too
    assert (result.matched_sets, result.matched_runs) == (60, 60)
    assert (result.more_sets, result.more_runs) == (50, 50)


@pytest.mark.parametrize("text", ["LB_0011\u202e", "LB\u200b_0011", "LB_\x1b0011", "LB_0011\x7f", "LB\u0085_0011",
                                  "LB_%E2%80%AE0011", "cid=client%E2%80%8B001"])
def test_control_and_format_characters_are_refused(index: RunIndex, text: str) -> None:
    with pytest.raises(RunSearchError, match="control|format"):
        index.search(text)


def test_overlong_text_is_refused(index: RunIndex) -> None:
    with pytest.raises(RunSearchError, match="characters long"):
        index.search("a" * (TEXT_MAX + 1))


def test_a_link_with_a_bad_part_is_refused_with_the_reason(index: RunIndex) -> None:
    with pytest.raises(RunSearchError, match="The link could not be used"):
        index.search("?cid=..&lbid=LB_0001")


FORMS = ["{}", "{}/rosbag/_b_0.bag", "gs://x/{}", "raw/{}/rosbag/_b/frames/1.jpg"]


@given(st.sampled_from(RUNS), st.sampled_from(FORMS), st.booleans(), st.booleans())
def test_every_run_is_found_from_its_coordinate(coordinate: RunCoordinate, form: str, other_spelling: bool,
                                                upper: bool) -> None:
    text = coordinate.to_path_str()
    if other_spelling:
        date, time = coordinate.timestamp.split("T")
        text = text.replace(coordinate.timestamp, f"{date.replace('_', '-')}T{time}")
    if upper:
        text = text.upper()
    result = RunIndex(table(RUNS)).search(form.format(text))
    assert result.exact is not None and result.exact.filters == Filters(**coordinate.to_dict())


# -- over a real inventory ------------------------------------------------------------------------------


def upload(config: RuntoolConfig, coordinate: RunCoordinate) -> None:
    client = make_client(emulator_host=config.emulator_host)
    bag = raw_bag_key(coordinate, "_2025-09-12-09-13-25_0.bag")
    client.bucket(config.raw_bucket).blob(bag).upload_from_string(b"b")
    client.bucket(config.ml_bucket).blob(
        ml_file_key(coordinate, "_2025-09-12-09-13-25_0", "labels", "1.2.txt")).upload_from_string(b"0 1 1 1 1\n")


def test_search_follows_the_inventory_across_a_refresh(fresh_config: RuntoolConfig) -> None:
    services = ServiceContainer(fresh_config)
    upload(fresh_config, RUNS[0])
    services.inventory.refresh()
    search = RunSearch(services)
    assert search.search(RUNS[0].to_path_str()).exact is not None
    assert search.search(RUNS[5].to_path_str()).hits == ()
    upload(fresh_config, RUNS[5])
    services.inventory.refresh()
    found = search.search(RUNS[5].to_path_str()).exact
    assert found is not None and found.filters == Filters(**RUNS[5].to_dict())


def test_without_an_inventory_a_search_says_why(tmp_path: Path) -> None:
    assert RunSearch(None).search("").hits == ()
    with pytest.raises(RunSearchError, match="could not start"):
        RunSearch(None).search("LB_0001")
    with pytest.raises(RunSearchError, match="not been scanned"):
        RunSearch(ServiceContainer(make_config(tmp_path))).search("LB_0001")
