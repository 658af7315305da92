"""Bucket and local layouts, cloud/local name translation, and key parsing.

Raw bucket:  ``<cid>/<regionid>/<fieldid>/<twid>/<lbid>/<timestamp>/rosbag/_<YYYY-MM-DD-HH-MM-SS>_<i>.bag``
ML bucket:   ``raw/<coord>/rosbag/_<bag stem>/{frames,labels}/<sec>.<nsec>.{jpg,txt}``
Local raw:   ``<raw_root>/<coord>/rosbag_<…>_<i>.bag`` (no ``rosbag/`` level)
Local ML:    ``<ml_root>/raw/<coord>/rosbag_<…>_<i>/{frames,labels}/<file>``
Processed:   ``<processed_root>/<coord>/``

Key parsing never raises on foreign objects: it returns a typed entry or an :class:`Anomaly` with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from runtool.models import CoordinateError, Filters, RunCoordinate
from runtool.models.coordinates import NAME_MAX

__all__ = [
    "FRAME_SUFFIXES",
    "LABEL_SUFFIX",
    "ML_ROOT_FOLDER",
    "Anomaly",
    "MLFileEntry",
    "RawBagEntry",
    "cloud_to_local_name",
    "local_ml_dir",
    "local_raw_dir",
    "local_to_cloud_name",
    "ml_file_key",
    "ml_prefix",
    "parse_ml_key",
    "parse_raw_key",
    "processed_dir",
    "raw_bag_key",
    "raw_prefix",
]

ML_ROOT_FOLDER = "raw"
ROSBAG_FOLDER = "rosbag"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIX = ".txt"
MLKind = Literal["frames", "labels"]
_PART_EXTRA = len(".") + len(".part-") + 8
"""What a download's temporary name (``.<name>.part-<8 hex>``, beside the file) adds to the file's name."""


@dataclass(frozen=True)
class RawBagEntry:
    """A bag object in the raw bucket; ``bag`` is the cloud file name (``_…_0.bag``)."""

    coordinate: RunCoordinate
    bag: str


@dataclass(frozen=True)
class MLFileEntry:
    """A frame or label object in the ML bucket; ``bag_dir`` is the cloud bag dir (``_…_0``)."""

    coordinate: RunCoordinate
    bag_dir: str
    kind: MLKind
    name: str


@dataclass(frozen=True)
class Anomaly:
    """An object whose key does not fit the bucket layout, with the reason why."""

    key: str
    reason: str


def raw_prefix(filters: Filters) -> str:
    """The raw-bucket prefix covering a selection (its leading set levels)."""
    parts = filters.prefix_parts()
    return "/".join(parts) + "/" if parts else ""


def ml_prefix(filters: Filters) -> str:
    """The ML-bucket prefix covering a selection."""
    return f"{ML_ROOT_FOLDER}/{raw_prefix(filters)}"


def raw_bag_key(coord: RunCoordinate, bag: str) -> str:
    return f"{coord.to_path_str()}/{ROSBAG_FOLDER}/{bag}"


def ml_file_key(coord: RunCoordinate, bag_dir: str, kind: MLKind, name: str) -> str:
    return f"{ML_ROOT_FOLDER}/{coord.to_path_str()}/{ROSBAG_FOLDER}/{bag_dir}/{kind}/{name}"


def cloud_to_local_name(name: str) -> str:
    """``_2025-08-12-08-54-21_0.bag`` → ``rosbag_2025-08-12-08-54-21_0.bag`` (also for bag dirs)."""
    if not name.startswith("_"):
        raise CoordinateError(f"cloud bag name {name!r} does not start with '_'")
    return "rosbag" + name


def local_to_cloud_name(name: str) -> str:
    """``rosbag_2025-08-12-08-54-21_0.bag`` → ``_2025-08-12-08-54-21_0.bag`` (also for bag dirs)."""
    if not name.startswith("rosbag_"):
        raise CoordinateError(f"local bag name {name!r} does not start with 'rosbag_'")
    return name[len("rosbag") :]


def local_raw_dir(raw_root: Path, coord: RunCoordinate) -> Path:
    return raw_root.joinpath(*coord.to_path_tuple())


def local_ml_dir(ml_root: Path, coord: RunCoordinate) -> Path:
    return ml_root.joinpath(ML_ROOT_FOLDER, *coord.to_path_tuple())


def run_lock_path(data_dir: Path, coord: RunCoordinate, work: str) -> Path:
    """The file locked while ``work`` (``raw``, ``ml``, ``extract``, ``analysis``) runs on the run, by any process:
    ``<data_dir>/.runtool/locks/<coord>.<work>.lock``."""
    return data_dir / ".runtool" / "locks" / f"{coord.to_path_str()}.{work}.lock"


def processed_dir(processed_root: Path, coord: RunCoordinate) -> Path:
    return processed_root.joinpath(*coord.to_path_tuple())


def _too_long(local_name: str, extra: int = 0) -> str | None:
    """Why ``local_name`` (plus ``extra`` bytes) cannot be a local file or folder name, or None if it can."""
    size = len(local_name.encode("utf-8", "surrogateescape"))
    if size + extra <= NAME_MAX:
        return None
    return f"name too long for a local file ({size} bytes as {local_name[:40]!r}…, at most {NAME_MAX - extra})"


@lru_cache(maxsize=65536)
def _coordinate(parts: tuple[str, ...]) -> RunCoordinate | str:
    """The coordinate for six key segments, or the reason they are not one (cached: keys share runs)."""
    try:
        return RunCoordinate(*parts)
    except CoordinateError as exc:
        return str(exc)


def parse_raw_key(key: str) -> RawBagEntry | Anomaly:
    """Classify one raw-bucket object key."""
    if key.endswith("/"):
        return Anomaly(key, "folder placeholder object")
    parts = key.split("/")
    if len(parts) != 8:
        return Anomaly(key, f"wrong depth: {len(parts)} segments, expected 8 (<coord>/rosbag/<bag>)")
    if parts[6] != ROSBAG_FOLDER:
        return Anomaly(key, f"unexpected folder {parts[6]!r} where 'rosbag' was expected")
    name = parts[7]
    if not name.endswith(".bag"):
        return Anomaly(key, f"unexpected file {name!r}: not a .bag")
    if not name.startswith("_") or len(name) <= len("_.bag"):
        return Anomaly(key, f"unexpected bag name {name!r}: expected _<YYYY-MM-DD-HH-MM-SS>_<i>.bag")
    if (too_long := _too_long(cloud_to_local_name(name), _PART_EXTRA)) is not None:
        return Anomaly(key, too_long)
    coord = _coordinate(tuple(parts[:6]))
    if isinstance(coord, str):
        return Anomaly(key, coord)
    return RawBagEntry(coord, name)


def parse_ml_key(key: str) -> MLFileEntry | Anomaly:
    """Classify one ML-bucket object key."""
    if key.endswith("/"):
        return Anomaly(key, "folder placeholder object")
    parts = key.split("/")
    if len(parts) != 11:
        return Anomaly(
            key, f"wrong depth: {len(parts)} segments, expected 11 (raw/<coord>/rosbag/<bag>/<kind>/<file>)"
        )
    if parts[0] != ML_ROOT_FOLDER:
        return Anomaly(key, f"unexpected top folder {parts[0]!r} where 'raw' was expected")
    if parts[7] != ROSBAG_FOLDER:
        return Anomaly(key, f"unexpected folder {parts[7]!r} where 'rosbag' was expected")
    bag_dir, kind, name = parts[8], parts[9], parts[10]
    if not bag_dir.startswith("_") or bag_dir in ("_", "_.", "_.."):
        return Anomaly(key, f"unexpected bag folder {bag_dir!r}: expected _<YYYY-MM-DD-HH-MM-SS>_<i>")
    if kind == "frames":
        if not name.lower().endswith(FRAME_SUFFIXES):
            return Anomaly(key, f"unexpected file {name!r} in frames/: not an image")
    elif kind == "labels":
        if not name.lower().endswith(LABEL_SUFFIX):
            return Anomaly(key, f"unexpected file {name!r} in labels/: not a .txt")
    else:
        return Anomaly(key, f"unexpected folder {kind!r} where 'frames' or 'labels' was expected")
    if name.startswith("."):  # a macOS copy's ``._<frame>.jpg``; on disk, hidden names are a transfer's own files
        return Anomaly(key, f"hidden file {name!r} in {kind}/: not a sample")
    too_long = _too_long(cloud_to_local_name(bag_dir)) or _too_long(name, _PART_EXTRA)
    if too_long is not None:
        return Anomaly(key, too_long)
    coord = _coordinate(tuple(parts[1:7]))
    if isinstance(coord, str):
        return Anomaly(key, coord)
    return MLFileEntry(coord, bag_dir, kind, name)  # type: ignore[arg-type]
