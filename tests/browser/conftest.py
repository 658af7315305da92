"""A real Voila server (``runtool serve``) on the demo fleet, and a real headless chromium."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtool.demo.emulator import free_port
from runtool.demo.server import VoilaProcess
from tests.conftest import SeededFleet, write_toml

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class VoilaServer(VoilaProcess):
    """``runtool serve`` on a free port with the given config file."""

    def __init__(self, config_path: Path, read_only: bool = False) -> None:
        port = free_port()
        command = [str(Path(sys.executable).with_name("runtool")), "--config", str(config_path), "serve",
                   "--port", str(port), *(["--read-only"] if read_only else [])]
        super().__init__(command, port, config_path.with_suffix(f".voila-{port}.log"),
                         env={**os.environ, "RUNTOOL_CONFIG": str(config_path)})


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
