"""A real Voila server (``runtool serve``) on the demo fleet, and a real headless chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtool.demo.emulator import free_port
from tests.conftest import SeededFleet, write_toml

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class VoilaServer:
    def __init__(self, config_path: Path, read_only: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [str(Path(sys.executable).with_name("runtool")), "--config", str(config_path), "serve",
                "--port", str(self.port)]
        if read_only:
            args.append("--read-only")
        self.log = config_path.with_suffix(f".voila-{self.port}.log")
        self.process = subprocess.Popen(args, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "RUNTOOL_CONFIG": str(config_path)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runtool serve exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/voila/static/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # the server answers (a 404 for the folder itself is fine)
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"voila did not start: {self.log.read_text()}")

    def url(self, page: str, query: str = "") -> str:
        return f"{self.base}/voila/render/{page}" + (f"?{query}" if query else "")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


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


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    yield tab
    context.close()


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
