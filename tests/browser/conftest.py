"""A real Voila server (``runtool serve``) on the demo fleet, and a real headless chromium.

Every browser context made here records every request its pages make; a test whose pages asked for anything
outside 127.0.0.1 (a CDN, a font, a tracker) fails at teardown (issue 8: no request leaves the host).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil
import pytest

from runtool.demo.emulator import free_port
from runtool.demo.server import ServerError
from tests.conftest import SeededFleet, write_toml

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RUNTOOL = str(Path(sys.executable).with_name("runtool"))
KERNEL_FILE = re.compile(r"kernel-([0-9a-f-]{36})\.json")
T = TypeVar("T")


def poll(probe: Callable[[], T], timeout: float, interval: float = 0.25, what: str = "") -> T:
    """The first truthy result of ``probe`` within ``timeout`` seconds; AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what} (last: {result!r})")
        time.sleep(interval)


def running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ServeProcess:
    """``runtool serve OPTIONS`` on a free port, its output in a log file; Voila and its kernels seen with psutil.

    ``config_path`` None serves an empty data folder (``RUNTOOL_DATA_DIR``): pages then say there is no
    inventory, which is all a test of the server itself needs.
    """

    def __init__(self, config_path: Path | None, *options: str, ip: str = "127.0.0.1", log: Path | None = None,
                 env: Mapping[str, str] | None = None, timeout: float = 120.0) -> None:
        self.port = free_port()
        self.ip = ip
        self.base = f"http://{ip}:{self.port}"
        environ = {**os.environ, **(env or {})}
        command = [RUNTOOL]
        if config_path is not None:
            command += ["--config", str(config_path)]
            environ["RUNTOOL_CONFIG"] = str(config_path)
            log = log or config_path.with_suffix(f".voila-{self.port}.log")
        assert log is not None, "a server without a config file needs a log path"
        self.log = log
        self.command = [*command, "serve", "--port", str(self.port), "--ip", ip, *options]
        self.process = subprocess.Popen(self.command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=environ)
        self._voila: psutil.Process | None = None
        self.token: str | None = None
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Polls ``/voila/static/`` (a page GET would start a kernel) until Voila answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"runtool serve exited with code {self.process.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/voila/static/", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # the server answers (a 404 for the folder itself is fine)
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            raise ServerError(f"runtool serve did not answer on {self.base} within {timeout:.0f} s: {self.log_text()}")
        # `runtool serve` prints its URL (with the token) once it has seen Voila listen, a moment after Voila
        # answers: read the token only from that line (read earlier, a token server's token was missed).
        while "Serving runtool" not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"runtool serve answered but never said where: {self.log_text()}")
            time.sleep(0.05)
        match = re.search(r"\?token=([\w-]+)", self.log_text())
        self.token = match.group(1) if match else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, page: str, query: str = "") -> str:
        parts = [part for part in (query, f"token={self.token}" if self.token else "") if part]
        return f"{self.base}/voila/render/{page}" + (f"?{'&'.join(parts)}" if parts else "")

    @property
    def voila(self) -> psutil.Process:
        """The Voila process (``python -m runtool.serve.app``), a child of ``runtool serve``."""
        if self._voila is None:
            def find() -> psutil.Process | None:
                for child in psutil.Process(self.process.pid).children():
                    if "runtool.serve.app" in child.cmdline():
                        return child
                return None

            self._voila = poll(find, 60, what="the Voila child of runtool serve")
        return self._voila

    def kernels(self) -> dict[str, psutil.Process]:
        """Kernel id → process of every kernel Voila runs now (its ipykernel children)."""
        found = {}
        try:
            children = self.voila.children()
        except psutil.NoSuchProcess:
            return {}
        for child in children:
            try:
                match = KERNEL_FILE.search(" ".join(child.cmdline()))
                if match and running(child):
                    found[match.group(1)] = child
            except psutil.NoSuchProcess:
                continue
        return found

    def wait_kernels(self, accept: Callable[[dict[str, psutil.Process]], bool], timeout: float,
                     what: str) -> dict[str, psutil.Process]:
        """The kernels once ``accept`` holds for them (polled); AssertionError after ``timeout`` s."""
        last: dict[str, psutil.Process] = {}

        def probe() -> bool:
            nonlocal last
            last = self.kernels()
            return accept(last)

        try:
            poll(probe, timeout, interval=0.5, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; kernels: {sorted(last)}") from None
        return last

    def wait_pools_filled(self, pages: Sequence[str], timeout: float = 180) -> None:
        """Until Voila has logged each page's pool filled: its preheated kernel started and rendering its page, so a
        request now is handed that kernel (a kernel process alone may still be starting, on a busy machine)."""
        def filled() -> bool:
            text = self.log_text()
            return all(f"Kernel pool of {page} is filled" in text for page in pages)

        poll(filled, timeout, interval=0.5, what="every page's pool filled")

    def descendants(self) -> list[psutil.Process]:
        try:
            return [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> list[psutil.Process]:
        """Signal ``runtool serve`` and wait for it; returns the processes it started still alive 30 s later.

        Whatever survives is killed, so a failing test leaks no Voila or kernel either.
        """
        started = self.descendants()
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _, alive = psutil.wait_procs(started, timeout=30)
        survivors = [p for p in alive if running(p)]
        for survivor in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                survivor.kill()
        psutil.wait_procs(survivors, timeout=10)
        return survivors


class VoilaServer(ServeProcess):
    """``runtool serve`` on a free port with the given config file (and any further ``serve`` options)."""

    def __init__(self, config_path: Path, read_only: bool = False, *options: str, **kwargs: Any) -> None:
        super().__init__(config_path, *(["--read-only"] if read_only else []), *options, **kwargs)


@pytest.fixture(scope="session")
def served_config(demo_fleet: SeededFleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file for the demo fleet, with its inventory scanned once."""
    from runtool.services import ServiceContainer

    path = write_toml(demo_fleet.config, tmp_path_factory.mktemp("serve") / "runtool.toml")
    ServiceContainer.from_environment(path).inventory.refresh()
    return path


@pytest.fixture(scope="session")
def voila(served_config: Path) -> Iterator[VoilaServer]:
    server = VoilaServer(served_config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def config_path(demo_fleet: SeededFleet, tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> Path:
    """A config file on the demo fleet's buckets with a data folder of the test module's own, inventory scanned.

    Pages that download or fetch write there, so they never change what other modules' pages read.
    """
    from runtool.services import ServiceContainer

    root = tmp_path_factory.mktemp(f"{request.module.__name__.rpartition('.')[2]}-serve")
    path = write_toml(demo_fleet.config.with_overrides(data_dir=root / "data"), root / "runtool.toml")
    ServiceContainer.from_environment(path).inventory.refresh()
    return path


@pytest.fixture(scope="module")
def services(config_path: Path) -> Any:
    """Services on :func:`config_path`, for expected values."""
    from runtool.services import ServiceContainer

    return ServiceContainer.from_environment(config_path)


@pytest.fixture(scope="module")
def server(config_path: Path) -> Iterator[VoilaServer]:
    """``runtool serve`` on :func:`config_path`."""
    voila = VoilaServer(config_path)
    yield voila
    voila.stop()


LOCAL_SCHEMES = ("data", "blob", "about")
"""URLs that never leave the browser."""


def offsite(url: str) -> bool:
    """Whether the browser's request for ``url`` leaves this machine's 127.0.0.1."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return False
    return not (parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == "127.0.0.1")


class Contexts:
    """Makes browser contexts that record every request (and websocket) of their pages, and closes them."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.requested: list[str] = []
        self.opened: list[Any] = []

    def new(self, **options: Any) -> Any:
        context = self.browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **options})
        context.on("request", lambda request: self.requested.append(request.url))
        context.on("page", lambda tab: tab.on("websocket", lambda socket: self.requested.append(socket.url)))
        self.opened.append(context)
        return context

    def new_page(self, **options: Any) -> Any:
        tab = self.new(**options).new_page()
        tab.set_default_timeout(60_000)
        return tab

    def close(self) -> None:
        """Closes every tab as a viewer does (so each page's leave beacon stops its kernel), then the contexts.

        Closing a context alone sends no beacon: its kernels would stay until culled, and a server shared by
        a module's tests would soon be at its kernel cap.
        """
        tabs = [tab for context in self.opened for tab in context.pages if not tab.is_closed()]
        for tab in tabs:
            with contextlib.suppress(Exception):  # closed meanwhile
                tab.close(run_before_unload=True)
        with contextlib.suppress(AssertionError):
            poll(lambda: self._all_closed(tabs), 10, interval=0.1, what="tabs closed")
        for context in self.opened:
            with contextlib.suppress(Exception):  # already closed by the test
                context.close()

    def _all_closed(self, tabs: list[Any]) -> bool:
        # Playwright's sync API takes in events (a tab that closed) only during a call to the browser: without
        # one, is_closed() stayed False and every test's teardown waited the whole 10 s.
        for context in self.opened:
            with contextlib.suppress(Exception):  # closed by the test
                context.cookies()
        return all(tab.is_closed() for tab in tabs)

    @property
    def offsite(self) -> list[str]:
        return sorted({url for url in self.requested if offsite(url)})


@pytest.fixture
def contexts(browser: Any) -> Iterator[Contexts]:
    """Browser contexts for one test; the test fails if any of their pages requested a URL off 127.0.0.1."""
    made = Contexts(browser)
    yield made
    made.close()
    assert not made.offsite, f"requests left 127.0.0.1: {made.offsite}"


@pytest.fixture
def page(contexts: Contexts) -> Any:
    return contexts.new_page()


_OVERLAPS = """([axes, texts]) => {
    const found = [];
    for (const axis of document.querySelectorAll(axes)) {
        const boxes = [...axis.querySelectorAll(texts)]
            .map(t => [t.textContent, t.getBoundingClientRect()]).filter(([s, r]) => s && r.width > 0);
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
            const [a, r] = boxes[i], [b, q] = boxes[j];
            if (r.left < q.right - 0.5 && q.left < r.right - 0.5 && r.top < q.bottom - 0.5 && q.top < r.bottom - 0.5)
                found.push(`${a} / ${b}`);
        }
    }
    return found;
}"""


def overlapping_texts(page: Any, axes: str, texts: str = ".tick text") -> list[str]:
    """Pairs (``"a / b"``) of the ``texts`` of one of the ``axes`` whose boxes intersect; hidden texts have no box."""
    found: list[str] = page.evaluate(_OVERLAPS, [axes, texts])
    return found


_CROWDED_TITLES = """([axes, gap]) => {
    const found = [];
    for (const axis of document.querySelectorAll(axes)) {
        const title = axis.querySelector('text.axislabel');
        const t = title?.getBoundingClientRect();
        if (!title?.textContent || !t.width) continue;
        const chart = axis.closest('svg').getBoundingClientRect();
        if (t.left < chart.left - 0.5 || t.right > chart.right + 0.5 || t.top < chart.top - 0.5
            || t.bottom > chart.bottom + 0.5) found.push(`${title.textContent}: outside its chart`);
        const ticks = [...axis.querySelectorAll('.tick text')]
            .map(tick => [tick.textContent, tick.getBoundingClientRect()]).filter(([s, r]) => s && r.width > 0);
        for (const [text, r] of ticks) {
            const apart = Math.max(r.left - t.right, t.left - r.right, r.top - t.bottom, t.top - r.bottom);
            if (apart < gap) found.push(`${title.textContent} / ${text}: ${apart.toFixed(1)} px apart`);
        }
    }
    return found;
}"""


def crowded_axis_titles(page: Any, axes: str, gap: float = 6.0) -> list[str]:
    """The titles of ``axes`` (bqplot) closer than ``gap`` px to one of their tick labels, or reaching out of their
    chart, each as ``"title / tick: N px apart"`` or ``"title: outside its chart"``."""
    found: list[str] = page.evaluate(_CROWDED_TITLES, [axes, gap])
    return found


_LINKS = """() => [...document.querySelectorAll('a')].flatMap(a => {
    const r = a.getBoundingClientRect();
    if (!r.width || !r.height || !a.textContent.trim()) return [];
    const area = a.parentElement.closest('[class*="rt-"]');
    return [{text: a.textContent.trim(), colour: getComputedStyle(a).color,
             areas: [...(area?.classList ?? [])].filter(c => c.startsWith('rt-'))}];
})"""


def visible_links(page: Any) -> list[dict[str, Any]]:
    """Every link with text drawn on the page: its text, its computed colour (``rgb(r, g, b)``) and the ``rt-*``
    classes of the nearest element around it that has one."""
    found: list[dict[str, Any]] = page.evaluate(_LINKS)
    return found


def screenshot(page: Any, name: str) -> Path:
    """A PNG of the whole page under test-artifacts/.

    Voila scrolls inside ``#rendered_cells``, not the document, so a ``full_page`` screenshot holds only the
    viewport; the viewport is grown to the content first.
    """
    height = page.evaluate(
        "() => Math.max(document.documentElement.scrollHeight,"
        " document.getElementById('rendered_cells')?.scrollHeight ?? 0)"
    )
    viewport = page.viewport_size
    if viewport and height > viewport["height"]:
        page.set_viewport_size({"width": viewport["width"], "height": min(int(height) + 40, 8000)})
        page.wait_for_timeout(300)  # let bqplot redraw at the new size
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
