"""stream_object against a real fake-gcs-server: chunks, the generation precondition, and a body cut short."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from google.api_core import exceptions as gexc

from runtool.demo.emulator import Emulator
from runtool.storage import make_client
from runtool.storage.gcs import _media_url, stream_object

BUCKET = "stream-test"
KEY = "acme/run/rosbag/_2025-08-01-08-00-20_0.bag"
DATA = np.random.default_rng(5).bytes(3_000_000)


class Relay:
    """A TCP relay to the emulator that closes its first connection after ``cut_after`` bytes of response, and
    passes every answer through ``rewrite``; it records the requests."""

    def __init__(
        self, target_port: int, cut_after: int | None = None, rewrite: Callable[[bytes], bytes] | None = None
    ) -> None:
        self.target_port, self.cut_after, self.rewrite = target_port, cut_after, rewrite
        self.requests: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        first = True
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            limit = self.cut_after if first else None
            first = False
            threading.Thread(target=self._pump, args=(client, upstream, None, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None, requests: bool) -> None:
        passed = 0
        try:
            while data := source.recv(64 * 1024):
                if requests:
                    self.requests.append(data)
                elif self.rewrite is not None:
                    data = self.rewrite(data)
                if limit is not None and passed + len(data) > limit:
                    sink.sendall(data[: limit - passed])
                    break
                sink.sendall(data)
                passed += len(data)
        except OSError:
            pass  # the other side closed
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def generation(emulator: Emulator) -> int:
    client = make_client(emulator_host=emulator.url)
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(BUCKET)
    blob = bucket.blob(KEY)
    blob.upload_from_string(DATA)
    return int(blob.generation or 0)


@pytest.fixture
def relay(emulator: Emulator) -> Iterator[Relay]:
    server = Relay(int(emulator.url.rsplit(":", 1)[1]), cut_after=1_000_000)
    yield server
    server.close()


def test_streams_every_byte_in_chunks(emulator: Emulator, generation: int) -> None:
    chunks: list[bytes] = []
    count = stream_object(make_client(emulator_host=emulator.url), BUCKET, KEY, generation, chunks.append,
                          chunk_size=256 * 1024)
    assert count == len(DATA) and b"".join(chunks) == DATA
    assert max(len(chunk) for chunk in chunks) <= 256 * 1024 and len(chunks) >= len(DATA) // (256 * 1024)


def test_a_replaced_object_is_refused(emulator: Emulator, generation: int) -> None:
    client = make_client(emulator_host=emulator.url)
    blob = client.bucket(BUCKET).blob("acme/replaced.bag")
    blob.upload_from_string(b"the version in the plan")
    planned = int(blob.generation or 0)
    blob.upload_from_string(b"a newer version")
    chunks: list[bytes] = []
    with pytest.raises((gexc.NotFound, gexc.PreconditionFailed)):
        stream_object(client, BUCKET, "acme/replaced.bag", planned, chunks.append)
    assert chunks == []
    stream_object(client, BUCKET, "acme/replaced.bag", 0, chunks.append)  # 0: the live version
    assert chunks == [b"a newer version"]


def test_a_body_cut_short_resumes_from_the_next_byte(relay: Relay, generation: int) -> None:
    chunks: list[bytes] = []
    count = stream_object(make_client(emulator_host=relay.url), BUCKET, KEY, generation, chunks.append, retry_s=10)
    assert count == len(DATA) and b"".join(chunks) == DATA
    media = [request for request in relay.requests if b"alt=media" in request]
    assert len(media) == 2 and f"ifGenerationMatch={generation}".encode() in media[1]  # the same generation
    received = int(media[1].split(b"ange: bytes=", 1)[1].split(b"-", 1)[0])
    assert 0 < received < len(DATA)


def test_a_sink_error_ends_the_read(emulator: Emulator, generation: int) -> None:
    def full(_: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        stream_object(make_client(emulator_host=emulator.url), BUCKET, KEY, generation, full)


@pytest.mark.parametrize("key", [KEY, "a b/ü~%2F?x=1&y#z", "plain"])
@pytest.mark.parametrize("generation", [0, 1733480000123456])
def test_the_media_url_is_the_librarys(key: str, generation: int) -> None:
    """The URL template gives exactly the URL the client library builds, pinned or precondition only."""
    client = make_client(emulator_host="http://127.0.0.1:9")
    pinned = client.bucket(BUCKET).blob(key, generation=generation or None)
    assert _media_url(client, BUCKET, key, generation) == pinned._get_download_url(
        client, if_generation_match=generation or None
    )
    precondition_only = client.bucket(BUCKET).blob(key)
    assert _media_url(client, BUCKET, key, generation, pinned_url=False) == precondition_only._get_download_url(
        client, if_generation_match=generation or None
    )


def test_a_server_that_does_not_name_the_generation_gets_it_in_the_url(emulator: Emulator) -> None:
    """Without X-Goog-Generation the GET is made again with the generation in its URL, and so are later ones:
    a replaced object is still refused, before any byte reaches the sink."""
    client = make_client(emulator_host=emulator.url)
    blob = client.bucket(BUCKET).blob("acme/silent.bag")
    blob.upload_from_string(b"the version in the plan")
    planned = int(blob.generation or 0)
    # A server that does not say which generation it sends: its X-Goog-Generation header renamed.
    relay = Relay(emulator.port, rewrite=lambda data: data.replace(b"X-Goog-Generation:", b"X-Goog-Unnamed-X:"))
    try:
        silent = make_client(emulator_host=relay.url)
        chunks: list[bytes] = []
        count = stream_object(silent, BUCKET, "acme/silent.bag", planned, chunks.append)
        assert count == len(b"the version in the plan")
        media = [request.split(b" HTTP/")[0] for request in relay.requests if b"alt=media" in request]
        assert len(media) == 2 and f"&generation={planned}".encode() not in media[0]
        assert f"&generation={planned}&ifGenerationMatch={planned}".encode() in media[1]
        blob.upload_from_string(b"a newer version")
        chunks = []
        with pytest.raises(gexc.NotFound):
            stream_object(silent, BUCKET, "acme/silent.bag", planned, chunks.append)
        assert chunks == [] and len([r for r in relay.requests if b"alt=media" in r]) == 3  # pinned at once
    finally:
        relay.close()


class ChunkedServer:
    """An HTTP server that answers every request with a chunked body (no Content-Length) and records them."""

    def __init__(self, body: bytes, generation: int) -> None:
        self.answer = (
            b"HTTP/1.1 200 OK\r\nX-Goog-Generation: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (generation, len(body), body)
        )
        self.requests: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            pending = b""
            while data := connection.recv(65536):
                pending += data
                while b"\r\n\r\n" in pending:
                    request, _, pending = pending.partition(b"\r\n\r\n")
                    self.requests.append(request)
                    connection.sendall(self.answer)

    def close(self) -> None:
        self._server.close()


def test_an_answer_without_a_content_length_is_read_through_the_pool() -> None:
    """The plain media connection reads only answers with a Content-Length; another answer (chunked here) is
    fetched again through urllib3's pool, and that client's later GETs go through the pool at once."""
    server = ChunkedServer(b"chunked bytes", 7)
    try:
        client = make_client(emulator_host=server.url)
        for _ in range(2):
            chunks: list[bytes] = []
            assert stream_object(client, BUCKET, KEY, 7, chunks.append) == len(b"chunked bytes")
            assert b"".join(chunks) == b"chunked bytes"
        media = [request for request in server.requests if b"alt=media" in request]
        assert len(media) == 3  # plain (refused), pool; then the pool only
        assert [b"python-urllib3" in request.lower() or b"user-agent" in request.lower() for request in media] == [
            False, True, True
        ]
    finally:
        server.close()
