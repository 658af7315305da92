"""A Voila server in a child process, started and waited for: used by the browser tests and benchmarks."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from runtool.errors import RuntoolError

__all__ = ["ServerError", "VoilaProcess"]


class ServerError(RuntoolError):
    """The server exited or did not answer in time."""


class VoilaProcess:
    """Runs ``command`` (a Voila or ``runtool serve`` command line on ``port``) until :meth:`stop`.

    Readiness is polled on ``/voila/static/``: every GET of a notebook URL would start a kernel.
    """

    def __init__(self, command: Sequence[str], port: int, log: Path, env: Mapping[str, str] | None = None,
                 timeout: float = 60.0) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.process = subprocess.Popen(list(command), stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        env=dict(env) if env is not None else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the server exited with code {self.process.returncode}: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/voila/static/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # the server answers (a 404 for the folder itself is fine)
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise ServerError(f"the server did not answer on {self.base} within {timeout:.0f} s: {log.read_text()}")

    def url(self, page: str, query: str = "") -> str:
        return f"{self.base}/voila/render/{page}" + (f"?{query}" if query else "")

    def stop(self) -> None:
        """SIGTERM (Voila then stops its kernels), SIGKILL if it does not exit within 20 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
