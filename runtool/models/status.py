"""Status vocabularies and the per-run state models."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from runtool.models.coordinates import RunCoordinate

__all__ = [
    "EXTRACTION_FILES",
    "CloudMLStatus",
    "CloudRawStatus",
    "DataStatus",
    "ExtractionStatus",
    "LocalMLStatus",
    "LocalRawStatus",
    "NextAction",
    "ProcessingStatus",
    "RunState",
    "SyncStatus",
]

EXTRACTION_FILES: tuple[str, ...] = ("frames.csv", "detections.csv", "tracking.csv", "metadata.yaml")
"""The files whose presence makes a run count as extracted (the legacy rule)."""


class DataStatus(StrEnum):
    """Where a run stands in the per-run pipeline."""

    NOT_DOWNLOADED = "not_downloaded"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    EXTRACTING = "extracting"
    EXTRACTED = "extracted"
    ANALYZING = "analyzing"
    ANALYZED = "analyzed"
    ERROR = "error"


class ProcessingStatus(StrEnum):
    """State of one unit of work (a job, a bag)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    CACHED = "cached"


class SyncStatus(StrEnum):
    """How a run's cloud and local copies compare."""

    SYNCED = "synced"
    CLOUD_ONLY = "cloud_only"
    LOCAL_ONLY = "local_only"
    MISMATCH = "mismatch"
    MISSING = "missing"

    @property
    def label(self) -> str:
        """The words the pages show next to the colour."""
        return _SYNC_LABELS[self]


_SYNC_LABELS = {
    SyncStatus.SYNCED: "synced",
    SyncStatus.CLOUD_ONLY: "not downloaded",
    SyncStatus.LOCAL_ONLY: "local only",
    SyncStatus.MISMATCH: "mismatch",
    SyncStatus.MISSING: "missing",
}


class NextAction(StrEnum):
    """The one next step of the per-run pipeline."""

    DOWNLOAD = "download"
    EXTRACT = "extract"
    ANALYZE = "analyze"
    COMPLETE = "complete"


class _BagSet:
    """Shared views of a ``bag_sizes`` mapping (bag file name → bytes)."""

    bag_sizes: dict[str, int]

    @property
    def exists(self) -> bool:
        return bool(self.bag_sizes)

    @property
    def bag_count(self) -> int:
        return len(self.bag_sizes)

    @property
    def total_size(self) -> int:
        return sum(self.bag_sizes.values())

    def _bag_dict(self) -> dict[str, object]:
        return {"exists": self.exists, "bag_count": self.bag_count, "total_size": self.total_size,
                "bag_sizes": dict(sorted(self.bag_sizes.items()))}


class _SampleSet:
    """Shared views of per-bag-dir ``frames`` and ``labels`` counts."""

    frames: dict[str, int]
    labels: dict[str, int]
    total_bytes: int

    @property
    def exists(self) -> bool:
        return bool(self.frames) or bool(self.labels)

    @property
    def frame_count(self) -> int:
        return sum(self.frames.values())

    @property
    def label_count(self) -> int:
        """Labelled samples: the sample count used for coverage."""
        return sum(self.labels.values())

    def _sample_dict(self) -> dict[str, object]:
        return {"exists": self.exists, "frame_count": self.frame_count, "label_count": self.label_count,
                "total_bytes": self.total_bytes, "frames": self.frames, "labels": self.labels}


@dataclass(frozen=True)
class CloudRawStatus(_BagSet):
    """The run's bags in the raw bucket (cloud names, e.g. ``_2025-08-25-08-59-57_0.bag``)."""

    bag_sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return self._bag_dict()


@dataclass(frozen=True)
class CloudMLStatus(_SampleSet):
    """The run's ML samples in the ML bucket, per cloud bag dir (``_2025-08-25-08-59-57_0``)."""

    frames: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        return self._sample_dict()


@dataclass(frozen=True)
class LocalRawStatus(_BagSet):
    """The run's bags in the local raw root (local names, e.g. ``rosbag_2025-08-25-08-59-57_0.bag``)."""

    path: str = ""
    bag_sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, **self._bag_dict()}


@dataclass(frozen=True)
class LocalMLStatus(_SampleSet):
    """The run's ML samples in the local ML root, per local bag dir (``rosbag_…``)."""

    path: str = ""
    frames: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0
    other_files: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, **self._sample_dict(), "other_files": self.other_files}


@dataclass(frozen=True)
class ExtractionStatus:
    """Whether the run's processed folder holds a complete extraction (and an analysis)."""

    path: str = ""
    present: tuple[str, ...] = ()
    analyzed: bool = False

    @property
    def extracted(self) -> bool:
        return all(name in self.present for name in EXTRACTION_FILES)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name in EXTRACTION_FILES if name not in self.present)

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "extracted": self.extracted, "analyzed": self.analyzed,
                "present": list(self.present), "missing": list(self.missing)}


@dataclass(frozen=True)
class RunState:
    """Everything known about one run, cloud and local, with the pipeline's next step."""

    coordinate: RunCoordinate
    cloud_raw: CloudRawStatus
    cloud_ml: CloudMLStatus
    local_raw: LocalRawStatus
    local_ml: LocalMLStatus
    extraction: ExtractionStatus
    raw_sync: SyncStatus
    ml_sync: SyncStatus
    issues: tuple[str, ...] = ()
    differing_bags: tuple[str, ...] = ()
    """Cloud names of the bags whose local copy has another size than the object: a bad or partial file."""
    missing_bags: tuple[str, ...] = ()
    """Cloud names of the bags with no local copy while others of the run have one: a partial download."""

    @property
    def pipeline_status(self) -> DataStatus:
        if self.extraction.analyzed and self.extraction.extracted:
            return DataStatus.ANALYZED
        if self.extraction.extracted:
            return DataStatus.EXTRACTED
        if self.local_raw.exists:
            return DataStatus.DOWNLOADED
        return DataStatus.NOT_DOWNLOADED

    @property
    def next_action(self) -> NextAction:
        """The pipeline's next step; a local bag of the wrong size is downloaded again, and the bags missing from a
        partial local copy are downloaded, before anything else: extracting or analysing then would read a broken
        file or only part of the run."""
        if (self.differing_bags or self.missing_bags) and self.cloud_raw.exists:
            return NextAction.DOWNLOAD
        return {
            DataStatus.NOT_DOWNLOADED: NextAction.DOWNLOAD,
            DataStatus.DOWNLOADED: NextAction.EXTRACT,
            DataStatus.EXTRACTED: NextAction.ANALYZE,
        }.get(self.pipeline_status, NextAction.COMPLETE)

    @property
    def ready_for_analysis(self) -> bool:
        return self.extraction.extracted

    def to_dict(self) -> dict[str, object]:
        return {
            "coordinate": self.coordinate.to_dict(),
            "cloud_raw": self.cloud_raw.to_dict(),
            "cloud_ml": self.cloud_ml.to_dict(),
            "local_raw": self.local_raw.to_dict(),
            "local_ml": self.local_ml.to_dict(),
            "extraction": self.extraction.to_dict(),
            "raw_sync": self.raw_sync.value,
            "ml_sync": self.ml_sync.value,
            "issues": list(self.issues),
            "differing_bags": list(self.differing_bags),
            "missing_bags": list(self.missing_bags),
            "pipeline_status": self.pipeline_status.value,
            "next_action": self.next_action.value,
            "ready_for_analysis": self.ready_for_analysis,
        }
