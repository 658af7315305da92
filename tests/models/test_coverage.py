"""RowSequence: items built from rows when read."""

from __future__ import annotations

import pytest

from runtool.models import RowSequence, RunCoordinate, to_jsonable

RUN = "client_a/region_1/field_1/TW_1/LB_0001/2025_08_25T08:59:38Z"


def test_items_are_built_only_when_read() -> None:
    built: list[int] = []

    def make(i: int) -> int:
        built.append(i)
        return i * 10

    rows = RowSequence(100_000, make)
    assert len(rows) == 100_000 and built == []
    assert rows[0] == 0 and rows[-1] == 999_990 and rows[:3] == (0, 10, 20)
    assert built == [0, 99_999, 0, 1, 2]
    with pytest.raises(IndexError):
        rows[100_000]
    with pytest.raises(IndexError):
        rows[-100_001]


def test_it_compares_hashes_and_serialises_like_a_tuple() -> None:
    rows = RowSequence(3, lambda i: i + 1)
    assert rows == (1, 2, 3) and rows == [1, 2, 3] and rows != (1, 2) and list(rows) == [1, 2, 3]
    assert hash(rows) == hash((1, 2, 3))
    assert to_jsonable({"rows": rows}) == {"rows": [1, 2, 3]}
    assert RowSequence(0, lambda i: i) == ()


def test_checked_parts_make_the_same_coordinate_as_a_validated_one() -> None:
    trusted = RunCoordinate.from_checked_parts(*RUN.split("/"))
    assert trusted == RunCoordinate.parse(RUN) and hash(trusted) == hash(RunCoordinate.parse(RUN))
    assert str(trusted) == RUN and trusted.start_time == RunCoordinate.parse(RUN).start_time
