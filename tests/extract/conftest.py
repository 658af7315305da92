"""Fixtures: a demo run written once per session, copied into each test's own raw root."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtool.config import RuntoolConfig
from runtool.services.extraction import ExtractionService
from runtool.services.local_state import LocalStateService
from runtool.storage import local_raw_dir
from tests.conftest import make_config
from tests.extract.bagfiles import COORD, DemoRun, copy_run, write_demo_run


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """Three consecutive 10 s bags from the demo writer (shared: tests copy them before changing anything)."""
    return write_demo_run(tmp_path_factory.mktemp("demo-run"))


@pytest.fixture
def config(tmp_path: Path) -> RuntoolConfig:
    return make_config(tmp_path)


@pytest.fixture
def raw_run(demo_run: DemoRun, config: RuntoolConfig) -> DemoRun:
    """The demo run's bags in this test's raw root, at :data:`COORD`."""
    return copy_run(demo_run, local_raw_dir(config.raw_root, COORD))


@pytest.fixture
def local(config: RuntoolConfig) -> LocalStateService:
    return LocalStateService(config)


@pytest.fixture
def service(config: RuntoolConfig, local: LocalStateService) -> ExtractionService:
    return ExtractionService(config, local)
