"""The legacy (v2) ML download, re-implemented as the baseline runtool's bulk ML download replaces.

Faithful to legacy-dashboard.md §7.4-7.6: one run after another; the source state is the run's ML objects
(the legacy read them from its cached inventory, here one listing per run stands in for that cache); the
target state a fresh scan of the local folder; ``skip`` keeps a local file of the same size. Execution is
sequential, one file at a time on one client, downloaded straight to the final path, then the local size
is compared with the cloud size and the file deleted on a mismatch. No checksum, no temp file, no resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.api_core.exceptions import GoogleAPIError
from google.cloud import storage

from runtool.models import RunCoordinate
from runtool.storage import cloud_to_local_name, local_ml_dir, ml_prefix

__all__ = ["LegacyDownload", "download_files", "download_runs"]


@dataclass
class LegacyDownload:
    """What a legacy download did (it reported failures one by one and carried on)."""

    files: int = 0
    bytes: int = 0
    failed: int = 0


def download_runs(
    client: storage.Client, bucket_name: str, coords: list[RunCoordinate], ml_root: Path
) -> LegacyDownload:
    """Download every frame and label of ``coords`` into the local ML layout, the legacy way."""
    bucket = client.bucket(bucket_name)
    done = LegacyDownload()
    for coord in coords:
        prefix = ml_prefix(coord.to_filters())
        run_dir = local_ml_dir(ml_root, coord)
        plan: list[tuple[str, Path, int]] = []
        for blob in client.list_blobs(bucket_name, prefix=prefix):
            parts = blob.name[len(prefix) :].split("/")  # rosbag/<bag dir>/<frames|labels>/<file>
            if len(parts) != 4 or parts[2] not in ("frames", "labels"):
                continue
            target = run_dir / cloud_to_local_name(parts[1]) / parts[2] / parts[3]
            if target.exists() and target.stat().st_size == blob.size:
                continue  # skip mode: same size counts as the same file
            plan.append((blob.name, target, int(blob.size or 0)))
        download_files(bucket, plan, done)
    return done


def download_files(bucket: storage.Bucket, files: list[tuple[str, Path, int]], done: LegacyDownload) -> None:
    """The legacy execute step: (key, target, size) one after another, straight to the target, size checked."""
    for key, target, size in files:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            bucket.blob(key).download_to_filename(str(target), checksum=None)
        except (GoogleAPIError, OSError):  # logged and counted by the legacy, never raised
            target.unlink(missing_ok=True)
            done.failed += 1
            continue
        if target.stat().st_size != size:
            target.unlink()
            done.failed += 1
            continue
        done.files += 1
        done.bytes += size
