"""Dataset fetch: turn a fleet selection into a YOLO training folder under ``<ml_root>/trainings/<name>/``.

Planning reads the inventory (which runs, frames and labels exist) and the label contents (needed to reject
malformed labels and to filter by class). Label bytes are cached by key and generation under
``<ml_root>/trainings/.labels-cache/`` so that planning the same selection again costs no downloads.

Executing is incremental: a file whose bytes already have the planned CRC32C is kept, only missing files are
downloaded (parallel, verified, temp file + rename, through the transfer engine), files of samples no longer
selected are deleted, and ``manifest.json`` is rewritten atomically last. Re-running the same plan therefore
downloads nothing, and an interrupted run never leaves a half-written file at a final path.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import yaml
from google.cloud import storage

from runtool.errors import ReadOnlyError, RuntoolError
from runtool.files import write_atomic
from runtool.formatting import format_bytes, format_count
from runtool.models import Filters, RunCoordinate
from runtool.services.inventory import COORD_COLUMNS
from runtool.services.transfers import PlannedFile, TransferProgress
from runtool.storage import ml_file_key, storage_errors
from runtool.storage.checksums import Crc32cChecker, file_crc32c
from runtool.storage.gcs import retry_policy

if TYPE_CHECKING:  # the container builds this service, so importing it at run time would be circular
    from runtool.services.container import ServiceContainer

__all__ = [
    "DatasetError",
    "DatasetOptions",
    "DatasetPlan",
    "DatasetResult",
    "DatasetSample",
    "DatasetService",
    "parse_yolo_label",
]

Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")
TRAININGS = "trainings"
LABELS_CACHE = ".labels-cache"
MANIFEST = "manifest.json"


class DatasetError(RuntoolError):
    """A dataset fetch cannot be planned or executed as asked (bad options or name, read-only mode)."""


@dataclass(frozen=True)
class DatasetOptions:
    """What goes into a dataset; recorded in the manifest so a dataset says how it was made."""

    since: date | None = None
    """First run start day (UTC), inclusive."""
    until: date | None = None
    """Last run start day (UTC), inclusive."""
    min_coverage_pct: float | None = None
    """Runs below are excluded; runs without raw bags have no coverage and are excluded when set."""
    labelled_only: bool = True
    """True: a sample is a frame whose label exists. False: every frame (an empty label for unlabelled ones)."""
    classes: tuple[int, ...] | None = None
    """Keep only samples whose label has at least one box of these classes."""
    max_samples: int | None = None
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction <= 1:
            raise DatasetError(f"The validation fraction must be between 0 and 1, not {self.val_fraction}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise DatasetError(f"The maximum number of samples must be at least 1, not {self.max_samples}.")
        if self.since and self.until and self.since > self.until:
            raise DatasetError(f"The date range is empty: since {self.since} is after until {self.until}.")
        if self.classes is not None and (not self.classes or min(self.classes) < 0):
            raise DatasetError("The class filter needs one or more class ids ≥ 0.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        data["until"] = self.until.isoformat() if self.until else None
        data["classes"] = list(self.classes) if self.classes is not None else None
        return data


@dataclass(frozen=True)
class DatasetSample:
    """One frame and its label: where they come from (key, generation, CRC32C) and where they go."""

    coordinate: RunCoordinate
    bag: str
    frame_key: str
    frame_generation: int
    frame_crc32c: str
    frame_size: int
    label_key: str | None
    """None: an unlabelled frame (all-frames mode); an empty label file is written for it."""
    label_generation: int
    label_crc32c: str
    label_size: int
    classes: tuple[int, ...]
    split: Split
    image_name: str
    label_name: str

    @property
    def image_path(self) -> str:
        return f"images/{self.split}/{self.image_name}"

    @property
    def label_path(self) -> str:
        return f"labels/{self.split}/{self.label_name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "coordinate": self.coordinate.to_path_str(),
            "bag": self.bag,
            "split": self.split,
            "frame": {
                "key": self.frame_key,
                "generation": self.frame_generation,
                "crc32c": self.frame_crc32c,
                "size": self.frame_size,
                "target": self.image_path,
            },
            "label": {
                "key": self.label_key,
                "generation": self.label_generation,
                "crc32c": self.label_crc32c,
                "size": self.label_size,
                "target": self.label_path,
            },
            "classes": list(self.classes),
        }


@dataclass(frozen=True)
class DatasetPlan:
    """Every sample of the dataset to be, the labels rejected and why, and the totals for a preview."""

    name: str
    root: Path
    options: DatasetOptions
    filters: Filters
    samples: tuple[DatasetSample, ...]
    rejected: tuple[tuple[str, str], ...]
    """(label key, reason) for labels that do not parse as YOLO; their samples are skipped."""
    runs_excluded: int

    @property
    def runs(self) -> int:
        return len({s.coordinate for s in self.samples})

    def count(self, split: Split) -> int:
        return sum(1 for s in self.samples if s.split == split)

    def runs_in(self, split: Split) -> set[RunCoordinate]:
        return {s.coordinate for s in self.samples if s.split == split}

    @property
    def bytes(self) -> int:
        return sum(s.frame_size + s.label_size for s in self.samples)

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(sorted({c for s in self.samples for c in s.classes}))

    def describe(self) -> str:
        """e.g. ``12 samples from 3 runs (train 9, val 3), 1.2 MiB; 1 label rejected``."""
        text = (
            f"{format_count(len(self.samples))} samples from {format_count(self.runs)} runs "
            f"(train {format_count(self.count('train'))}, val {format_count(self.count('val'))}), "
            f"{format_bytes(self.bytes)}"
        )
        return text + (f"; {format_count(len(self.rejected))} labels rejected" if self.rejected else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root),
            "filters": self.filters.to_dict(),
            "options": self.options.to_dict(),
            "runs": self.runs,
            "runs_excluded": self.runs_excluded,
            "samples": {"train": self.count("train"), "val": self.count("val"), "total": len(self.samples)},
            "bytes": self.bytes,
            "rejected": [{"key": key, "reason": reason} for key, reason in self.rejected],
        }


@dataclass(frozen=True)
class DatasetResult:
    """What an execution changed on disk; ``ok`` only when the folder now matches the plan."""

    plan: DatasetPlan
    downloaded: int
    written: int
    """Empty labels written for unlabelled frames."""
    kept: int
    removed: int
    failed: tuple[tuple[str, str], ...]
    """(target path, error) per file that could not be fetched."""
    cancelled: bool
    bytes: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.cancelled and not self.failed

    def summary(self) -> str:
        """One line, e.g. ``3 downloaded, 0 empty labels, 17 kept, 2 removed, 0 failed (1.2 KiB in 0.3 s)``."""
        text = (
            f"{format_count(self.downloaded)} downloaded, {format_count(self.written)} empty labels, "
            f"{format_count(self.kept)} kept, {format_count(self.removed)} removed, "
            f"{format_count(len(self.failed))} failed ({format_bytes(self.bytes)} in {self.seconds:.1f} s)"
        )
        return text + (", cancelled: the manifest was not updated" if self.cancelled else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "plan": self.plan.to_dict(),
            "downloaded": self.downloaded,
            "written": self.written,
            "kept": self.kept,
            "removed": self.removed,
            "failed": [{"path": path, "error": error} for path, error in self.failed],
            "cancelled": self.cancelled,
        }


def parse_yolo_label(data: bytes) -> tuple[int, ...] | str:
    """The class ids of a YOLO label (``class cx cy w h`` per line, floats in [0, 1]), or why it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    found: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            return f"line {number}: {len(fields)} fields, expected 5 (class cx cy w h)"
        if not fields[0].isdigit():
            return f"line {number}: class {fields[0]!r} is not a non-negative integer"
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            return f"line {number}: box values {' '.join(fields[1:])!r} are not numbers"
        if not all(math.isfinite(v) and 0 <= v <= 1 for v in values):
            return f"line {number}: box values must lie in [0, 1]"
        found.append(int(fields[0]))
    return tuple(found)


class DatasetService:
    """Plans and executes dataset fetches over the inventory and the transfer engine."""

    def __init__(self, services: ServiceContainer, workers: int = 8) -> None:
        self.services = services
        self.config = services.config
        self.workers = workers
        self._client: storage.Client | None = None

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = self.services.make_client()
        return self._client

    def dataset_root(self, name: str) -> Path:
        """``<ml_root>/trainings/<name>``; a name must be one plain folder name (no paths, no hidden folders)."""
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise DatasetError(f"Bad dataset name {name!r}: use a plain folder name (no '/', not starting with '.').")
        return self.config.ml_root / TRAININGS / name

    # -- planning ------------------------------------------------------------------------------

    def plan_dataset_fetch(self, name: str, filters: Filters, options: DatasetOptions) -> DatasetPlan:
        """Choose runs (filters, dates, coverage), pair frames with labels, check labels, split by run, sample."""
        root = self.dataset_root(name)
        runs = self._select_runs(filters, options)
        entries = self.services.inventory.snapshot.entries
        ml = entries[(entries["role"] == "ml") & entries["kind"].isin(["frame", "label"])]
        wanted = {tuple(run) for run in runs[list(COORD_COLUMNS)].astype(str).itertuples(index=False)}
        coords = ml[list(COORD_COLUMNS)].astype(str).apply(tuple, axis=1) if len(ml) else pd.Series(dtype=object)
        ml = ml[coords.isin(wanted).to_numpy()] if len(ml) else ml
        frames, labels = _pair(ml)
        chosen = [(f, labels.get(_stem_key(f))) for f in frames]
        if options.labelled_only:
            chosen = [(f, lab) for f, lab in chosen if lab is not None]
        contents = self._label_contents([lab for _, lab in chosen if lab is not None])
        rejected: list[tuple[str, str]] = []
        kept: list[tuple[dict[str, Any], dict[str, Any] | None, tuple[int, ...]]] = []
        for frame, label in chosen:
            classes: tuple[int, ...] = ()
            if label is not None:
                parsed = parse_yolo_label(contents[label["key"]])
                if isinstance(parsed, str):
                    rejected.append((label["key"], parsed))
                    continue
                classes = parsed
            if options.classes is not None and not set(classes) & set(options.classes):
                continue
            kept.append((frame, label, classes))
        splits = _split_runs({frame["coord"] for frame, _, _ in kept}, options.val_fraction, options.seed)
        if options.max_samples is not None and len(kept) > options.max_samples:
            picked = sorted(random.Random(options.seed).sample(range(len(kept)), options.max_samples))
            kept = [kept[i] for i in picked]
        samples = tuple(_sample(frame, label, classes, splits[frame["coord"]]) for frame, label, classes in kept)
        excluded = len(self.services.data_state.runs(filters, self.services.coverage_settings)) - len(runs)
        return DatasetPlan(name, root, options, filters, samples, tuple(rejected), excluded)

    def _select_runs(self, filters: Filters, options: DatasetOptions) -> pd.DataFrame:
        runs = self.services.data_state.runs(filters, self.services.coverage_settings)
        day = runs["start_time"].dt.date
        mask = pd.Series(True, index=runs.index)
        if options.since is not None:
            mask &= day >= options.since
        if options.until is not None:
            mask &= day <= options.until
        if options.min_coverage_pct is not None:
            # NaN (no raw bags, so no coverage) compares False and is excluded, as documented.
            mask &= runs["coverage_pct"] >= options.min_coverage_pct
        return runs[mask]

    def _label_contents(self, labels: list[dict[str, Any]]) -> dict[str, bytes]:
        """Label bytes by key, from the cache when its copy has the object's CRC32C, else from the bucket."""
        cache = self.config.ml_root / TRAININGS / LABELS_CACHE
        cache.mkdir(parents=True, exist_ok=True)

        def one(label: dict[str, Any]) -> tuple[str, bytes]:
            digest = hashlib.sha1(label["key"].encode(), usedforsecurity=False).hexdigest()
            path = cache / f"{digest}-{label['generation']}.txt"
            if path.exists():
                data = path.read_bytes()
                if _crc(data) == label["crc32c"]:
                    return label["key"], data
            with storage_errors(self.config.ml_bucket, "reading"):
                data = (
                    self.client.bucket(self.config.ml_bucket)
                    .blob(label["key"])
                    .download_as_bytes(retry=retry_policy(self.config.request_retry_s), timeout=60)
                )
            write_atomic(path, data)
            return label["key"], data

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="labels") as pool:
            return dict(pool.map(one, labels))

    # -- execution -----------------------------------------------------------------------------

    def execute(
        self,
        plan: DatasetPlan,
        progress: Callable[[TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> DatasetResult:
        """Make the folder match the plan: fetch what is missing, delete what is no longer selected, manifest last."""
        if self.services.read_only:
            raise ReadOnlyError("Dataset fetches are not allowed in read-only mode.")
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        root = plan.root
        todo: list[PlannedFile] = []
        empty: list[Path] = []
        kept = 0
        for sample in plan.samples:
            targets = [
                (sample.frame_key, sample.image_path, sample.frame_size, sample.frame_crc32c, sample.frame_generation)
            ]
            if sample.label_key is not None:
                targets.append(
                    (
                        sample.label_key,
                        sample.label_path,
                        sample.label_size,
                        sample.label_crc32c,
                        sample.label_generation,
                    )
                )
            elif not _is_empty_file(root / sample.label_path):
                empty.append(root / sample.label_path)
            else:
                kept += 1
            for key, relative, size, crc, generation in targets:
                path = root / relative
                if _complete(path, size, crc):
                    kept += 1
                else:
                    todo.append(PlannedFile(key, path, size, crc, None, generation, "transfer", "not in the dataset"))
        outcomes = self.services.transfers.move_files(self.config.ml_bucket, todo, progress=progress, cancel=cancel)
        for path in empty:
            write_atomic(path, b"")
        failed = tuple(
            (str(o.file.path.relative_to(root)), o.error or o.status) for o in outcomes if o.status == "failed"
        )
        cancelled = cancel.is_set()
        removed = 0
        if not failed and not cancelled:
            removed = _remove_unlisted(root, plan.samples)
            write_atomic(root / "data.yaml", _data_yaml(plan).encode("utf-8"))
            write_atomic(root / MANIFEST, _manifest(plan).encode("utf-8"))
        return DatasetResult(
            plan,
            downloaded=sum(1 for o in outcomes if o.status == "transferred"),
            written=len(empty),
            kept=kept,
            removed=removed,
            failed=failed,
            cancelled=cancelled,
            bytes=sum(o.bytes for o in outcomes),
            seconds=time.perf_counter() - started,
        )



def _pair(ml: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[tuple[RunCoordinate, str, str], dict[str, Any]]]:
    """Frames in key order, and labels by (run, bag, stem) — a label belongs to the frame with its stem."""
    frames: list[dict[str, Any]] = []
    labels: dict[tuple[RunCoordinate, str, str], dict[str, Any]] = {}
    columns = [*COORD_COLUMNS, "bag", "kind", "name", "size", "generation", "crc32c"]
    for row in ml[columns].itertuples(index=False):
        coord = RunCoordinate(*(str(getattr(row, part)) for part in COORD_COLUMNS))
        kind: Literal["frames", "labels"] = "frames" if row.kind == "frame" else "labels"
        item = {
            "coord": coord,
            "bag": str(row.bag),
            "name": str(row.name),
            "key": ml_file_key(coord, str(row.bag), kind, str(row.name)),
            "size": int(row.size),
            "generation": int(row.generation or 0),
            "crc32c": str(row.crc32c or ""),
        }
        if kind == "frames":
            frames.append(item)
        else:
            labels[_stem_key(item)] = item
    frames.sort(key=lambda f: f["key"])
    return frames, labels


def _stem_key(item: dict[str, Any]) -> tuple[RunCoordinate, str, str]:
    return item["coord"], item["bag"], item["name"].rsplit(".", 1)[0]


def _split_runs(coords: Iterable[RunCoordinate], val_fraction: float, seed: int) -> dict[RunCoordinate, Split]:
    """Split by run, so no run is in both: rank runs by a seeded hash, the first share go to validation.

    A hash rank (not a shuffle of the list) keeps each run's rank when other runs join or leave the
    selection, so a changed selection moves as few runs between splits as possible.
    """
    ranked = sorted(
        coords,
        key=lambda c: hashlib.sha256(f"{seed}:{c.to_path_str()}".encode()).hexdigest(),
    )
    count = round(len(ranked) * val_fraction)
    if len(ranked) >= 2 and 0 < val_fraction < 1:
        count = min(max(count, 1), len(ranked) - 1)  # both splits non-empty whenever that is possible
    return {coord: ("val" if index < count else "train") for index, coord in enumerate(ranked)}


def _sample(
    frame: dict[str, Any], label: dict[str, Any] | None, classes: tuple[int, ...], split: Split
) -> DatasetSample:
    coord: RunCoordinate = frame["coord"]
    stem, _, suffix = frame["name"].rpartition(".")
    parts = [*coord.to_path_tuple()[:5], coord.timestamp.replace(":", "-"), frame["bag"].lstrip("_"), stem]
    base = "_".join(parts)
    return DatasetSample(
        coordinate=coord,
        bag=frame["bag"],
        frame_key=frame["key"],
        frame_generation=frame["generation"],
        frame_crc32c=frame["crc32c"],
        frame_size=frame["size"],
        label_key=label["key"] if label else None,
        label_generation=label["generation"] if label else 0,
        label_crc32c=label["crc32c"] if label else _crc(b""),
        label_size=label["size"] if label else 0,
        classes=classes,
        split=split,
        image_name=f"{base}.{suffix}",
        label_name=f"{base}.txt",
    )


def _crc(data: bytes) -> str:
    checker = Crc32cChecker("")
    checker.update(data)
    return checker.value


def _complete(path: Path, size: int, crc: str) -> bool:
    """Already fetched: the file has the object's size and CRC32C (so it needs no download)."""
    return path.is_file() and path.stat().st_size == size and file_crc32c(path) == crc


def _is_empty_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == 0


def _remove_unlisted(root: Path, samples: Iterable[DatasetSample]) -> int:
    """Delete the image and label files of samples no longer selected; return how many were removed."""
    keep = {root / p for s in samples for p in (s.image_path, s.label_path)}
    removed = 0
    for folder in ("images", "labels"):
        for split in SPLITS:
            directory = root / folder / split
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if path.is_file() and path not in keep:
                    path.unlink()
                    removed += 1
    return removed


def _data_yaml(plan: DatasetPlan) -> str:
    """The YOLO dataset file; ``nc``/``names`` only when classes are known (ids up to the largest seen)."""
    data: dict[str, Any] = {"path": str(plan.root), "train": "images/train", "val": "images/val"}
    seen = set(plan.class_ids) | set(plan.options.classes or ())
    if seen:
        count = max(seen) + 1
        data["nc"] = count
        data["names"] = {i: f"class_{i}" for i in range(count)}
    return yaml.safe_dump(data, sort_keys=False)


def _manifest(plan: DatasetPlan) -> str:
    data = {
        "name": plan.name,
        "filters": plan.filters.to_dict(),
        "options": plan.options.to_dict(),
        "totals": plan.to_dict()["samples"] | {"runs": plan.runs, "bytes": plan.bytes},
        "rejected": [{"key": key, "reason": reason} for key, reason in plan.rejected],
        "samples": [s.to_dict() for s in plan.samples],
    }
    return json.dumps(data, indent=1)
