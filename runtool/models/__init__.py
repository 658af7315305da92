"""Dataclasses and enums: the contracts between storage, services, the CLI and the pages."""

from __future__ import annotations

from runtool.models.coordinates import LEVELS, CoordinateError, Filters, RunCoordinate, parse_timestamp
from runtool.models.coverage import (
    AggregatedTemporalData,
    CoveragePoint,
    CoverageSettings,
    CoverageStatistics,
    DayCoverage,
    LaserBoxDay,
    LaserBoxStats,
    RowSequence,
    TemporalData,
)
from runtool.models.serialize import to_jsonable
from runtool.models.status import (
    EXTRACTION_FILES,
    CloudMLStatus,
    CloudRawStatus,
    DataStatus,
    ExtractionStatus,
    LocalMLStatus,
    LocalRawStatus,
    NextAction,
    ProcessingStatus,
    RunState,
    SyncStatus,
)

__all__ = [
    "EXTRACTION_FILES",
    "LEVELS",
    "AggregatedTemporalData",
    "CloudMLStatus",
    "CloudRawStatus",
    "CoordinateError",
    "CoveragePoint",
    "CoverageSettings",
    "CoverageStatistics",
    "DataStatus",
    "DayCoverage",
    "ExtractionStatus",
    "Filters",
    "LaserBoxDay",
    "LaserBoxStats",
    "LocalMLStatus",
    "LocalRawStatus",
    "NextAction",
    "ProcessingStatus",
    "RowSequence",
    "RunCoordinate",
    "RunState",
    "SyncStatus",
    "TemporalData",
    "parse_timestamp",
    "to_jsonable",
]
