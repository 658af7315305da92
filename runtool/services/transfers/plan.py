"""The plan model: what a transfer will do, file by file, decided before anything moves.

A :class:`TransferPlan` lists every file of one run with its source, target, size, checksum, generation, action
and reason; a :class:`BulkPlan` holds one plan per run of a selection. :class:`TransferPlanner` builds them from
what the bucket and the local roots hold now; what happens to a file already at its destination is decided by
:mod:`runtool.services.conflicts`, as for dataset fetches. Planning writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from runtool.config import RuntoolConfig
from runtool.errors import RuntoolError
from runtool.formatting import format_bytes, format_count, format_count_of, format_os_error, printable
from runtool.models import CoordinateError, Filters, RunCoordinate
from runtool.services.conflicts import CONFLICT_MODES, ConflictMode, decide, regular_file_size
from runtool.services.local_state import LocalStateService
from runtool.storage import (
    MLFileEntry,
    RawBagEntry,
    cloud_to_local_name,
    local_ml_dir,
    local_raw_dir,
    local_to_cloud_name,
    ml_file_key,
    ml_prefix,
    parse_ml_key,
    parse_raw_key,
    raw_bag_key,
    storage_errors,
)
from runtool.storage.checksums import file_crc32c
from runtool.storage.gcs import retry_policy
from runtool.storage.layout import FRAME_SUFFIXES, LABEL_SUFFIX

if TYPE_CHECKING:
    # google-cloud-storage loads with the first client (storage.gcs): the pages import this module for its
    # plan types and would otherwise pay for the client library in every kernel.
    from google.cloud import storage

__all__ = ["BulkPlan", "PlannedFile", "TransferError", "TransferPlan", "TransferPlanner"]


_Bag = TypeVar("_Bag")
"""A bag to select: a cloud object (downloads) or a local file (uploads)."""


class TransferError(RuntoolError):
    """A transfer could not be planned (the files themselves fail one by one, in the result)."""


@dataclass(frozen=True)
class PlannedFile:
    """One file of a plan: what moves where, and why (or why not)."""

    key: str
    """The object key (the source of a download, the destination of an upload)."""
    path: Path
    """The local file (the destination of a download, the source of an upload)."""
    size: int
    crc32c: str
    md5: str | None
    generation: int
    action: Literal["transfer", "skip"]
    reason: str
    replaces: bool = False
    """Whether the transfer replaces a file already at the destination (the reason says why: it differs, or
    ``overwrite`` asked for it); see :mod:`runtool.services.conflicts`."""

    @property
    def name(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "size": self.size,
            "crc32c": self.crc32c,
            "md5": self.md5,
            "generation": self.generation,
            "action": self.action,
            "reason": self.reason,
            "replaces": self.replaces,
        }


@dataclass(frozen=True)
class TransferPlan:
    """A previewable, executable list of files for one run."""

    operation: Literal["raw_download", "ml_download", "raw_upload", "ml_upload"]
    coordinate: RunCoordinate
    bucket: str
    conflict: ConflictMode
    files: tuple[PlannedFile, ...]
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def uploads(self) -> bool:
        return self.operation.endswith("_upload")

    @property
    def to_transfer(self) -> tuple[PlannedFile, ...]:
        return tuple(f for f in self.files if f.action == "transfer")

    @property
    def skipped(self) -> tuple[PlannedFile, ...]:
        return tuple(f for f in self.files if f.action == "skip")

    @property
    def replaced(self) -> tuple[PlannedFile, ...]:
        """The files to transfer that replace one already at their destination (each reason says why)."""
        return tuple(f for f in self.to_transfer if f.replaces)

    @property
    def bytes_to_transfer(self) -> int:
        return sum(f.size for f in self.to_transfer)

    def describe(self) -> str:
        """What Execute will do, e.g. ``Download 14 bags, 6.8 GiB (1 replaced, 2 skipped)``."""
        todo = self.to_transfer
        noun = "bag" if self.operation.startswith("raw") else "file"
        verb = "Upload" if self.uploads else "Download"
        if not todo:
            return f"Nothing to {verb.lower()}: all {format_count(len(self.files))} {noun}s are present"
        text = f"{verb} {format_count(len(todo))} {noun}{'' if len(todo) == 1 else 's'}, "
        text += format_bytes(self.bytes_to_transfer)
        notes = [f"{format_count(len(files))} {word}" for files, word in ((self.replaced, "replaced"),
                                                                          (self.skipped, "skipped")) if files]
        return text + (f" ({', '.join(notes)})" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "coordinate": self.coordinate.to_path_str(),
            "bucket": self.bucket,
            "conflict": self.conflict,
            "created_at": self.created_at.isoformat(),
            "files_to_transfer": len(self.to_transfer),
            "bytes_to_transfer": self.bytes_to_transfer,
            "files_skipped": len(self.skipped),
            "files_replaced": len(self.replaced),
            "files": [f.to_dict() for f in self.files],
        }



@dataclass(frozen=True)
class BulkPlan:
    """One operation over many runs: a plan per run, plus the runs left out and why."""

    operation: str
    plans: tuple[TransferPlan, ...]
    left_out: tuple[tuple[RunCoordinate, str], ...] = ()

    @property
    def files_to_transfer(self) -> int:
        return sum(len(plan.to_transfer) for plan in self.plans)

    @property
    def bytes_to_transfer(self) -> int:
        return sum(plan.bytes_to_transfer for plan in self.plans)

    @property
    def files_replaced(self) -> int:
        """Files to transfer that replace one already at their destination (see :attr:`TransferPlan.replaced`)."""
        return sum(len(plan.replaced) for plan in self.plans)

    def describe(self) -> str:
        """e.g. ``Download 123 files, 4.5 GiB over 7 runs (3 replaced, 2 runs left out)``."""
        verb = "Upload" if self.operation.endswith("_upload") else "Download"
        text = (
            f"{verb} {format_count_of(self.files_to_transfer, 'file')}, {format_bytes(self.bytes_to_transfer)} over "
            f"{format_count_of(sum(1 for p in self.plans if p.to_transfer), 'run')}"
        )
        notes = [f"{format_count(self.files_replaced)} replaced"] if self.files_replaced else []
        notes += [f"{format_count_of(len(self.left_out), 'run')} left out"] if self.left_out else []
        return text + (f" ({', '.join(notes)})" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "files_to_transfer": self.files_to_transfer,
            "bytes_to_transfer": self.bytes_to_transfer,
            "files_replaced": self.files_replaced,
            "plans": [p.to_dict() for p in self.plans],
            "left_out": [{"coordinate": str(c), "reason": r} for c, r in self.left_out],
        }


class TransferPlanner:
    """Plans downloads and uploads of one run or many, against what the bucket and the local roots hold now."""

    def __init__(
        self, config: RuntoolConfig, client_factory: Callable[[], storage.Client], local: LocalStateService
    ) -> None:
        self.config = config
        self._client_factory = client_factory
        self._client: storage.Client | None = None
        self.local = local

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def plan_raw_download(
        self, coord: RunCoordinate, bags: Sequence[str] | None = None, conflict: ConflictMode = "skip"
    ) -> TransferPlan:
        """List the run's bags in the raw bucket now (not from the cache) and decide each file.

        ``bags`` selects bags by cloud name (``_…_0.bag``), local name (``rosbag_…_0.bag``) or index.
        """
        _check_conflict(conflict)
        bucket = self.config.raw_bucket
        prefix = raw_bag_key(coord, "")
        with storage_errors(bucket, "listing"):
            blobs = [
                b
                for b in self.client.list_blobs(bucket, prefix=prefix, retry=retry_policy(self.config.request_retry_s))
                if isinstance(parse_raw_key(b.name), RawBagEntry)  # as the inventory sees it: no anomaly
            ]
        if not blobs:
            raise TransferError(f"No bags for {coord} in the raw bucket `{bucket}`.")
        blobs.sort(key=lambda b: _bag_sort_key(b.name[len(prefix) :]))
        chosen = self._select(blobs, {b.name[len(prefix) :]: b for b in blobs}, bags, coord) if bags else blobs
        target_dir = local_raw_dir(self.config.raw_root, coord)
        files = tuple(
            self._decide(b, target_dir / cloud_to_local_name(b.name[len(prefix) :]), conflict) for b in chosen
        )
        return TransferPlan("raw_download", coord, bucket, conflict, files)

    def plan_ml_download(
        self,
        coord: RunCoordinate,
        bags: Sequence[str] | None = None,
        kinds: Sequence[str] = ("frames", "labels"),
        conflict: ConflictMode = "skip",
    ) -> TransferPlan:
        """Plan the download of a run's ML samples into ``<ml_root>/raw/<coord>/rosbag_<bag>/<kind>/``.

        ``bags`` selects bag folders by cloud (``_…_0``) or local (``rosbag_…_0``) name; ``kinds`` picks
        frames and/or labels. Objects that do not fit the ML layout are left out (they are anomalies).
        """
        _check_conflict(conflict)
        _check_kinds(kinds)
        wanted = {local_to_cloud_name(b) if b.startswith("rosbag_") else b for b in bags or ()}
        bucket = self.config.ml_bucket
        prefix = ml_prefix(coord.to_filters())
        with storage_errors(bucket, "listing"):
            blobs = list(self.client.list_blobs(bucket, prefix=prefix, retry=retry_policy(self.config.request_retry_s)))
        entries = [(blob, parse_ml_key(blob.name)) for blob in blobs]
        chosen = sorted(
            (
                (blob, entry)
                for blob, entry in entries
                if isinstance(entry, MLFileEntry) and entry.kind in kinds and (not wanted or entry.bag_dir in wanted)
            ),
            key=lambda item: item[0].name,
        )
        missing = wanted - {entry.bag_dir for _, entry in chosen}
        if missing:
            raise TransferError(f"{coord} has no ML samples for {', '.join(sorted(missing))}.")
        if not chosen:
            raise TransferError(f"No ML samples for {coord} in the ML bucket `{bucket}` match the selection.")
        root = local_ml_dir(self.config.ml_root, coord)
        files = tuple(
            self._decide(blob, root / cloud_to_local_name(entry.bag_dir) / entry.kind / entry.name, conflict)
            for blob, entry in chosen
        )
        return TransferPlan("ml_download", coord, bucket, conflict, files)

    def plan_raw_upload(
        self, coord: RunCoordinate, bags: Sequence[str] | None = None, conflict: ConflictMode = "skip"
    ) -> TransferPlan:
        """Plan the upload of a run's local bags (``rosbag_*.bag``) to ``<coord>/rosbag/_*.bag``.

        ``bags`` selects bags as for downloads: by local name (``rosbag_…_0.bag``), cloud name (``_…_0.bag``) or
        index (among the local bags, in order).
        """
        folder = local_raw_dir(self.config.raw_root, coord)
        local = sorted((p for p in folder.glob("rosbag_*.bag") if p.is_file()), key=lambda p: _bag_sort_key(p.name))
        if bags:
            by_name = {p.name[len("rosbag") :]: p for p in local}
            local = self._select(local, by_name, bags, coord, "local bag")
        if not local:
            raise TransferError(f"No local bags for {coord} in {folder}.")
        keys = [(p, raw_bag_key(coord, local_to_cloud_name(p.name))) for p in local]
        return self._plan_upload("raw_upload", coord, self.config.raw_bucket, raw_bag_key(coord, ""), keys, conflict)

    def plan_ml_upload(
        self,
        coord: RunCoordinate,
        bags: Sequence[str] | None = None,
        kinds: Sequence[str] = ("frames", "labels"),
        conflict: ConflictMode = "skip",
    ) -> TransferPlan:
        """Plan the upload of a run's local ML samples (``rosbag_<bag>/{frames,labels}/``) to the ML bucket.

        Only frames and labels go up; other files in the export (e.g. per-bag JSON) stay local.
        """
        _check_kinds(kinds)
        root = local_ml_dir(self.config.ml_root, coord)
        wanted = {b if b.startswith("rosbag_") else cloud_to_local_name(b) for b in bags or ()}
        keys: list[tuple[Path, str]] = []
        bag_dirs = sorted(p for p in root.glob("rosbag_*") if p.is_dir()) if root.is_dir() else []
        unknown = wanted - {p.name for p in bag_dirs}
        if unknown:
            raise TransferError(f"{coord} has no local ML samples for {', '.join(sorted(unknown))}.")
        for bag_dir in bag_dirs:
            if wanted and bag_dir.name not in wanted:
                continue
            for kind in kinds:
                suffixes = FRAME_SUFFIXES if kind == "frames" else (LABEL_SUFFIX,)
                for path in sorted((bag_dir / kind).glob("*")):
                    if path.is_file() and path.name.lower().endswith(suffixes) and not path.name.startswith("."):
                        keys.append((path, ml_file_key(coord, local_to_cloud_name(bag_dir.name), kind, path.name)))  # type: ignore[arg-type]
        if not keys:
            raise TransferError(f"No local ML samples for {coord} in {root} match the selection.")
        return self._plan_upload(
            "ml_upload", coord, self.config.ml_bucket, ml_prefix(coord.to_filters()), keys, conflict
        )

    def _plan_upload(
        self,
        operation: Literal["raw_upload", "ml_upload"],
        coord: RunCoordinate,
        bucket: str,
        prefix: str,
        files: list[tuple[Path, str]],
        conflict: ConflictMode,
    ) -> TransferPlan:
        """Decide each upload against what the bucket holds now; the generation seen becomes a precondition."""
        _check_conflict(conflict)
        with storage_errors(bucket, "listing"):
            existing = {
                b.name: b
                for b in self.client.list_blobs(bucket, prefix=prefix, retry=retry_policy(self.config.request_retry_s))
            }
        planned = tuple(self._decide_upload(path, key, existing.get(key), conflict) for path, key in files)
        return TransferPlan(operation, coord, bucket, conflict, planned)

    @staticmethod
    def _select(
        bags_in_order: list[_Bag], by_name: dict[str, _Bag], bags: Sequence[str], coord: RunCoordinate,
        noun: str = "bag",
    ) -> list[_Bag]:
        """The bags ``bags`` names, each by index in ``bags_in_order`` or by name (``by_name`` holds cloud names,
        ``_…_0.bag``; a local ``rosbag_…`` name and one without ``.bag`` are taken too), once each, in that order."""
        chosen: list[_Bag] = []
        for wanted in bags:
            name = wanted
            if wanted.isdigit():
                index = int(wanted)
                if index >= len(bags_in_order):
                    raise TransferError(f"{coord} has {len(bags_in_order)} {noun}s; there is no bag index {index}.")
                chosen.append(bags_in_order[index])
                continue
            if name.startswith("rosbag_"):
                name = name[len("rosbag") :]
            if not name.endswith(".bag"):
                name += ".bag"
            if name not in by_name:
                raise TransferError(f"{coord} has no {noun} named {wanted!r}.")
            chosen.append(by_name[name])
        return list(dict.fromkeys(chosen))

    @staticmethod
    def _decide_upload(path: Path, key: str, blob: storage.Blob | None, conflict: ConflictMode) -> PlannedFile:
        """One upload, decided against the object the bucket holds now (``blob``, None if there is none)."""
        local_crc32c = cache(partial(file_crc32c, path))  # read only when the decision or the upload needs it
        size, target_size = path.stat().st_size, None if blob is None else int(blob.size or 0)
        decision = decide(conflict, size, target_size, lambda: blob is not None and blob.crc32c == local_crc32c(),
                          upload=True, missing="not uploaded")
        crc = local_crc32c() if decision.action == "transfer" else ""
        generation = int(blob.generation or 0) if blob is not None else 0
        return PlannedFile(key, path, size, crc, None, generation, decision.action, decision.reason, decision.replaces)

    @staticmethod
    def _decide(blob: storage.Blob, target: Path, conflict: ConflictMode) -> PlannedFile:
        """One download, decided against the local file at ``target``."""
        size, crc, md5, generation = int(blob.size or 0), blob.crc32c or "", blob.md5_hash, int(blob.generation or 0)
        decision = decide(conflict, size, regular_file_size(target), lambda: bool(crc) and file_crc32c(target) == crc)
        return PlannedFile(blob.name, target, size, crc, md5, generation, decision.action, decision.reason,
                           decision.replaces)

    def plan_bulk(self, operation: str, coords: Sequence[RunCoordinate], **options: Any) -> BulkPlan:
        """A plan per run (``operation`` is ``raw_download``, ``ml_download``, ``raw_upload`` or ``ml_upload``).

        Runs that cannot be planned (no bags, nothing local, a local path the file system refuses, ...) are left
        out with the reason, not fatal. A run listed twice is planned once.
        """
        planners: dict[str, Callable[..., TransferPlan]] = {
            "raw_download": self.plan_raw_download,
            "ml_download": self.plan_ml_download,
            "raw_upload": self.plan_raw_upload,
            "ml_upload": self.plan_ml_upload,
        }
        planner = planners.get(operation)
        if planner is None:
            raise TransferError(f"Unknown operation {operation!r}.")
        plans: list[TransferPlan] = []
        left_out: list[tuple[RunCoordinate, str]] = []
        for coord in dict.fromkeys(coords):
            try:
                plans.append(planner(coord, **options))
            except TransferError as exc:
                left_out.append((coord, str(exc)))
            except OSError as exc:  # one strange object name (too long for the file system, say) spoils one run
                left_out.append((coord, format_os_error(exc)))
        return BulkPlan(operation, tuple(plans), tuple(left_out))

    def plan_export_upload(self, export_id: str, conflict: ConflictMode = "skip") -> BulkPlan:
        """Upload a labelling export: every local ML run under the coordinates listed for ``export_id``."""
        exports = self.local.export_tracking()
        if export_id not in exports:
            known = ", ".join(printable(e) for e in exports) or "none"
            shown = printable(export_id[:60]) + ("…" if len(export_id) > 60 else "")
            raise TransferError(f"Unknown export id '{shown}'; the export tracking file lists: {known}.")
        coords: list[RunCoordinate] = []
        for listed in exports[export_id].coordinates:
            parts = listed.strip("/").split("/")
            try:
                filters = Filters(**dict(zip(RunCoordinate.PARTS, parts, strict=False)))
            except (CoordinateError, TypeError) as exc:
                raise TransferError(f"Export {export_id!r} lists a bad coordinate {listed!r}: {exc}") from exc
            coords.extend(run.coordinate for run in self.local.runs(filters) if run.ml.exists)
        if not coords:
            raise TransferError(f"Export {export_id!r} has no local ML samples under its coordinates.")
        return self.plan_bulk("ml_upload", sorted(set(coords), key=RunCoordinate.sort_key), conflict=conflict)


def _check_conflict(conflict: str) -> None:
    if conflict not in CONFLICT_MODES:
        raise TransferError(f"Unknown conflict mode {conflict!r}; use one of {', '.join(CONFLICT_MODES)}.")


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = set(kinds) - {"frames", "labels"}
    if unknown or not kinds:
        raise TransferError(f"Choose frames and/or labels, not {', '.join(sorted(unknown)) or 'nothing'}.")


def _bag_sort_key(name: str) -> tuple[str, int]:
    """Bags sort by start time, then by split index as a number (``_…_10`` after ``_…_9``)."""
    stem = name[: -len(".bag")]
    head, _, index = stem.rpartition("_")
    return (head, int(index)) if index.isdigit() else (stem, -1)
