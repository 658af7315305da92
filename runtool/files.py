"""Writing local files so that a file at its final path is always complete, and taking turns at writing them."""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from runtool.errors import RuntoolError

__all__ = ["LockWaitStopped", "exclusive_lock", "replacing", "write_all", "write_atomic"]

_LOCK_POLL_S = 0.05


class LockWaitStopped(RuntoolError):
    """Waiting for a lock another job holds was given up: the stop event was set, or the timeout passed."""


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it over ``path``.

    On any failure the temporary file is removed and ``path`` (if it existed) is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file beside it, renamed into place: a reader
    sees the old file or the whole new one, never a part. The folder is made when missing.

    ``durable`` (the default): the data is fsynced before the rename, so after a crash the file at ``path`` is
    complete. Without, for copies checked whenever they are read (the label cache), a file costs about half the
    CPU (it counts at ten thousand labels).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    # One temporary name per (process, thread): no two writers share one, and it needs no random bytes.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        try:
            write_all(fd, raw)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def exclusive_lock(
    path: Path, stop: threading.Event | None = None, timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block, waiting while another holds it
    (at most ``timeout`` seconds, when given; ``on_wait`` is called once, when the wait begins).

    The lock is per open file, so it serialises threads of one process as well as separate processes. The
    kernel drops it when its holder dies, so a killed job never leaves it held. The file itself stays:
    removing it would let a waiter lock a file that a newcomer no longer sees.

    Raises:
        LockWaitStopped: ``stop`` was set while waiting, or ``timeout`` seconds passed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                if stop is not None and stop.is_set():
                    raise LockWaitStopped(f"stopped while waiting for {path}") from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockWaitStopped(f"gave up after {timeout:g} s waiting for {path}") from None
                time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a regular file takes it at once; the loop is for a short write)."""
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]
