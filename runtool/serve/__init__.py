"""`runtool serve`: Voila in a child process, serving the page notebooks to a team."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtool.config import RuntoolConfig
from runtool.errors import UsageError

__all__ = ["serve", "serve_command"]


def serve_command(port: int, ip: str, token: str | None, notebooks: Path) -> list[str]:
    """The voila command line for ``runtool serve``."""
    return [
        sys.executable,
        "-m",
        "voila",
        str(notebooks),
        "--no-browser",
        f"--port={port}",
        f"--Voila.ip={ip}",
        f"--token={token or ''}",
        "--show_tracebacks=False",
        "--VoilaConfiguration.file_allowlist=[]",
    ]


def serve(
    config: RuntoolConfig, port: int, ip: str, read_only: bool, notebooks: Path, extra_env: dict[str, str] | None = None
) -> int:
    """Run Voila in the foreground until interrupted."""
    if not (notebooks / "01_temporal_coverage.ipynb").is_file():
        raise UsageError(f"no runtool notebooks in {notebooks}")
    loopback = ip in ("127.0.0.1", "localhost", "::1")
    token = None if loopback else secrets.token_urlsafe(24)
    env = {**os.environ, **(extra_env or {})}
    if read_only:
        env["RUNTOOL_READ_ONLY"] = "1"
    host = "127.0.0.1" if loopback else ip
    url = f"http://{host}:{port}/voila/render/01_temporal_coverage.ipynb" + (f"?token={token}" if token else "")
    # The SIGTERM handler only takes note (a handler that raised could do so inside Popen, after Voila started
    # but before runtool knew its process, and leave it running): the loop below then stops Voila.
    stopping: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        print(f"Serving runtool{' (read-only)' if read_only else ''} at {url}", flush=True)
        process = subprocess.Popen(serve_command(port, ip, token, notebooks), env=env)
        try:
            while process.poll() is None and not stopping:
                time.sleep(0.2)
        except KeyboardInterrupt:
            stopping.append(signal.SIGINT)
        if not stopping:
            return process.wait()
        process.terminate()  # Voila stops its kernels on SIGTERM; wait so none is left behind.
        process.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
