"""A TCP relay that gives loopback the shape of a VM's link to GCS: latency per request, bandwidth per stream.

Put it between google-cloud-storage and fake-gcs-server (point ``STORAGE_EMULATOR_HOST``, or the config's
``emulator_host``, at :attr:`NetworkRelay.url`). Per connection it

- holds the first bytes of every new HTTP request ``latency_ms`` before the emulator sees them, so each request
  costs one round trip, as a request to a real bucket does (~20 ms from a VM in the bucket's region);
- paces the response bytes to ``stream_bytes_per_s`` (a token bucket), as one HTTP stream to GCS tops out at
  tens of MB/s while many streams together fill the link;
- can cut the connection (RST) after ``drop_after`` response bytes, ``drops`` times in all, for fault tests.

It runs in a child process (``spawn``) so that its pumping never competes with the measured client for the GIL;
the request, connection and drop counters are shared memory the parent reads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from types import TracebackType

from runtool.demo.emulator import free_port

__all__ = ["NetworkRelay", "NetworkShape"]

_READ = 64 * 1024
_CATCH_UP_S = 0.05


@dataclass(frozen=True)
class NetworkShape:
    """What the relay does to each connection; ``None`` turns a part off."""

    latency_ms: float = 20.0
    stream_bytes_per_s: float | None = 25e6
    drop_after: int | None = None
    drops: int = 1

    def describe(self) -> str:
        rate = f"{self.stream_bytes_per_s / 1e6:g} MB/s per stream" if self.stream_bytes_per_s else "no rate cap"
        drop = f", cut after {self.drop_after:,} response bytes ({self.drops}×)" if self.drop_after is not None else ""
        return f"{self.latency_ms:g} ms per request, {rate}{drop}"


@dataclass(frozen=True)
class _Counters:
    connections: Synchronized[int]
    requests: Synchronized[int]
    dropped: Synchronized[int]


def _serve(port: int, upstream: int, shape: NetworkShape, counters: _Counters, ready: object) -> None:
    """The child process: relay every connection on ``port`` to ``upstream`` until terminated."""
    latency = shape.latency_ms / 1000

    def take_drop() -> bool:
        with counters.dropped.get_lock():
            if counters.dropped.value >= shape.drops:
                return False
            counters.dropped.value += 1
            return True

    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with counters.connections.get_lock():
            counters.connections.value += 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_writer.transport.abort()
            return
        # A request starts with the first client bytes after a response (or on a fresh connection): HTTP/1.1
        # clients here never pipeline, so this counts requests without parsing them.
        answered = True

        async def requests_out() -> None:
            nonlocal answered
            while data := await client_reader.read(_READ):
                if answered:
                    answered = False
                    with counters.requests.get_lock():
                        counters.requests.value += 1
                    if latency:
                        await asyncio.sleep(latency)
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def responses_in() -> None:
            nonlocal answered
            loop = asyncio.get_running_loop()
            passed = 0
            due = loop.time()
            while data := await server_reader.read(_READ):
                answered = True
                if shape.drop_after is not None and passed + len(data) > shape.drop_after and take_drop():
                    client_writer.write(data[: shape.drop_after - passed])
                    await client_writer.drain()
                    client_writer.transport.abort()
                    server_writer.transport.abort()
                    return
                client_writer.write(data)
                await client_writer.drain()
                passed += len(data)
                if shape.stream_bytes_per_s:
                    now = loop.time()
                    # Credit for up to _CATCH_UP_S of idle time: a sleep that overshoots (a busy machine) is
                    # made up by the next writes instead of lowering the rate, while a stream idle for longer
                    # (between requests) does not bank a burst.
                    due = max(due, now - _CATCH_UP_S) + len(data) / shape.stream_bytes_per_s
                    if due > now:
                        await asyncio.sleep(due - now)
            client_writer.close()

        await asyncio.gather(requests_out(), responses_in(), return_exceptions=True)
        for writer in (client_writer, server_writer):
            writer.transport.abort()

    async def main() -> None:
        server = await asyncio.start_server(connect, "127.0.0.1", port)
        ready.set()  # type: ignore[attr-defined]
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class NetworkRelay:
    """A :class:`NetworkShape` relay to ``upstream_port`` on 127.0.0.1, in its own process (a context manager)."""

    def __init__(self, upstream_port: int, shape: NetworkShape | None = None) -> None:
        self.shape = shape or NetworkShape()
        self.port = free_port()
        context = multiprocessing.get_context("spawn")
        self._counters = _Counters(context.Value("q", 0), context.Value("q", 0), context.Value("q", 0))
        self._ready = context.Event()
        self._process = context.Process(
            target=_serve, args=(self.port, upstream_port, self.shape, self._counters, self._ready), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        return int(self._counters.connections.value)

    @property
    def requests(self) -> int:
        return int(self._counters.requests.value)

    @property
    def dropped(self) -> int:
        return int(self._counters.dropped.value)

    def __enter__(self) -> NetworkRelay:
        self._process.start()
        deadline = time.monotonic() + 30
        while not self._ready.wait(0.05):
            if time.monotonic() > deadline or not self._process.is_alive():
                self._process.terminate()
                raise OSError(f"the relay on port {self.port} did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._process.terminate()
        self._process.join()
