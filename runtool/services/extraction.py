"""Extraction of a downloaded run: its bags → the processed folder, replaced atomically.

The output is built in a temporary folder beside the target (``<timestamp>.tmp-<random>``) and moved into
place only when complete. A previous extraction is renamed aside, the new one renamed in, and only then
is the old one deleted, so a failure or a cancel never leaves a half-written folder at the final path and
never loses a good previous output. Replacing the whole folder also drops any analysis made from the old
output, which would otherwise go stale (legacy-dashboard.md §10, item 16).
"""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError, RuntoolError, first_and_more
from runtool.extract.outputs import (
    OUTPUT_FILES,
    BagOutcome,
    ExtractionProgress,
    ExtractionStage,
    OutputError,
    RunMetadata,
    extract_bags,
)
from runtool.extract.reader import find_bags
from runtool.files import LockWaitStopped, exclusive_lock
from runtool.models import RunCoordinate
from runtool.services.local_state import LocalStateService
from runtool.storage import local_raw_dir, processed_dir, run_lock_path

__all__ = [
    "BACKENDS",
    "ExtractionCancelled",
    "ExtractionError",
    "ExtractionProgress",
    "ExtractionResult",
    "ExtractionService",
    "ExtractionStage",
]

BACKENDS: tuple[str, ...] = ("local", "docker")
_DOCKER_MODULE = "runtool.extract.docker_backend"


class ExtractionError(RuntoolError):
    """A run could not be extracted; any previous extraction output is kept."""


class ExtractionCancelled(ExtractionError):
    """The extraction was cancelled; any previous extraction output is kept."""


@dataclass(frozen=True)
class ExtractionResult:
    """What an extraction produced: per-bag outcomes, row counts, time taken and where the output is."""

    coordinate: RunCoordinate
    output_dir: Path
    backend: str
    bags: tuple[BagOutcome, ...]
    seconds: float
    bag_bytes: int
    """Size of the bags that were extracted."""
    warnings: tuple[str, ...] = ()

    def _total(self, count: str) -> int:
        return sum(int(getattr(bag, count)) for bag in self.bags)

    @property
    def frames(self) -> int:
        return self._total("frames")

    @property
    def detections(self) -> int:
        return self._total("detections")

    @property
    def tracks(self) -> int:
        return self._total("tracks")

    @property
    def detection_objects(self) -> int:
        return self._total("detection_objects")

    @property
    def tracked_objects(self) -> int:
        return self._total("tracked_objects")

    @property
    def bags_ok(self) -> tuple[str, ...]:
        return tuple(bag.name for bag in self.bags if bag.ok)

    @property
    def bags_failed(self) -> tuple[str, ...]:
        return tuple(bag.name for bag in self.bags if not bag.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "coordinate": self.coordinate.to_dict(),
            "output_dir": str(self.output_dir),
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
            "bag_bytes": self.bag_bytes,
            "frames": self.frames,
            "detections": self.detections,
            "tracks": self.tracks,
            "detection_objects": self.detection_objects,
            "tracked_objects": self.tracked_objects,
            "bags_ok": list(self.bags_ok),
            "bags_failed": list(self.bags_failed),
            "bags": [bag.to_dict() for bag in self.bags],
            "warnings": list(self.warnings),
        }


class ExtractionService:
    """Extracts downloaded runs into the processed root, in-process or in a Docker container."""

    def __init__(self, config: RuntoolConfig, local: LocalStateService, read_only: bool = False) -> None:
        self.config = config
        self.local = local
        self.read_only = read_only

    def lock_path(self, coord: RunCoordinate) -> Path:
        """The file locked while the run is extracted: ``<data_dir>/.runtool/locks/<coord>.extract.lock``."""
        return run_lock_path(self.config.data_dir, coord, "extract")

    def bags(self, coord: RunCoordinate) -> list[Path]:
        """The run's local bags, in extraction order."""
        return find_bags(local_raw_dir(self.config.raw_root, coord))

    def output_dir(self, coord: RunCoordinate) -> Path:
        return processed_dir(self.config.processed_root, coord)

    def metadata(self, coord: RunCoordinate) -> RunMetadata | None:
        """The run's ``metadata.yaml`` (per-bag outcomes), or None when it has not been extracted."""
        path = self.output_dir(coord)
        return RunMetadata.read(path) if (path / "metadata.yaml").is_file() else None

    def extract(
        self,
        coord: RunCoordinate,
        backend: str = "local",
        progress: Callable[[ExtractionProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ExtractionResult:
        """Extract the run's bags and replace its processed folder with the new output.

        Bags that cannot be read are recorded as failed in ``metadata.yaml`` (their rows left out) and
        the others are extracted. ``progress`` hears about every bag and every few thousand messages;
        ``cancel`` is checked at the same points.

        Raises:
            ReadOnlyError: the services run read-only.
            ExtractionCancelled: ``cancel`` was set; the previous output is untouched.
            ExtractionError: no bags, an unknown or unavailable backend, every bag failed, or the output
                could not be written; the previous output is untouched.
        """
        if self.read_only:
            raise ReadOnlyError("Extracting runs is not allowed in read-only mode.")
        if backend not in BACKENDS:
            raise ExtractionError(f"Unknown extraction backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
        bags = self.bags(coord)
        if not bags:
            raise ExtractionError(f"No bags downloaded for {coord}; download them first.")
        with ExitStack() as held:
            # A lock file, not a lock in this process: two pages (two kernels) or a page and the command line
            # extracting one run at once both did the work, and the page that finished first then showed its
            # analysis as out of date.
            try:
                held.enter_context(exclusive_lock(self.lock_path(coord), timeout=0))
            except LockWaitStopped:
                raise ExtractionError(f"{coord} is already being extracted (by another page or command); "
                                      "wait for it to end.") from None
            except OSError as exc:
                raise ExtractionError(f"Cannot lock {coord} for the extraction: {exc}") from exc
            return self._extract(coord, bags, backend, progress, cancel)

    def _extract(
        self,
        coord: RunCoordinate,
        bags: list[Path],
        backend: str,
        progress: Callable[[ExtractionProgress], None] | None,
        cancel: threading.Event | None,
    ) -> ExtractionResult:
        started = time.perf_counter()
        final = self.output_dir(coord)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=final.parent))
        except OSError as exc:
            raise ExtractionError(f"Cannot create the output folder for {coord}: {exc}") from exc
        try:
            if backend == "docker":
                metadata = self._run_docker(coord, tmp, progress, cancel)
            else:
                metadata = self._run_local(coord, bags, tmp, progress, cancel)
            if not metadata.bags_ok:
                raise _unreadable(coord, metadata)
            old = _swap_in(tmp, final)
        except BaseException as exc:
            _remove(tmp, exc)
            raise
        warnings: list[str] = []
        if old is not None:
            try:
                shutil.rmtree(old)
            except OSError as exc:
                warnings.append(f"The new output is in place, but the previous one could not be deleted: {exc}")
        self.local.refresh_run(coord)
        return ExtractionResult(
            coordinate=coord,
            output_dir=final,
            backend=backend,
            bags=metadata.bags,
            seconds=time.perf_counter() - started,
            bag_bytes=sum(bag.size_bytes or 0 for bag in metadata.bags if bag.ok),
            warnings=tuple(warnings),
        )

    def _run_local(
        self,
        coord: RunCoordinate,
        bags: list[Path],
        tmp: Path,
        progress: Callable[[ExtractionProgress], None] | None,
        cancel: threading.Event | None,
    ) -> RunMetadata:
        def report(event: ExtractionProgress) -> None:
            if cancel is not None and cancel.is_set():
                raise ExtractionCancelled(f"Extraction of {coord} cancelled; the previous output is kept.")
            if progress is not None:
                progress(event)

        try:
            return extract_bags(bags, tmp, coord.timestamp, self.config.topics, backend="local", progress=report,
                                max_chunk_bytes=self.config.max_chunk_bytes)
        except OutputError as exc:
            raise ExtractionError(f"Extraction of {coord} failed: {exc}") from exc

    def _run_docker(
        self,
        coord: RunCoordinate,
        tmp: Path,
        progress: Callable[[ExtractionProgress], None] | None,
        cancel: threading.Event | None,
    ) -> RunMetadata:
        try:
            backend = importlib.import_module(_DOCKER_MODULE)
        except ModuleNotFoundError as exc:
            missing = "it is not part of this installation" if exc.name == _DOCKER_MODULE else (
                f"it needs the Python package {exc.name!r}")
            raise ExtractionError(f"The Docker extraction backend is not available: {missing}.") from exc

        def on_line(line: Mapping[str, Any]) -> None:
            if progress is not None:
                progress(ExtractionProgress.from_dict(line))

        try:
            backend.run_in_docker(
                bags_dir=local_raw_dir(self.config.raw_root, coord),
                out_dir=tmp,
                timestamp=coord.timestamp,
                topics=dict(self.config.topics),
                progress=on_line,
                cancel=cancel,
                max_chunk_bytes=self.config.max_chunk_bytes,
            )
        except RuntoolError as exc:
            if cancel is not None and cancel.is_set():
                raise ExtractionCancelled(f"Extraction of {coord} cancelled; the previous output is kept.") from exc
            raise ExtractionError(f"Extraction of {coord} in Docker failed: {exc}") from exc
        if cancel is not None and cancel.is_set():
            raise ExtractionCancelled(f"Extraction of {coord} cancelled; the previous output is kept.")
        missing_files = [name for name in OUTPUT_FILES if not (tmp / name).is_file()]
        if missing_files:
            raise ExtractionError(
                f"The Docker extraction of {coord} did not write {', '.join(missing_files)}; the previous output "
                "is kept."
            )
        try:
            metadata = replace(RunMetadata.read(tmp), backend="docker")
            metadata.write(tmp)
        except (OutputError, OSError) as exc:
            raise ExtractionError(f"The Docker extraction of {coord} left unusable metadata: {exc}") from exc
        return metadata


def _unreadable(coord: RunCoordinate, metadata: RunMetadata) -> ExtractionError:
    """The error of a run none of whose bags could be read: a sentence naming the first bag and its reason (a run
    may have hundreds), every bag in its details."""
    first, details = first_and_more([(bag.name, bag.error or "no error recorded") for bag in metadata.bags])
    error = ExtractionError(
        f"None of the {len(metadata.bags)} bags of {coord} could be read, so the previous output is kept: {first}.")
    error.details = details
    return error


def _swap_in(new: Path, final: Path) -> Path | None:
    """Rename ``new`` to ``final``; an existing ``final`` is renamed aside first and returned for deletion.

    Both renames stay within one folder, so each is atomic: ``final`` is at every moment either the old
    complete output, briefly absent, or the new complete output.
    """
    if not final.exists():
        os.rename(new, final)
        return None
    old = final.with_name(f"{final.name}.old-{secrets.token_hex(4)}")
    os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(old, final)
        raise
    return old


def _remove(folder: Path, error: BaseException) -> None:
    """Delete a temporary folder after ``error``; a failed cleanup is noted on that error, not hidden."""
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        error.add_note(f"The temporary folder {folder} could not be removed: {exc}")
