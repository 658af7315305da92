"""Google Cloud Storage access: the client, listings, and one place that maps HTTP errors to ours.

google-cloud-storage is imported by the functions that call it, not with this module: the pages import the
storage layer for its layouts and error classes, and the client library (with google-auth, api-core and
requests) would add about 17 MB to every page kernel that never talks to a bucket.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote

from runtool.errors import RuntoolError

if TYPE_CHECKING:
    import urllib3
    from google.api_core.retry import Retry
    from google.auth.transport.urllib3 import AuthorizedHttp
    from google.cloud import storage

__all__ = [
    "BucketAccessError",
    "BucketNotFoundError",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "ObjectRecord",
    "StorageError",
    "StorageUnavailableError",
    "download_sliced",
    "iter_objects",
    "list_prefixes",
    "make_client",
    "plan_slices",
    "read_bounded",
    "storage_error",
    "storage_errors",
    "stream_object",
]

PAGE_SIZE = 1000
DEFAULT_RETRY_S = 30.0
READ_CHUNK = 1024 * 1024
"""Bytes per read of an object's body: the per-chunk Python work (write, CRC32C, progress) becomes noise, and a
worker holds one chunk. The client library reads 8 KiB at a time, which costs more CPU than a fast link."""
LIST_FIELDS = "items(name,size,generation,crc32c),nextPageToken,prefixes"
"""The partial-response mask of every inventory listing: the four fields of :class:`ObjectRecord`, the page token
and the sub-prefixes. GCS then sends about 6× fewer JSON bytes per object, 4× fewer gzip-compressed
(``benchmarks/listing.py``); fake-gcs-server ignores the mask and sends every field."""
_MEDIA_POOL_LOCK = threading.Lock()


class StorageError(RuntoolError):
    """A bucket operation failed; ``key`` names the object when the operation was on one."""

    def __init__(self, message: str, bucket: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key


class BucketNotFoundError(StorageError):
    """The bucket does not exist."""


class BucketAccessError(StorageError):
    """Credentials are missing or the bucket (or the object) refuses access (HTTP 401/403)."""


class ObjectNotFoundError(StorageError):
    """The bucket exists but the object (or the generation of it asked for) does not, and none replaced it."""


class ObjectChangedError(StorageError):
    """The object is not the generation the caller pinned: replaced, or created where none was expected.

    HTTP 412 (a generation precondition failed), or a 404 for a pinned generation while another one is live.
    ``generation`` is the one asked for (0: the object was expected not to exist), ``live`` the one found, if known.
    """

    def __init__(
        self, message: str, bucket: str, key: str, generation: int | None, live: int | None = None
    ) -> None:
        super().__init__(message, bucket, key)
        self.generation = generation
        self.live = live


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
def storage_errors(
    bucket: str,
    action: str,
    key: str | None = None,
    generation: int | None = None,
    client: storage.Client | None = None,
) -> Iterator[None]:
    """Raise what :func:`storage_error` makes of a client or HTTP error raised inside the block, from it.

    ``key`` (and the ``generation`` pinned, if any) name the object the block works on; without them a 404 is the
    bucket's. ``client`` lets a 404 on an object be told apart from a missing bucket or a replaced generation.
    """
    import http.client

    import requests
    import urllib3
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except (
        gexc.GoogleAPIError, GoogleAuthError, requests.ConnectionError, requests.Timeout,
        urllib3.exceptions.HTTPError, http.client.HTTPException,
    ) as exc:
        raise storage_error(exc, bucket, action, key, generation, client) from exc


def storage_error(
    exc: BaseException,
    bucket: str,
    action: str,
    key: str | None = None,
    generation: int | None = None,
    client: storage.Client | None = None,
) -> StorageError:
    """The one mapping of google-cloud-storage, google-api-core and transport errors to runtool's.

    Every message names the bucket, and the object when ``key`` is given; ``action`` says what was being done
    ("downloading from", "listing"). A 404 on an object needs a look at the bucket to say what is missing:
    fake-gcs-server (and GCS for media downloads) answers a plain "Not Found" for a missing bucket, a missing
    object and a pinned generation that is gone alike. With ``client`` that look is taken, after the failure only.
    """
    import http.client

    import requests
    import urllib3
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    where = f"`{key}` in the bucket `{bucket}`" if key else f"the bucket `{bucket}`"
    if isinstance(exc, gexc.NotFound):
        return _not_found(exc, bucket, action, key, generation, client)
    if isinstance(exc, gexc.PreconditionFailed) and key:
        found = f"it is no longer generation {generation}" if generation else "it exists now, where none was expected"
        return ObjectChangedError(f"The object {where} changed ({action}): {found}", bucket, key, generation)
    if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized, GoogleAuthError)):
        return BucketAccessError(f"Access to {where} was refused ({action}): {exc}", bucket, key)
    if isinstance(exc, (
        requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError, http.client.HTTPException,
        gexc.ServiceUnavailable, gexc.RetryError,
    )):
        return StorageUnavailableError(
            f"The storage service could not be reached while {action} {where}: {exc.__class__.__name__}", bucket, key
        )
    return StorageError(f"The storage service failed while {action} {where}: {exc}", bucket, key)


def _not_found(
    exc: BaseException, bucket: str, action: str, key: str | None, generation: int | None,
    client: storage.Client | None,
) -> StorageError:
    bucket_missing = BucketNotFoundError(f"The bucket `{bucket}` was not found ({action})", bucket, key)
    # GCS's JSON API says so when the bucket is missing; media downloads and fake-gcs-server do not.
    if key is None or "bucket does not exist" in str(exc).lower():
        return bucket_missing
    import requests
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    live: int | None = None
    if client is not None:
        try:
            blob = client.bucket(bucket).get_blob(key, timeout=10, retry=None)
            if blob is None and not client.bucket(bucket).exists(timeout=10, retry=None):
                return bucket_missing
            if blob is not None and blob.generation:
                live = int(blob.generation)
        except (gexc.GoogleAPIError, GoogleAuthError, requests.RequestException, OSError):
            pass  # the look only refines the message; the 404 it would explain is raised all the same
    if generation and live is not None and live != generation:
        return ObjectChangedError(
            f"The object `{key}` in the bucket `{bucket}` changed ({action}): generation {generation} was asked "
            f"for, {live} is live now", bucket, key, generation, live,
        )
    gone = f" (generation {generation})" if generation else ""
    return ObjectNotFoundError(
        f"The object `{key}`{gone} was not found in the bucket `{bucket}` ({action})", bucket, key
    )


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
            bucket, prefix=prefix or None, page_size=PAGE_SIZE, fields=LIST_FIELDS,
            retry=retry_policy(retry_s), timeout=min(60.0, retry_s),
        )
        for page in blobs.pages:
            records = [_record(blob) for blob in page]
            if on_page is not None:
                on_page(len(records))
            yield from records


@lru_cache(maxsize=32)
def retry_policy(seconds: float) -> Retry:
    """The client's default retry rules, bounded to ``seconds`` overall (one shared object per bound: a Retry is
    never changed, its ``with_*`` methods return copies)."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(seconds)


def list_prefixes(
    client: storage.Client, bucket: str, prefix: str = "", retry_s: float = DEFAULT_RETRY_S
) -> tuple[list[str], list[ObjectRecord]]:
    """The immediate sub-prefixes under ``prefix`` and the objects directly at that level."""
    with storage_errors(bucket, "listing"):
        blobs = client.list_blobs(
            bucket, prefix=prefix or None, delimiter="/", page_size=PAGE_SIZE, fields=LIST_FIELDS,
            retry=retry_policy(retry_s), timeout=min(60.0, retry_s),
        )
        records = [_record(blob) for page in blobs.pages for blob in page]
        return sorted(blobs.prefixes), records


MEDIA_CONNECTIONS = 64
"""Connections the media pool keeps open per host (at most; it opens them as requests need them). Above the
engine's file workers, so no worker's connection is closed after use and opened again."""


def _media_pool(client: storage.Client, url: str) -> AuthorizedHttp:
    """The pool ``client``'s media GETs go through: google-auth over plain urllib3, one per client.

    The client's own session (requests) costs about 1.1 ms of CPU per request, looking up proxies and netrc in
    the environment and re-encoding the URL every time; this pool with the same credentials costs about 0.45 ms
    (500 small objects, one thread), which is most of what a small file costs the client. Proxies
    (``HTTPS_PROXY`` …) and ``REQUESTS_CA_BUNDLE`` are read once, here. Without a proxy, a request for the
    client's own endpoint goes straight to that host's connection pool (:class:`_OriginPool`).
    """
    pool = getattr(client, "_runtool_media_pool", None)
    if pool is not None:
        return pool
    import certifi
    import requests.utils
    import urllib3
    from google.auth.transport.urllib3 import AuthorizedHttp

    with _MEDIA_POOL_LOCK:
        pool = getattr(client, "_runtool_media_pool", None)
        if pool is None:
            ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where()
            proxy = requests.utils.get_environ_proxies(url).get(url.split(":", 1)[0])
            http: urllib3.PoolManager | _OriginPool
            if proxy:
                http = urllib3.ProxyManager(
                    proxy, maxsize=MEDIA_CONNECTIONS, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs
                )
            else:
                manager = urllib3.PoolManager(maxsize=MEDIA_CONNECTIONS, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)
                http = _OriginPool(manager, _origin(url))
            pool = AuthorizedHttp(client._credentials, http=http)
            client._runtool_media_pool = pool
    return pool


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


class _OriginPool:
    """A :class:`urllib3.PoolManager` that sends requests for one origin straight to its connection pool.

    ``PoolManager.urlopen`` parses and re-encodes every absolute URL to pick the host's pool (about 40 µs of CPU
    for a media URL, whose percent-encoded key takes urllib3's slow path); the media GETs all go to the client's
    endpoint, so that pool is looked up once. The request target is the URL after the origin, as PoolManager
    would send it. Anything else (another origin, a redirect to follow, the credentials' token requests through
    ``request``) goes through the manager as before.
    """

    def __init__(self, manager: urllib3.PoolManager, origin: str) -> None:
        self.manager = manager
        self.prefix = origin + "/"
        self.pool = manager.connection_from_url(origin)

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: object) -> urllib3.BaseHTTPResponse:
        if not url.startswith(self.prefix):
            return self.manager.urlopen(method, url, redirect=redirect, **kw)
        kw.setdefault("headers", self.manager.headers)
        response = self.pool.urlopen(
            method, url[len(self.prefix) - 1 :], assert_same_host=False, redirect=False, **kw  # type: ignore[arg-type]
        )
        if redirect and response.get_redirect_location():
            response.drain_conn()
            response.release_conn()
            return self.manager.urlopen(method, url, redirect=redirect, **kw)
        return response

    def __getattr__(self, name: str) -> object:  # request(), headers, clear() … as the manager has them
        return getattr(self.manager, name)


class _NotPlain(Exception):
    """An answer the plain media connection does not read (no Content-Length, a chunked or redirected answer)."""


class _PlainMediaConnection:
    """One kept-alive HTTP/1.1 connection to the media origin, used by one thread: a GET is one ``sendall`` and
    as few ``recv`` calls as the answer needs.

    urllib3 and http.client cost about 0.3 ms of CPU per small GET (0.1 ms this way, 32 threads, fake-gcs-server),
    and about eight system calls that each release and retake the GIL (the socket timeout set twice, a poll for a
    dropped connection, a poll before each read); with the engine's 32 workers those GIL handoffs are most of what
    a small file costs the client. Only answers with a Content-Length are read here (any other raises
    :class:`_NotPlain` and the GET goes through the pool); socket failures are raised as urllib3's, so the retry
    policy and :func:`storage_error` treat them as they treat the pool's.
    """

    def __init__(self, scheme: str, authority: str, host: str, port: int, timeout: float, ca_certs: str) -> None:
        self.address, self.timeout = (host, port), timeout
        self.host_header = authority.encode("ascii")
        self.tls = None
        if scheme == "https":
            import ssl

            self.tls = ssl.create_default_context(cafile=ca_certs)
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def get(self, target: str, headers: dict[str, str]) -> _PlainMediaResponse:
        import urllib3

        lines = [b"GET " + target.encode("ascii") + b" HTTP/1.1", b"Host: " + self.host_header]
        lines += [f"{name}: {value}".encode("latin-1") for name, value in headers.items()]
        request = b"\r\n".join(lines) + b"\r\n\r\n"
        for fresh in (self.sock is None, True):  # a kept connection the server has closed: one new one
            try:
                if self.sock is None:
                    sock = socket.create_connection(self.address, timeout=self.timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    host = self.address[0]
                    self.sock = self.tls.wrap_socket(sock, server_hostname=host) if self.tls else sock
                self.sock.sendall(request)
                head = self._head()
                break
            except TimeoutError as exc:
                self.close()
                raise urllib3.exceptions.TimeoutError(f"GET {target}: no answer in {self.timeout} s") from exc
            except (OSError, urllib3.exceptions.ProtocolError) as exc:
                self.close()
                if fresh:
                    raise urllib3.exceptions.ProtocolError(f"GET {target}: {exc}") from exc
        return _PlainMediaResponse(self, *head)

    def _head(self) -> tuple[int, dict[str, str], int]:
        import urllib3

        assert self.sock is not None
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > 65536:
                raise urllib3.exceptions.ProtocolError("an answer's header over 64 KiB")
            data = self.sock.recv(65536)
            if not data:
                raise urllib3.exceptions.ProtocolError("the connection was closed before an answer")
            buffer += data
        status_line, *lines = buffer[:end].decode("latin-1").split("\r\n")
        self.buffer = buffer[end + 4 :]
        fields: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ", 2)[1])
        length = fields.get("content-length")
        if length is None or "transfer-encoding" in fields or 300 <= status < 400 or status == 401:
            self.close()
            raise _NotPlain(status_line)
        return status, fields, int(length)

    def read(self, amount: int) -> bytes:
        import urllib3

        if self.buffer:
            data, self.buffer = self.buffer[:amount], self.buffer[amount:]
            return data
        assert self.sock is not None
        try:
            data = self.sock.recv(amount)
        except TimeoutError as exc:
            raise urllib3.exceptions.TimeoutError(f"no bytes in {self.timeout} s") from exc
        except OSError as exc:
            raise urllib3.exceptions.ProtocolError(f"the connection broke: {exc}") from exc
        if not data:
            raise urllib3.exceptions.ProtocolError("the connection was closed before the whole body")
        return data


class _PlainMediaResponse:
    """The answer of :meth:`_PlainMediaConnection.get`, read as :func:`stream_object` reads urllib3's."""

    def __init__(self, connection: _PlainMediaConnection, status: int, headers: dict[str, str], length: int) -> None:
        self.connection, self.status, self.headers, self.length_remaining = connection, status, headers, length

    def read(self, amount: int, decode_content: bool = False) -> bytes:
        if not self.length_remaining:
            return b""
        data = self.connection.read(min(amount, self.length_remaining))
        self.length_remaining -= len(data)
        return data

    @property
    def data(self) -> bytes:
        parts = []
        while chunk := self.read(READ_CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self.connection.close()

    def release_conn(self) -> None:
        if self.length_remaining:  # unread bytes: the connection cannot carry another request
            self.connection.close()


def _plain_media(client: storage.Client, url: str, timeout: float) -> _PlainMediaConnection | None:
    """This thread's plain media connection for ``client``, or None where the pool must be used (a proxy, or an
    answer it could not read before)."""
    pool = _media_pool(client, url)
    if not isinstance(pool.http, _OriginPool) or getattr(client, "_runtool_plain_media_off", False):
        return None
    local = getattr(client, "_runtool_plain_media", None)
    if local is None:
        with _MEDIA_POOL_LOCK:
            local = getattr(client, "_runtool_plain_media", None) or threading.local()
            client._runtool_plain_media = local
    connection: _PlainMediaConnection | None = getattr(local, "connection", None)
    if connection is None:
        scheme, _, rest = pool.http.prefix.rstrip("/").partition("://")
        host, _, port = rest.rpartition(":") if ":" in rest.rsplit("]", 1)[-1] else (rest, "", "")
        default = 443 if scheme == "https" else 80
        ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or _ca_bundle()
        connection = _PlainMediaConnection(scheme, rest, host.strip("[]"), int(port or default), timeout, ca_certs)
        local.connection = connection
    return connection


def _ca_bundle() -> str:
    import certifi

    return str(certifi.where())


def _media_url(client: storage.Client, bucket: str, key: str, generation: int, *, pinned_url: bool = True) -> str:
    """The media download URL of ``key``: what the library's ``Blob._get_download_url`` builds, from a template.

    The library builds a Bucket, a Blob and its URL through urlsplit/urlencode for every object (about 30 µs of
    CPU); the template is the library's own URL for a placeholder name, built once per client and bucket, and
    checked to have the expected shape (else every URL comes from the library). ``generation`` (0: the live one)
    goes under ``ifGenerationMatch``, and also into the path's ``generation`` when ``pinned_url``.
    """
    templates: dict[str, tuple[str, str] | None] | None = getattr(client, "_runtool_media_urls", None)
    if templates is None:
        templates = {}
        client._runtool_media_urls = templates
    if bucket not in templates:
        placeholder = "runtool-name"
        built = client.bucket(bucket).blob(placeholder)._get_download_url(client)
        head, sep, tail = built.partition(f"/o/{placeholder}?")
        templates[bucket] = (head + "/o/", "?" + tail) if sep and tail == "alt=media" else None
    template = templates[bucket]
    if template is None:
        blob = client.bucket(bucket).blob(key, generation=(generation or None) if pinned_url else None)
        return str(blob._get_download_url(client, if_generation_match=generation or None))
    head, tail = template
    url = head + quote(key, safe="~") + tail
    if generation:
        url += f"&generation={generation:d}&ifGenerationMatch={generation:d}" if pinned_url else (
            f"&ifGenerationMatch={generation:d}"
        )
    return url


def _raise_for_status(response: urllib3.BaseHTTPResponse | _PlainMediaResponse, url: str) -> None:
    """Raise an HTTP error answer as the ``google.api_core`` exception of its status (with GCS's message)."""
    import json

    from google.api_core import exceptions as gexc

    if response.status < 400:
        return
    body = response.data.decode("utf-8", "replace")
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.strip()
    raise gexc.from_http_status(response.status, f"GET {url}: {message}")


def _media_get(
    client: storage.Client, pool: AuthorizedHttp, url: str, headers: dict[str, str], timeout: float
) -> urllib3.BaseHTTPResponse | _PlainMediaResponse:
    """One media GET: on this thread's plain connection (see :class:`_PlainMediaConnection`) where it can be, with
    the credentials' headers added as the pool adds them, else through the pool."""
    plain = _plain_media(client, url, timeout)
    if plain is not None and url.startswith(pool.http.prefix):
        sent = dict(headers)
        pool.credentials.before_request(_auth_request(client, pool), "GET", url, sent)
        try:
            return plain.get(url[len(pool.http.prefix) - 1 :], sent)
        except _NotPlain:
            client._runtool_plain_media_off = True  # read by the pool from now on, this GET too
    return pool.urlopen("GET", url, headers=headers, preload_content=False, retries=False, timeout=timeout)


def _auth_request(client: storage.Client, pool: AuthorizedHttp) -> object:
    """The transport the credentials refresh their token through (the pool's own manager), one per client."""
    request = getattr(client, "_runtool_auth_request", None)
    if request is None:
        from google.auth.transport.urllib3 import Request

        request = client._runtool_auth_request = Request(pool.http.manager)
    return request


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

    One media GET of exactly ``generation`` (0: whatever generation is live), under ``ifGenerationMatch``, so an
    object replaced meanwhile fails (PreconditionFailed, or NotFound for the version gone) instead of mixing
    versions. The generation the server says it sends (``X-Goog-Generation``, which GCS and fake-gcs-server send
    with every media download) is checked too before any byte reaches ``sink``: another one fails as NotFound,
    as a GET naming the generation in its URL would. The URL names it only when the server does not say (then
    for the client's later GETs too): fake-gcs-server ignores the precondition on a media GET, and serving a
    generation named in the URL costs it about 0.4 ms more CPU per request. ``Accept-Encoding: gzip`` keeps the
    stored bytes as stored (never decompressed): they are what the object's CRC32C covers. A body cut short
    (connection reset, emulator restarted) is resumed from the next byte with a Range request for the same
    generation. Transient failures are retried for up to ``retry_s`` seconds, a budget that starts afresh whenever
    bytes have arrived, so a long download that breaks late is resumed too. HTTP errors are raised as
    ``google.api_core`` exceptions (wrap the call in :func:`storage_errors` with the key, generation and client,
    so a replaced object is told from a missing one); whatever ``sink`` raises ends the read. No metadata
    request: the caller's listing has the size, generation and CRC32C.
    """
    from google.api_core import exceptions as gexc

    # The library's URL (endpoint or emulator, precondition) from a template (see _media_url); the GET goes through
    # this thread's plain connection (see _media_get), else the client's media pool (see _media_pool), never the
    # library's 8 KiB read loop.
    pinned = bool(generation) and getattr(client, "_runtool_pin_media_url", False)
    url = _media_url(client, bucket, key, generation, pinned_url=pinned)
    pool = _media_pool(client, url)
    received = 0

    def checked(response: urllib3.BaseHTTPResponse | _PlainMediaResponse) -> bool:
        """Whether the answer is of ``generation`` (raises if it is another); False if the server does not say."""
        _raise_for_status(response, url)
        if not generation or pinned:
            return True
        served = response.headers.get("x-goog-generation")
        if served is None:
            return False
        if served.strip() != str(generation):
            raise gexc.NotFound(f"GET {url}: generation {generation} was asked for, {served} was served")
        return True

    def attempt() -> None:
        nonlocal received, pinned, url
        headers = {"Accept-Encoding": "gzip"}  # GCS ignores it for objects not stored gzipped
        if received:
            headers["Range"] = f"bytes={received}-"
        while True:
            response = _media_get(client, pool, url, headers, timeout)
            try:
                if checked(response):
                    break
            except BaseException:
                response.close()
                response.release_conn()
                raise
            # The server does not say which generation it sends: name it in the URL, for this client from now on.
            response.close()
            response.release_conn()
            client._runtool_pin_media_url = pinned = True
            url = _media_url(client, bucket, key, generation, pinned_url=True)
        try:
            skip = 0 if response.status == 206 else received  # a server that ignored the Range
            while chunk := response.read(chunk_size, decode_content=False):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                sink(chunk)
                received += len(chunk)
                if response.length_remaining == 0:
                    break  # the whole Content-Length is read: no call for the empty read that would say so
        except BaseException:
            response.close()  # the connection may hold unread bytes: never reuse it
            raise
        finally:
            response.release_conn()

    while True:
        before = received
        try:
            retry_policy(retry_s)(attempt)()
            return received
        except gexc.RetryError:
            if received == before:
                raise


def read_bounded(
    client: storage.Client,
    bucket: str,
    key: str,
    generation: int,
    limit: int,
    retry_s: float = DEFAULT_RETRY_S,
    timeout: float = 60.0,
) -> bytes:
    """The stored bytes of a small object, at most ``limit`` + 1 of them (so a caller tells one over ``limit``).

    For many small objects read whole (labels), where a request's client overhead is most of the cost: one media
    GET through the client's media pool (see :func:`_media_pool`), ``Range: bytes=0-<limit>``, under
    ``ifGenerationMatch`` (0: whatever generation is live), with the stored bytes kept as stored
    (``Accept-Encoding: gzip``), and no metadata request. The server sends no more than ``limit`` + 1 bytes
    whatever the object has grown to since it was listed; an empty object (HTTP 416 to any range) is ``b""``.
    Transient failures are retried whole for up to ``retry_s`` seconds; HTTP errors are raised as
    ``google.api_core`` exceptions, as from :func:`stream_object` (wrap the call in :func:`storage_errors`).

    The generation is a precondition only, not also in the URL as :func:`stream_object` has it (GCS fails a
    replaced object all the same: PreconditionFailed), as fake-gcs-server takes about 0.5 ms more CPU per request
    to serve a named generation, most of what a label costs it (``benchmarks/dataset_plan.py``). fake-gcs-server
    ignores the precondition on a media GET and serves the live object: check the bytes against the listing's
    CRC32C, as the dataset planner does.
    """
    from google.api_core import exceptions as gexc

    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    url = _media_url(client, bucket, key, generation, pinned_url=False)
    pool = _media_pool(client, url)
    headers = {"Accept-Encoding": "gzip", "Range": f"bytes=0-{limit}"}

    def attempt() -> bytes:
        response = pool.urlopen("GET", url, headers=headers, preload_content=False, retries=False, timeout=timeout)
        try:
            _raise_for_status(response, url)
            parts: list[bytes] = []
            wanted = limit + 1  # a server that ignored the Range still stops being read here
            while wanted and (chunk := response.read(min(wanted, READ_CHUNK), decode_content=False)):
                parts.append(chunk)
                wanted -= len(chunk)
            if wanted == 0 and response.read(1, decode_content=False):
                response.close()  # bytes left unread: the connection cannot carry another request
            return b"".join(parts)
        except BaseException:
            response.close()
            raise
        finally:
            response.release_conn()

    try:
        return retry_policy(retry_s)(attempt)()
    except gexc.RequestRangeNotSatisfiable:
        return b""


SLICE_BYTES = 32 * 1024 * 1024
"""Bytes per ranged GET of a sliced download. One slice costs one request (a round trip, ~20-100 ms to GCS) and
moves ~1.3 s of bytes at 25 MB/s, so the request is a few percent; slices smaller than a stream's share leave
the streams that finish early something to take over, so one slow stream does not hold the whole object."""
SLICE_STREAMS = 8
"""Ranged GETs of one object in flight at once; below the client session's pool of 10 connections."""

def plan_slices(size: int, slice_bytes: int = SLICE_BYTES) -> list[tuple[int, int]]:
    """``(start, length)`` of each slice of an object of ``size`` bytes, in order; one empty slice for 0 bytes."""
    if slice_bytes < 1:
        raise ValueError(f"slice_bytes must be positive, not {slice_bytes}")
    if size == 0:
        return [(0, 0)]
    return [(start, min(slice_bytes, size - start)) for start in range(0, size, slice_bytes)]


class _Abandoned(Exception):
    """Raised inside a slice's read when another slice has failed: the whole download fails anyway."""


def download_sliced(
    client: storage.Client,
    bucket: str,
    key: str,
    generation: int,
    size: int,
    crc32c: str,
    fd: int,
    on_bytes: Callable[[int], None] | None = None,
    slice_bytes: int = SLICE_BYTES,
    streams: int = SLICE_STREAMS,
    retry_s: float = DEFAULT_RETRY_S,
    timeout: float = 60.0,
    chunk_size: int = READ_CHUNK,
) -> None:
    """Download ``generation`` of ``key`` into the open file ``fd`` as ranged GETs in parallel; verify it whole.

    Each slice is one GET of ``bytes=start-end`` of exactly ``generation`` (also under ``ifGenerationMatch``),
    written at its offset with ``os.pwrite``, so the slices need no ordering and no buffering. A slice whose
    connection breaks resumes from its next byte with a narrower Range, under the same retry budget as
    :func:`stream_object` (``retry_s``, renewed whenever bytes arrive). Every slice keeps the CRC32C of its bytes;
    the whole object's CRC32C is combined from them (:func:`~runtool.storage.checksums.crc32c_combine`) and
    compared with ``crc32c`` (base64, as GCS spells it), raising :class:`~runtool.storage.checksums.ChecksumMismatch`
    if they differ. ``fd`` should be preallocated to ``size`` by the caller, which alone decides whether the file is
    kept: this function writes into it and never renames. ``on_bytes`` gets each chunk's length, from the slices'
    threads one at a time; what it raises (a cancel) ends every slice and is raised here. The first failure of any
    slice is raised (HTTP errors as ``google.api_core`` exceptions, as from :func:`stream_object`); the other slices
    stop at their next chunk.
    """
    from concurrent.futures import ThreadPoolExecutor
    from threading import Event, Lock

    import google_crc32c
    from google.api_core import exceptions as gexc

    from runtool.storage.checksums import ChecksumMismatch, crc32c_combine

    if generation <= 0:
        raise ValueError(f"a sliced download of {key} needs a pinned generation, not {generation}")
    blob = client.bucket(bucket).blob(key, generation=generation)
    url = blob._get_download_url(client, if_generation_match=generation)
    session = client._http
    failed = Event()
    progress = Lock()

    def report(count: int) -> None:
        if on_bytes is not None:
            with progress:
                on_bytes(count)

    def fetch(start: int, length: int) -> int:
        checksum = google_crc32c.Checksum()
        received = 0

        def attempt() -> None:
            nonlocal received
            headers = {"Accept-Encoding": "gzip"}
            if length:
                headers["Range"] = f"bytes={start + received}-{start + length - 1}"
            with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                if response.status_code >= 400:
                    raise gexc.from_http_response(response)
                skip = 0 if response.status_code == 206 else start + received  # a server that ignored the Range
                while received < length and (chunk := response.raw.read(chunk_size, decode_content=False)):
                    if failed.is_set():
                        raise _Abandoned
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                    chunk = chunk[: length - received]
                    if not chunk:
                        continue
                    view, offset = memoryview(chunk), start + received
                    while view:  # a regular file takes it all at once; the loop is for the rare short write
                        written = os.pwrite(fd, view, offset)
                        view, offset = view[written:], offset + written
                    checksum.update(chunk)
                    received += len(chunk)
                    report(len(chunk))
            if received < length:
                raise ConnectionError(f"{key}: the body ended at byte {start + received:,} of {start + length:,}")

        while True:
            before = received
            try:
                retry_policy(retry_s)(attempt)()
                return int.from_bytes(checksum.digest(), "big")
            except gexc.RetryError:
                if received == before:
                    raise

    def guarded(start: int, length: int) -> int:
        try:
            return fetch(start, length)
        except BaseException:
            failed.set()
            raise

    slices = plan_slices(size, slice_bytes)
    with ThreadPoolExecutor(max_workers=max(1, min(streams, len(slices))), thread_name_prefix="slice") as pool:
        futures = [pool.submit(guarded, start, length) for start, length in slices]
        errors = [exc for future in futures if (exc := future.exception()) is not None]
    if errors:
        raise next((exc for exc in errors if not isinstance(exc, _Abandoned)), errors[0])
    whole = 0
    for future, (_, length) in zip(futures, slices, strict=True):
        whole = crc32c_combine(whole, future.result(), length)
    found = base64.b64encode(whole.to_bytes(4, "big")).decode("ascii")
    if found != crc32c:
        raise ChecksumMismatch(
            f"{key}: CRC32C {found} of the {len(slices)} slices does not match the object's {crc32c}"
        )
