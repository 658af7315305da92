"""`runtool serve`: the page notebooks served by Voila to a team, as a long-running server.

:func:`serve` runs :mod:`runtool.serve.app` (Voila with runtool's guards) in a child process and stops it, and
with it every page's kernel, on Ctrl-C, SIGTERM or SIGHUP (a closed terminal). The options come from
``[serve]`` in ``runtool.toml`` and the command line (:class:`ServeOptions`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from runtool.config import HOST_NAME, RuntoolConfig
from runtool.errors import RuntoolError, UsageError
from runtool.notebooks import NOTEBOOKS_DIR

__all__ = ["PAGES", "TEMPLATES_DIR", "ServeOptions", "serve", "serve_command", "serve_environment", "server_token"]

PAGES = (
    "01_temporal_coverage.ipynb",
    "02_per_run_analysis.ipynb",
    "03_download_manager.ipynb",
    "04_fleet_kpis.ipynb",
)
"""The notebooks served as pages, the first one at the server's root."""
TEMPLATES_DIR = Path(__file__).resolve().parent / "share"
"""A Jupyter data folder holding runtool's Voila template (``voila/templates/runtool``)."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")
IOPUB_TIMEOUT_S = 120
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


BASE_URL = re.compile(r"/(?:(?!\.\.?/)[A-Za-z0-9._~-]+/)*")
"""A path prefix a reverse proxy forwards: plain path segments (no ``?``, ``#``, ``%``, spaces or ``..``)."""


@dataclass(frozen=True)
class ServeOptions:
    """How `runtool serve` runs: where it listens, who may do what, and how it treats kernels."""

    port: int = 8866
    ip: str = "127.0.0.1"
    read_only: bool = False
    base_url: str = "/"
    cull_idle_s: float = 300.0
    max_kernels: int = 8
    pool_size: int = 1
    preheat: bool = True
    allowed_hosts: tuple[str, ...] = ()
    token_file: Path | None = None
    notebooks: Path = NOTEBOOKS_DIR
    stop_grace_s: float = 20.0

    @classmethod
    def from_config(cls, config: RuntoolConfig, **overrides: Any) -> ServeOptions:
        """The ``[serve]`` settings of ``config``, then ``overrides`` (the command line; None = not given)."""
        hosts = tuple(h for h in (config.serve_allowed_hosts or "").split(",") if h)
        options = cls(
            read_only=config.read_only,
            cull_idle_s=config.serve_cull_idle_s,
            max_kernels=config.serve_max_kernels,
            pool_size=config.serve_pool_size,
            preheat=config.serve_preheat,
            allowed_hosts=hosts,
            token_file=Path(config.serve_token_file).expanduser() if config.serve_token_file else None,
        )
        return replace(options, **{k: v for k, v in overrides.items() if v is not None}).validated()

    def validated(self) -> ServeOptions:
        """These options, or UsageError naming the first bad one."""
        if not 1 <= self.port <= 65535:
            raise UsageError(f"--port {self.port} is not a TCP port (1..65535)")
        if not self.ip or any(c.isspace() or c in "/[]" for c in self.ip):
            raise UsageError(f"--ip {self.ip!r} is not an address to listen on")
        if not (self.base_url.startswith("/") and self.base_url.endswith("/")):
            raise UsageError(f"--base-url {self.base_url!r} must start and end with / (e.g. /runtool/)")
        if "//" in self.base_url or {".", ".."} & set(self.base_url.split("/")):
            raise UsageError(f"--base-url {self.base_url!r} may not hold an empty, . or .. segment (e.g. /runtool/)")
        if not BASE_URL.fullmatch(self.base_url):
            raise UsageError(f"--base-url {self.base_url!r} may hold only letters, digits and - . _ ~ between its "
                             "slashes (a path prefix, no query, fragment, space or %)")
        if not 10 <= self.cull_idle_s <= 7 * 86400:
            raise UsageError(f"--cull-idle {self.cull_idle_s} must be within 10 s..7 days")
        if not 1 <= self.max_kernels <= 1000:
            raise UsageError(f"--max-kernels {self.max_kernels} must be within 1..1000")
        if not 0 <= self.pool_size <= 16:
            raise UsageError(f"--pool-size {self.pool_size} must be within 0..16")
        for name in self.allowed_hosts:
            if not HOST_NAME.fullmatch(name):
                raise UsageError(f"--allowed-host {name!r} is not a host name (letters, digits, - and ., or an "
                                 "IP address)")
        if not (self.notebooks / PAGES[0]).is_file():
            raise UsageError(f"no runtool notebooks in {self.notebooks}")
        return self

    @property
    def loopback(self) -> bool:
        return self.ip in LOOPBACK

    @property
    def url_host(self) -> str:
        """The address to print for the pages, one the server answers to: for a server on every interface the
        first ``--allowed-host``, else this machine's address on its default route (an IP address passes the host
        check; the machine's name may not)."""
        if self.ip == "::1":
            return "[::1]"
        if self.loopback:
            return "127.0.0.1"
        if self.ip in ("0.0.0.0", "::"):
            return self.allowed_hosts[0] if self.allowed_hosts else _default_address(self.ip == "::")
        return f"[{self.ip}]" if ":" in self.ip else self.ip

    def page_url(self, token: str | None, page: str = PAGES[0]) -> str:
        return f"http://{self.url_host}:{self.port}{self.base_url}voila/render/{page}" + (
            f"?token={token}" if token else ""
        )


UNCLAIMED_S = 180
"""A page kernel no browser connected to is stopped once idle this long (or half the culling time, if shorter, but
never under 10 s): its viewer left before the page loaded (tab closed, reload), so no leave beacon will come. Not
shorter: a browser loading a page on a busy server connects late (10 viewers at once on 2 cores took over 60 s,
and a 60 s limit stopped their preheated pages' kernels under them)."""


def _default_address(ipv6: bool) -> str:
    """This machine's address on its default route (no packet is sent); the loopback address without one."""
    family, probe, loopback = (socket.AF_INET6, "2001:db8::1", "[::1]") if ipv6 else (
        socket.AF_INET, "192.0.2.1", "127.0.0.1")
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            address = str(sock.getsockname()[0])
    except OSError:
        return loopback
    return f"[{address}]" if ipv6 else address


CONNECTIONS_PREFIX = "rt"
"""The folder `runtool serve` makes for Voila's connection folder (see :func:`serve`), this and 8 hex digits: short,
as a kernel's socket paths in it must stay under the 107 bytes of a Unix socket address."""
CONNECTIONS_VARIABLE = "RUNTOOL_SERVE_CONNECTIONS"
"""Tells Voila that folder, which it removes as it stops once its connection folder is gone (see :func:`serve`)."""
MAX_SOCKET_PATH = 107
"""The longest path of a Unix socket (Linux), which a kernel's sockets in the connection folder must fit."""


TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
"""A token a file may hold: URL-safe (it goes into links as it is) and long enough not to be guessed."""


def server_token(path: Path | None) -> str:
    """A new token, or with ``path`` (``--token-file``) the one kept there, so a restarted server keeps its links:
    the file is made, readable by its owner only, the first time.

    Raises:
        RuntoolError: the file cannot be read or made, others may read it, or it does not hold one token.
    """
    if path is None:
        return secrets.token_urlsafe(24)
    token = secrets.token_urlsafe(24)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RuntoolError(f"the token file {path} cannot be made: {exc.strerror}") from exc
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{token}\n")
        return token
    try:
        kept = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntoolError(f"the token file {path} cannot be read: {exc}") from exc
    if mode & 0o077:
        raise RuntoolError(f"the token file {path} may be read by others than its owner: run chmod 600 {path}")
    if not TOKEN.fullmatch(kept):
        raise RuntoolError(f"the token file {path} does not hold one token (16 to 256 letters, digits, - or _); "
                           "remove it and runtool serve makes a new one")
    return kept


def serve_command(options: ServeOptions) -> list[str]:
    """The command line of the Voila child process (no secret in it: the token travels in the environment)."""
    preheat = options.preheat and options.pool_size > 0
    return [
        sys.executable,
        "-m",
        "runtool.serve.app",
        str(options.notebooks),
        "--no-browser",
        f"--port={options.port}",
        "--Voila.port_retries=0",
        f"--Voila.ip={options.ip}",
        f"--Voila.base_url={options.base_url}",
        "--show_tracebacks=False",
        "--template=runtool",
        f"--VoilaConfiguration.preheat_kernel={preheat}",
        f"--RuntoolVoila.pages={','.join(PAGES)}",
        f"--RuntoolVoila.pool_size={options.pool_size}",
        f"--RuntoolVoila.max_kernels={options.max_kernels}",
        f"--RuntoolVoila.allowed_hosts={','.join(options.allowed_hosts)}",
        f"--RuntoolVoila.unclaimed_s={min(UNCLAIMED_S, max(10, int(options.cull_idle_s) // 2))}",
        f"--MappingKernelManager.cull_idle_timeout={int(options.cull_idle_s)}",
        f"--MappingKernelManager.cull_interval={max(1, min(60, int(options.cull_idle_s) // 4))}",
        "--MappingKernelManager.cull_connected=False",
        # nbclient drops a cell's output that arrives more than 4 s after the cell ended: with many viewers at
        # once, a busy server passed the page's widget output on later than that and every page stayed blank.
        f"--VoilaExecutor.iopub_timeout={IOPUB_TIMEOUT_S}",
    ]


def serve_environment(
    options: ServeOptions, token: str | None, extra_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The Voila child's environment: runtool's template on the Jupyter path, the token, read-only."""
    from runtool.serve.app import TOKEN_VARIABLE

    env = {**os.environ, **(extra_env or {})}
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(TEMPLATES_DIR), env.get("JUPYTER_PATH", "")) if p)
    env[TOKEN_VARIABLE] = token or ""
    env["RUNTOOL_SERVED"] = "1"  # pages link to the reports this server serves (runtool/reports/)
    if options.read_only:
        env["RUNTOOL_READ_ONLY"] = "1"
    return env


def serve(options: ServeOptions, extra_env: Mapping[str, str] | None = None) -> int:
    """Run Voila in the foreground until Ctrl-C, SIGTERM or SIGHUP; then stop it and every kernel it started."""
    check_port(options)
    token = None if options.loopback else server_token(options.token_file)
    if options.loopback and options.token_file is not None:
        print(f"runtool serve: on loopback no token is needed; {options.token_file} is not used", flush=True)
    # Voila's connection folder (every kernel's connection file, its key, and sockets) goes in a folder of this
    # server's: Voila removes it as it stops, but a Voila killed outright (kill -9, the OOM killer) left it for good.
    # Voila makes it as it starts (made here, it stayed behind, empty, when runtool serve was killed before that).
    connections = Path(tempfile.gettempdir()) / f"{CONNECTIONS_PREFIX}{secrets.token_hex(4)}"
    socket_path = connections / "voila_12345678" / f"kernel-{'0' * 36}-ipc-1"
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        # Every kernel failed to bind its sockets ("File name too long", a traceback each) and no page ever loaded.
        raise RuntoolError(f"the temporary folder {tempfile.gettempdir()} has too long a path for the page kernels' "
                           f"sockets (at most {MAX_SOCKET_PATH} bytes, such as {socket_path}): set TMPDIR to a "
                           "shorter one, such as /tmp")
    environment = {**serve_environment(options, token, extra_env), CONNECTIONS_VARIABLE: str(connections)}
    # The handlers only take note (a handler that raised could do so inside Popen, after Voila started but before
    # runtool knew its process, and leave it running): the loop below then stops Voila. SIGINT gets one too,
    # because a server started in the background (nohup, a script's `&`) inherits SIGINT ignored.
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: stopping.append(signum)) for sig in STOP_SIGNALS}
    try:
        mode = " (read-only)" if options.read_only else ""
        process = subprocess.Popen(serve_command(options), env=environment,
                                   preexec_fn=_stop_with_parent)
        # The URL is printed once Voila listens: a second server started at the same moment on the same port
        # passed check_port too, and only one of them gets the port.
        announced = False
        while process.poll() is None and not stopping:
            if not announced and listening(process.pid, options.port):
                print(f"Serving runtool{mode} at {options.page_url(token)}", flush=True)
                announced = True
            time.sleep(0.1 if not announced else 0.2)
        if not stopping:
            code = process.wait()
            if code:
                print(f"runtool serve: Voila exited with code {code} (its messages are above)", file=sys.stderr,
                      flush=True)
            return code
        stop(process, options.stop_grace_s)
        return 0
    finally:
        remove_connections(connections)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def remove_connections(folder: Path) -> None:
    """Once Voila has exited: stop the kernels it left (a killed Voila stops none; each would exit on its own
    seconds later) and remove ``folder``, with the connection files and sockets in it."""
    left = []
    for process in psutil.process_iter(["cmdline"]):
        if any(part.startswith(f"{folder}{os.sep}") for part in process.info["cmdline"] or []):
            left.append(process)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(left, timeout=10)
    with contextlib.suppress(OSError):
        if folder.stat().st_uid == os.getuid():  # made by Voila, not by anyone who took the name first
            shutil.rmtree(folder, ignore_errors=True)


def _stop_with_parent() -> None:
    """In Voila's process before it starts (Linux): SIGTERM when `runtool serve` dies, so a `runtool serve` killed
    outright (kill -9, the OOM killer) takes Voila and its kernels along instead of leaving it serving the port."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def check_port(options: ServeOptions) -> None:
    """RuntoolError when Voila could not listen at ``options.ip`` port ``options.port`` (taken, or no such address).

    Checked before the URL is printed: Voila would only fail after it (it does not try another port).
    """
    try:
        infos = socket.getaddrinfo(options.ip, options.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RuntoolError(f"cannot listen on {options.ip}: {exc.strerror or exc}") from exc
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Voila (tornado) binds
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6 and len(infos) > 1:
                    continue  # "localhost" on a machine without IPv6: tornado skips ::1 too
                if exc.errno == errno.EADDRINUSE:
                    raise RuntoolError(f"port {options.port} on {options.ip} is in use by another program: "
                                       "stop it or choose another --port") from exc
                raise RuntoolError(f"cannot listen on {options.ip} port {options.port}: {exc.strerror}") from exc


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` listens on TCP ``port``."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def stop(process: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM (Voila then stops its kernels); SIGKILL after ``grace_s``.

    A killed Voila leaves no kernel behind either: each kernel polls its parent process and exits with it.
    """
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        print(f"Voila did not stop within {grace_s:.0f} s; killing it", file=sys.stderr, flush=True)
        process.kill()
        process.wait()
