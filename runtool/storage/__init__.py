"""GCS access, bucket and local layouts."""

from __future__ import annotations

from runtool.storage.gcs import (
    BucketAccessError,
    BucketNotFoundError,
    ObjectRecord,
    StorageError,
    StorageUnavailableError,
    iter_objects,
    list_prefixes,
    make_client,
    storage_errors,
)
from runtool.storage.layout import (
    Anomaly,
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
    processed_dir,
    raw_bag_key,
    raw_prefix,
)

__all__ = [
    "Anomaly",
    "BucketAccessError",
    "BucketNotFoundError",
    "MLFileEntry",
    "ObjectRecord",
    "RawBagEntry",
    "StorageError",
    "StorageUnavailableError",
    "cloud_to_local_name",
    "iter_objects",
    "list_prefixes",
    "local_ml_dir",
    "local_raw_dir",
    "local_to_cloud_name",
    "make_client",
    "ml_file_key",
    "ml_prefix",
    "parse_ml_key",
    "parse_raw_key",
    "processed_dir",
    "raw_bag_key",
    "raw_prefix",
    "storage_errors",
]
