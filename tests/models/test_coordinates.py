"""Tests for run coordinates, timestamps and filters (hand-written cases plus hypothesis properties)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runtool.models import LEVELS, CoordinateError, Filters, RunCoordinate, parse_timestamp
from runtool.models.coordinates import check_part
from runtool.storage.layout import (
    MLFileEntry,
    RawBagEntry,
    ml_file_key,
    parse_ml_key,
    parse_raw_key,
    raw_bag_key,
)

TS = "2025_08_25T08:59:38Z"
COORD_TEXT = f"client_001/region_a/field_x/TW_001/LB_0001/{TS}"


def make(**changes: str) -> RunCoordinate:
    parts = {"cid": "client_001", "regionid": "region_a", "fieldid": "field_x", "twid": "TW_001",
             "lbid": "LB_0001", "timestamp": TS}
    parts.update(changes)
    return RunCoordinate(**parts)


# --- parse / to_path_str -------------------------------------------------------------------------------------------


def test_parse_reads_the_six_levels_in_order() -> None:
    coord = RunCoordinate.parse(COORD_TEXT)
    assert (coord.cid, coord.regionid, coord.fieldid, coord.twid, coord.lbid, coord.timestamp) == (
        "client_001", "region_a", "field_x", "TW_001", "LB_0001", TS,
    )


def test_parse_and_to_path_str_round_trip() -> None:
    coord = RunCoordinate.parse(COORD_TEXT)
    assert coord.to_path_str() == COORD_TEXT
    assert str(coord) == COORD_TEXT
    assert RunCoordinate.parse(coord.to_path_str()) == coord


def test_parse_tolerates_surrounding_slashes() -> None:
    assert RunCoordinate.parse(f"/{COORD_TEXT}/") == RunCoordinate.parse(COORD_TEXT)


def test_to_dict_and_from_dict() -> None:
    coord = RunCoordinate.parse(COORD_TEXT)
    assert coord.to_dict() == {"cid": "client_001", "regionid": "region_a", "fieldid": "field_x",
                               "twid": "TW_001", "lbid": "LB_0001", "timestamp": TS}
    assert RunCoordinate.from_dict(coord.to_dict()) == coord


def test_from_dict_names_the_missing_parts() -> None:
    with pytest.raises(CoordinateError, match="lbid, timestamp"):
        RunCoordinate.from_dict({"cid": "c", "regionid": "r", "fieldid": "f", "twid": "t"})


@pytest.mark.parametrize(
    "text",
    [
        "client_001/region_a/field_x/TW_001/LB_0001",  # 5 parts
        f"client_001/region_a/field_x/TW_001/LB_0001/{TS}/rosbag",  # 7 parts
        TS,  # 1 part
        "",
    ],
)
def test_parse_rejects_the_wrong_number_of_parts(text: str) -> None:
    with pytest.raises(CoordinateError):
        RunCoordinate.parse(text)


# --- timestamps ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2025_08_25T08:59:38Z", "2025-08-25T08:59:38Z", "2025_08-25T08:59:38Z"])
def test_both_date_separators_give_the_same_utc_time(text: str) -> None:
    assert parse_timestamp(text) == datetime(2025, 8, 25, 8, 59, 38, tzinfo=UTC)


def test_start_time_is_utc_and_the_timestamp_keeps_its_spelling() -> None:
    underscore = make(timestamp="2025_09_04T07:39:53Z")
    dash = make(timestamp="2025-09-04T07:39:53Z")
    assert underscore.timestamp == "2025_09_04T07:39:53Z"
    assert dash.timestamp == "2025-09-04T07:39:53Z"
    assert underscore.start_time == dash.start_time == datetime(2025, 9, 4, 7, 39, 53, tzinfo=UTC)
    assert underscore.start_time.utcoffset() is not None
    assert underscore.start_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    # 1970-01-01 → 2025-09-04 = 55·365 + 14 leap days + 246 days = 20335 days;
    # 20335·86400 + 7·3600 + 39·60 + 53 = 1_756_944_000 + 25_200 + 2_340 + 53 = 1_756_971_593
    assert underscore.start_time.timestamp() == 1_756_971_593


def test_sort_key_orders_mixed_separators_by_time() -> None:
    # As strings '-' (0x2d) sorts before '_' (0x5f), so string order would put Aug 26 first.
    late = make(timestamp="2025-08-26T00:00:00Z")
    early = make(timestamp="2025_08_25T23:59:59Z")
    assert sorted([late, early], key=RunCoordinate.sort_key) == [early, late]


@pytest.mark.parametrize(
    "text",
    [
        "2025_08_25 08:59:38Z",  # space instead of T
        "2025_08_25T08:59:38",  # no Z
        "2025_08_25T08-59-38Z",  # dashes in the time
        "2025/08/25T08:59:38Z",  # slashes
        "25_08_25T08:59:38Z",  # two-digit year
        "2025_8_25T08:59:38Z",  # one-digit month
        "2025_08_25T08:59:38.5Z",  # fraction
        "2025_08_25T08:59:38+00:00",  # offset instead of Z
        " 2025_08_25T08:59:38Z",  # leading blank
        "2025_02_30T00:00:00Z",  # Feb 30
        "2025_02_29T00:00:00Z",  # not a leap year
        "2025_13_01T00:00:00Z",  # month 13
        "2025_08_25T24:00:00Z",  # hour 24
        "2025_08_25T08:60:00Z",  # minute 60
        "",
    ],
)
def test_parse_timestamp_rejects_bad_values(text: str) -> None:
    with pytest.raises(CoordinateError):
        parse_timestamp(text)


def test_parse_timestamp_accepts_a_leap_day() -> None:
    assert parse_timestamp("2024_02_29T12:00:00Z") == datetime(2024, 2, 29, 12, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2025_08_25T08:59:38Z\n", "2025_08_25T08:59:38Z\r\n"])
def test_parse_timestamp_rejects_a_trailing_line_break(text: str) -> None:
    # A key segment "…Z\n" is not a run timestamp: accepting it makes a coordinate whose text form does not
    # parse back to itself (RunCoordinate.parse strips the line break).
    with pytest.raises(CoordinateError):
        parse_timestamp(text)


def test_parse_timestamp_rejects_non_ascii_digits() -> None:
    # Fullwidth digits are Unicode decimals, not the YYYY_MM_DD form; they would alias 2025_08_25T08:59:38Z.
    with pytest.raises(CoordinateError):
        parse_timestamp("２０２５_08_25T08:59:38Z")


def test_coordinate_rejects_a_timestamp_with_a_trailing_line_break() -> None:
    with pytest.raises(CoordinateError):
        make(timestamp=TS + "\n")


@pytest.mark.parametrize("timestamp", ["2025_02_30T00:00:00Z", "yesterday", "2025_08_25"])
def test_coordinate_rejects_bad_timestamps(timestamp: str) -> None:
    with pytest.raises(CoordinateError):
        make(timestamp=timestamp)


# --- part validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("value", ["", "a/b", "/", "..", ".", "a\\b", " lead", "trail ", "tab\there"])
def test_coordinate_rejects_bad_parts_at_every_level(level: str, value: str) -> None:
    with pytest.raises(CoordinateError):
        make(**{level: value})


def test_coordinate_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        make(cid="")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("value", ["client\u202e", "a\u200bb", "\ufeffbom", "del\x7f", "c1\x9b2J", "esc\x1b[2J"])
def test_coordinate_rejects_control_and_format_characters_at_every_level(level: str, value: str) -> None:
    with pytest.raises(CoordinateError, match="control or format characters"):
        make(**{level: value})
    with pytest.raises(CoordinateError, match="control or format characters"):
        Filters(**{level: value})


@pytest.mark.parametrize("value", ["...", "a..b", ".hidden", "LB 0001", "All", "ü", "عميل", "a\u00a0b"])
def test_check_part_accepts_ordinary_segments(value: str) -> None:
    assert check_part("cid", value) == value


def test_coordinate_is_frozen() -> None:
    coord = make()
    with pytest.raises(AttributeError):
        coord.cid = "other"  # type: ignore[misc]


def test_parse_rejects_dot_dot_segments() -> None:
    with pytest.raises(CoordinateError):
        RunCoordinate.parse(f"client_001/../field_x/TW_001/LB_0001/{TS}")


def test_parse_rejects_an_empty_segment() -> None:
    with pytest.raises(CoordinateError):
        RunCoordinate.parse(f"client_001//field_x/TW_001/LB_0001/{TS}")


# --- Filters -------------------------------------------------------------------------------------------------------


def test_empty_filters() -> None:
    empty = Filters()
    assert empty.is_empty()
    assert empty.to_dict() == {}
    assert empty.prefix_parts() == ()
    assert empty.describe() == "All"


def test_filters_validate_their_parts() -> None:
    with pytest.raises(CoordinateError):
        Filters(cid="..")
    with pytest.raises(CoordinateError):
        Filters(fieldid="a/b")
    with pytest.raises(CoordinateError):
        Filters(timestamp="2025_02_30T00:00:00Z")


def test_replace_resets_every_lower_level() -> None:
    full = make().to_filters()
    changed = full.replace(regionid="region_b")
    assert changed == Filters(cid="client_001", regionid="region_b")


def test_replace_to_all_clears_that_level_and_below() -> None:
    full = make().to_filters()
    assert full.replace(fieldid=None) == Filters(cid="client_001", regionid="region_a")


def test_replace_uses_the_deepest_changed_level() -> None:
    full = make().to_filters()
    changed = full.replace(cid="client_002", twid="TW_009")
    assert changed == Filters(cid="client_002", regionid="region_a", fieldid="field_x", twid="TW_009")


def test_replace_of_the_timestamp_keeps_the_levels_above() -> None:
    full = make().to_filters()
    assert full.replace(timestamp="2025-01-01T00:00:00Z").to_dict() == {
        **full.to_dict(), "timestamp": "2025-01-01T00:00:00Z",
    }


def test_replace_validates_the_new_value() -> None:
    with pytest.raises(CoordinateError):
        Filters(cid="c").replace(regionid="..")


def test_prefix_parts_stop_at_the_first_unset_level() -> None:
    assert Filters(cid="c", regionid="r", twid="t", lbid="l").prefix_parts() == ("c", "r")
    assert Filters(regionid="r").prefix_parts() == ()
    assert make().to_filters().prefix_parts() == make().to_path_tuple()


def test_matches() -> None:
    coord = make()
    assert Filters().matches(coord)
    assert Filters(cid="client_001", lbid="LB_0001").matches(coord)
    assert coord.to_filters().matches(coord)
    assert not Filters(cid="client_002").matches(coord)
    assert not Filters(cid="client_001", lbid="LB_0002").matches(coord)
    assert not Filters(timestamp="2025-08-25T08:59:38Z").matches(coord)  # same time, different spelling


def test_from_filters_needs_every_level() -> None:
    coord = make()
    assert RunCoordinate.from_filters(coord.to_filters()) == coord
    with pytest.raises(CoordinateError):
        RunCoordinate.from_filters(Filters(cid="c"))


def test_from_mapping_ignores_blank_all_and_unknown_keys() -> None:
    filters = Filters.from_mapping(
        {"cid": "client_001", "regionid": "All", "fieldid": "", "twid": None, "lbid": "LB_0002", "page": "coverage"}
    )
    assert filters == Filters(cid="client_001", lbid="LB_0002")


def test_from_mapping_takes_the_first_value_of_a_list() -> None:
    filters = Filters.from_mapping({"cid": ["client_001", "client_002"], "regionid": [], "fieldid": ("f",),
                                    "twid": ["All"]})
    assert filters == Filters(cid="client_001", fieldid="f")


def test_from_mapping_rejects_bad_values() -> None:
    with pytest.raises(CoordinateError):
        Filters.from_mapping({"cid": "../etc"})


def test_describe() -> None:
    assert Filters(cid="client_001").describe() == "client_001 → All"
    assert Filters(cid="client_001", regionid="region_a").describe() == "client_001 → region_a → All"
    assert make().to_filters().describe() == "client_001 → region_a → field_x → TW_001 → LB_0001"
    assert Filters(cid="c", fieldid="f").describe() == "c → All → f → All"


# --- hypothesis properties -----------------------------------------------------------------------------------------

_part_chars = st.characters(codec="utf-8", min_codepoint=32, exclude_characters="/\\",
                            exclude_categories=("Cc", "Cf"))
parts = st.text(alphabet=_part_chars, min_size=1, max_size=12).filter(
    lambda s: s == s.strip() and s not in (".", "..")
)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, datetime]:
    moment = draw(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
    moment = moment.replace(microsecond=0)
    sep1, sep2 = draw(st.sampled_from("_-")), draw(st.sampled_from("_-"))
    text = f"{moment.year:04d}{sep1}{moment.month:02d}{sep2}{moment.day:02d}T{moment:%H:%M:%S}Z"
    return text, moment.replace(tzinfo=UTC)


@st.composite
def coordinates(draw: st.DrawFn) -> RunCoordinate:
    cid, regionid, fieldid, twid, lbid = (draw(parts) for _ in LEVELS)
    text, _ = draw(timestamps())
    return RunCoordinate(cid, regionid, fieldid, twid, lbid, text)


bag_names = st.from_regex(r"\A_\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}_\d{1,3}\.bag\Z")


@given(timestamps())
def test_property_timestamp_parses_to_its_utc_time(case: tuple[str, datetime]) -> None:
    text, moment = case
    assert parse_timestamp(text) == moment


@given(coordinates())
def test_property_coordinate_round_trips_through_its_path(coord: RunCoordinate) -> None:
    assert RunCoordinate.parse(coord.to_path_str()) == coord
    assert RunCoordinate.from_dict(coord.to_dict()) == coord
    assert Filters(**coord.to_dict()).matches(coord)


@given(coordinates(), bag_names)
def test_property_coordinate_round_trips_through_raw_keys(coord: RunCoordinate, bag: str) -> None:
    entry = parse_raw_key(raw_bag_key(coord, bag))
    assert entry == RawBagEntry(coord, bag)


@given(
    coordinates(),
    bag_names.map(lambda name: name[: -len(".bag")]),
    st.sampled_from(["frames", "labels"]),
    st.from_regex(r"\A\d{10}\.\d{9}\Z"),
)
def test_property_coordinate_round_trips_through_ml_keys(
    coord: RunCoordinate, bag_dir: str, kind: str, stem: str
) -> None:
    name = stem + (".jpg" if kind == "frames" else ".txt")
    entry = parse_ml_key(ml_file_key(coord, bag_dir, kind, name))  # type: ignore[arg-type]
    assert entry == MLFileEntry(coord, bag_dir, kind, name)  # type: ignore[arg-type]


_key_text = st.text(alphabet="/////._-abrosgZT:0123456789\n \\", max_size=120)

# Segments that exercise every branch of the parsers, joined into keys of any depth.
_segments = st.sampled_from(
    ["", ".", "..", "...", "c", "raw", "rosbag", "frames", "labels", "other", TS, "2025-08-25T08:59:38Z",
     TS + "\n", " " + TS, "2025_02_30T00:00:00Z", "_2025-08-25-08-59-57_0.bag", "_.bag", "_..bag", "x.bag",
     "_2025-08-25-08-59-57_0", "_", "_.", "_..", "1.2.jpg", "1.2.JPG", "1.2.txt", "a\\b", " c", "c\t"]
)
_structured_keys = st.lists(_segments, min_size=0, max_size=13).map("/".join)
_keys = st.one_of(_key_text, _structured_keys, st.text(max_size=60))
_bad_segments = st.sampled_from(["", ".", "..", "a\\b", " x", "x\t", "2025_02_30T00:00:00Z", "other", "x.txt"])
_affixes = st.sampled_from(["\n", " ", "\r\n", "\x00", "/", "\\"])


@st.composite
def _mutated(draw: st.DrawFn, valid_keys: st.SearchStrategy[str]) -> str:
    """A valid key with one segment replaced, extended, dropped or added: the near misses a bucket holds."""
    segments = draw(valid_keys).split("/")
    index = draw(st.integers(0, len(segments) - 1))
    how = draw(st.sampled_from(["replace", "suffix", "prefix", "drop", "insert"]))
    if how == "replace":
        segments[index] = draw(_bad_segments)
    elif how == "suffix":
        segments[index] += draw(_affixes)
    elif how == "prefix":
        segments[index] = draw(_affixes) + segments[index]
    elif how == "drop":
        del segments[index]
    else:
        segments.insert(index, draw(st.sampled_from(["rosbag", "raw", "c", TS])))
    return "/".join(segments)


_valid_raw_keys = st.builds(raw_bag_key, coordinates(), bag_names)
_valid_ml_keys = st.builds(
    ml_file_key,
    coordinates(),
    bag_names.map(lambda name: name[: -len(".bag")]),
    st.sampled_from(["frames", "labels"]),
    st.sampled_from(["1756112584.180734928.jpg", "1756112584.180734928.txt"]),
)


def _assert_safe_coordinate(coord: RunCoordinate) -> None:
    for value in coord.to_path_tuple():
        assert value
        assert value not in (".", "..")
        assert "/" not in value


@given(_keys | _mutated(_valid_raw_keys))
def test_property_parse_raw_key_never_raises_and_never_yields_unsafe_parts(key: str) -> None:
    result = parse_raw_key(key)
    if isinstance(result, RawBagEntry):
        _assert_safe_coordinate(result.coordinate)
        assert result.bag not in ("", ".", "..")
        assert "/" not in result.bag
    else:
        assert result.key == key
        assert result.reason


@given(_keys.map(lambda key: "raw/" + key) | _keys | _mutated(_valid_ml_keys))
def test_property_parse_ml_key_never_raises_and_never_yields_unsafe_parts(key: str) -> None:
    result = parse_ml_key(key)
    if isinstance(result, MLFileEntry):
        _assert_safe_coordinate(result.coordinate)
        for value in (result.bag_dir, result.name):
            assert value not in ("", ".", "..")
            assert "/" not in value
        assert result.kind in ("frames", "labels")
    else:
        assert result.key == key
        assert result.reason


@settings(max_examples=400)
@given(_mutated(_valid_raw_keys))
@example(f"c/r/f/t/l/{TS}\n/rosbag/_2025-08-25-08-59-57_0.bag")
def test_property_parsed_raw_entries_rebuild_their_key_and_coordinate(key: str) -> None:
    result = parse_raw_key(key)
    if isinstance(result, RawBagEntry):
        assert raw_bag_key(result.coordinate, result.bag) == key
        assert RunCoordinate.parse(result.coordinate.to_path_str()) == result.coordinate


@settings(max_examples=400)
@given(_mutated(_valid_ml_keys))
@example(f"raw/c/r/f/t/l/{TS}\n/rosbag/_2025-08-25-08-59-57_0/labels/1756112584.180734928.txt")
def test_property_parsed_ml_entries_rebuild_their_key_and_coordinate(key: str) -> None:
    result = parse_ml_key(key)
    if isinstance(result, MLFileEntry):
        assert ml_file_key(result.coordinate, result.bag_dir, result.kind, result.name) == key
        assert RunCoordinate.parse(result.coordinate.to_path_str()) == result.coordinate


@given(timestamps(), st.text(alphabet="\n\r Z0", max_size=2))
def test_property_accepted_timestamps_survive_the_path_round_trip(case: tuple[str, datetime], tail: str) -> None:
    try:
        coord = make(timestamp=case[0] + tail)
    except CoordinateError:
        return
    assert RunCoordinate.parse(coord.to_path_str()) == coord
