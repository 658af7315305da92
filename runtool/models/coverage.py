"""Coverage results: per-run timelines, per-day aggregates and summary statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar, overload

from runtool.models.coordinates import Filters, RunCoordinate

__all__ = [
    "AggregatedTemporalData",
    "CoveragePoint",
    "CoverageSettings",
    "CoverageStatistics",
    "DayCoverage",
    "LaserBoxDay",
    "LaserBoxStats",
    "RowSequence",
    "TemporalData",
]

T = TypeVar("T")


class RowSequence(Sequence[T]):
    """A read-only sequence whose items are built from a result table's row when they are read.

    A fleet-wide view can hold 100,000 rows; building a model object per row up front costs seconds, while a page
    shows a count and a few hundred of them.
    """

    def __init__(self, length: int, make: Callable[[int], T]) -> None:
        self._length = length
        self._make = make

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self._make(i) for i in range(self._length)[index])
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"row {index} of {self._length}")
        return self._make(position)

    def __iter__(self) -> Iterator[T]:
        return (self._make(i) for i in range(self._length))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RowSequence({self._length} rows)"


@dataclass(frozen=True)
class CoverageSettings:
    """The two knobs of the coverage model."""

    expected_samples_per_bag: float = 17.0
    under_labelled_pct: float = 80.0

    def __post_init__(self) -> None:
        if not self.expected_samples_per_bag > 0:
            raise ValueError("expected samples per bag must be greater than 0")
        if not 0 <= self.under_labelled_pct <= 100:
            raise ValueError("the under-labelled threshold must be between 0 and 100 %")


@dataclass(frozen=True)
class CoveragePoint:
    """One run on a timeline. ``coverage_pct`` is None when the run has no raw bags."""

    coordinate: RunCoordinate
    start_time: datetime
    raw_bags: int
    ml_frames: int
    ml_labels: int
    coverage_pct: float | None
    under_labelled: bool

    @property
    def ml_only(self) -> bool:
        """Labelled samples exist but the raw bags do not: flagged, never counted as covered."""
        return self.raw_bags == 0 and (self.ml_labels > 0 or self.ml_frames > 0)


@dataclass(frozen=True)
class TemporalData:
    """Runs of a selection in start-time order (the single-laser-box view)."""

    filters: Filters
    settings: CoverageSettings
    points: Sequence[CoveragePoint]


@dataclass(frozen=True)
class DayCoverage:
    """Totals of one UTC calendar day; days without runs have ``runs == 0`` and no coverage."""

    day: date
    runs: int
    raw_bags: int
    ml_frames: int
    ml_labels: int
    coverage_pct: float | None
    laser_boxes: int


@dataclass(frozen=True)
class LaserBoxDay:
    """One cell of the fleet heatmap: a laser box on a day it recorded.

    ``only_run`` is the day's run when the laser box recorded exactly one that day (a cell can open it).
    """

    lb_key: str
    day: date
    raw_bags: int
    ml_labels: int
    coverage_pct: float | None
    runs: int = 1
    only_run: RunCoordinate | None = None


@dataclass(frozen=True)
class AggregatedTemporalData:
    """Per-day totals over every laser box of a selection, on a gapless calendar."""

    filters: Filters
    settings: CoverageSettings
    days: tuple[DayCoverage, ...]
    cells: Sequence[LaserBoxDay]

    @property
    def active_days(self) -> int:
        return sum(1 for d in self.days if d.runs > 0)


@dataclass(frozen=True)
class CoverageStatistics:
    """Summary of a selection.

    ``overall_coverage_pct`` relates the labels of runs that have raw bags to what those bags should
    yield; ``average_coverage_pct`` is the mean of per-run coverage. ML-only runs are counted apart.
    """

    total_runs: int
    runs_with_bags: int
    total_bags: int
    total_frames: int
    total_labels: int
    expected_samples: float
    overall_coverage_pct: float | None
    average_coverage_pct: float | None
    under_labelled: Sequence[CoveragePoint]
    ml_only_runs: int
    average_bags_per_run: float | None
    average_labels_per_run: float | None


@dataclass(frozen=True)
class LaserBoxStats:
    """Totals of one laser box (``lb_key`` is ``cid/regionid/fieldid/twid/lbid``)."""

    lb_key: str
    lbid: str
    runs: int
    total_bags: int
    total_frames: int
    total_labels: int
    coverage_pct: float | None
    active_days: int
    avg_bags_per_day: float | None
    avg_labels_per_day: float | None
