"""Google Cloud Storage access: the client, listings, and one place that maps HTTP errors to ours.

google-cloud-storage is imported by the functions that call it, not with this module: the pages import the
storage layer for its layouts and error classes, and the client library (with google-auth, api-core and
requests) would add about 17 MB to every page kernel that never talks to a bucket.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtool.errors import RuntoolError

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud import storage

__all__ = [
    "BucketAccessError",
    "BucketNotFoundError",
    "ObjectRecord",
    "StorageError",
    "StorageUnavailableError",
    "iter_objects",
    "list_prefixes",
    "make_client",
    "storage_errors",
    "stream_object",
]

PAGE_SIZE = 1000
DEFAULT_RETRY_S = 30.0
READ_CHUNK = 1024 * 1024
"""Bytes per read of an object's body: the per-chunk Python work (write, CRC32C, progress) becomes noise, and a
worker holds one chunk. The client library reads 8 KiB at a time, which costs more CPU than a fast link."""
_LIST_FIELDS = "items(name,size,generation,crc32c),nextPageToken,prefixes"


class StorageError(RuntoolError):
    """A bucket operation failed."""

    def __init__(self, message: str, bucket: str | None = None) -> None:
        super().__init__(message)
        self.bucket = bucket


class BucketNotFoundError(StorageError):
    """The bucket does not exist."""


class BucketAccessError(StorageError):
    """Credentials are missing or the bucket refuses access."""


class StorageUnavailableError(StorageError):
    """The storage endpoint cannot be reached (network down, emulator stopped)."""


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """The listing fields runtool keeps for one object."""

    name: str
    size: int
    generation: int
    crc32c: str


def _record(blob: storage.Blob) -> ObjectRecord:
    return ObjectRecord(blob.name, int(blob.size or 0), int(blob.generation or 0), blob.crc32c or "")


def make_client(project: str | None = None, emulator_host: str | None = None) -> storage.Client:
    """A storage client; with an emulator host (or ``STORAGE_EMULATOR_HOST``) no credentials are needed."""
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import GoogleAuthError
    from google.cloud import storage

    host = emulator_host or os.environ.get("STORAGE_EMULATOR_HOST")
    if host:
        # The endpoint goes to this client only, so clients for different emulators can coexist in one process.
        return storage.Client(
            project=project or "runtool-local",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": host.rstrip("/")},
        )
    try:
        return storage.Client(project=project)
    except GoogleAuthError as exc:
        raise BucketAccessError(
            f"no Google Cloud credentials found ({exc}); run `gcloud auth application-default login` "
            "or set STORAGE_EMULATOR_HOST for a local emulator"
        ) from exc


@contextmanager
def storage_errors(bucket: str, action: str) -> Iterator[None]:
    """Map client and HTTP errors raised inside the block to :class:`StorageError` subclasses."""
    import http.client

    import requests
    import urllib3
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except gexc.NotFound as exc:
        raise BucketNotFoundError(f"The bucket `{bucket}` was not found ({action})", bucket) from exc
    except (gexc.Forbidden, gexc.Unauthorized, GoogleAuthError) as exc:
        raise BucketAccessError(f"Access to the bucket `{bucket}` was refused ({action}): {exc}", bucket) from exc
    except (
        requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError, http.client.HTTPException,
        gexc.ServiceUnavailable, gexc.RetryError,
    ) as exc:
        raise StorageUnavailableError(
            f"The storage service could not be reached while {action} `{bucket}`: {exc.__class__.__name__}",
            bucket,
        ) from exc
    except gexc.GoogleAPIError as exc:
        raise StorageError(f"The storage service failed while {action} `{bucket}`: {exc}", bucket) from exc


def iter_objects(
    client: storage.Client,
    bucket: str,
    prefix: str = "",
    on_page: Callable[[int], None] | None = None,
    retry_s: float = DEFAULT_RETRY_S,
) -> Iterator[ObjectRecord]:
    """Every object under ``prefix``, page by page (``on_page`` gets the number of objects in each page).

    Transient failures are retried for up to ``retry_s`` seconds, then raised as StorageUnavailableError.
    """
    with storage_errors(bucket, "listing"):
        blobs = client.list_blobs(
            bucket, prefix=prefix or None, page_size=PAGE_SIZE, fields=_LIST_FIELDS,
            retry=retry_policy(retry_s), timeout=min(60.0, retry_s),
        )
        for page in blobs.pages:
            records = [_record(blob) for blob in page]
            if on_page is not None:
                on_page(len(records))
            yield from records


def retry_policy(seconds: float) -> Retry:
    """The client's default retry rules, bounded to ``seconds`` overall."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(seconds)


def list_prefixes(
    client: storage.Client, bucket: str, prefix: str = "", retry_s: float = DEFAULT_RETRY_S
) -> tuple[list[str], list[ObjectRecord]]:
    """The immediate sub-prefixes under ``prefix`` and the objects directly at that level."""
    with storage_errors(bucket, "listing"):
        blobs = client.list_blobs(
            bucket, prefix=prefix or None, delimiter="/", page_size=PAGE_SIZE,
            retry=retry_policy(retry_s), timeout=min(60.0, retry_s),
        )
        records = [_record(blob) for page in blobs.pages for blob in page]
        return sorted(blobs.prefixes), records


def stream_object(
    client: storage.Client,
    bucket: str,
    key: str,
    generation: int,
    sink: Callable[[bytes], object],
    retry_s: float = DEFAULT_RETRY_S,
    timeout: float = 60.0,
    chunk_size: int = READ_CHUNK,
) -> int:
    """Feed the stored bytes of ``key`` to ``sink``, in order and each once; return how many there were.

    One media GET of exactly ``generation`` (0: whatever generation is live), also under ``ifGenerationMatch``,
    so an object replaced meanwhile fails (NotFound for the version gone, or PreconditionFailed) instead of
    mixing versions. ``Accept-Encoding: gzip`` keeps the stored bytes as stored (never decompressed): they are
    what the object's CRC32C covers. A body cut short (connection reset, emulator restarted) is resumed from the
    next byte with a Range request for the same generation. Transient failures are retried for up to ``retry_s``
    seconds, a budget that starts afresh whenever bytes have arrived, so a long download that breaks late is
    resumed too. HTTP errors are raised as ``google.api_core`` exceptions (wrap the call in :func:`storage_errors`);
    whatever ``sink`` raises ends the read.
    """
    from google.api_core import exceptions as gexc

    # The library's own URL builder (endpoint or emulator, user project, precondition) and its authorised
    # session; only its 8 KiB read loop is replaced.
    blob = client.bucket(bucket).blob(key, generation=generation or None)
    url = blob._get_download_url(client, if_generation_match=generation or None)
    session = client._http
    received = 0

    def attempt() -> None:
        nonlocal received
        headers = {"Accept-Encoding": "gzip"}
        if received:
            headers["Range"] = f"bytes={received}-"
        with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code >= 400:
                raise gexc.from_http_response(response)
            skip = 0 if response.status_code == 206 else received  # a server that ignored the Range
            while chunk := response.raw.read(chunk_size, decode_content=False):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                sink(chunk)
                received += len(chunk)

    while True:
        before = received
        try:
            retry_policy(retry_s)(attempt)()
            return received
        except gexc.RetryError:
            if received == before:
                raise
