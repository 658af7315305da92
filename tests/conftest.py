"""Shared fixtures: a real fake-gcs-server, a seeded demo fleet, and the "skip with a hint" rule."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage

from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.storage import make_client

REQUIRE_ALL = os.environ.get("RUNTOOL_REQUIRE_ALL") == "1"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync", "--disable-quic"]


def require(available: bool, hint: str) -> None:
    """Skip when a system part is missing, with the install hint; fail instead under RUNTOOL_REQUIRE_ALL=1."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required system part missing (RUNTOOL_REQUIRE_ALL=1): {hint}")
    pytest.skip(hint)


def make_config(
    root: Path, emulator_url: str | None = None, raw: str = "fleet-raw", ml: str = "fleet-ml"
) -> RuntoolConfig:
    """A config whose local roots are under ``root`` (and whose buckets live on ``emulator_url``, if given)."""
    return RuntoolConfig(
        raw_bucket=raw,
        ml_bucket=ml,
        emulator_host=emulator_url,
        data_dir=root,
        raw_root=root / "raw",
        processed_root=root / "processed",
        ml_root=root / "ML",
        cache_dir=root / "cache",
        list_workers=4,
        request_retry_s=3.0,
    )


def write_toml(config: RuntoolConfig, path: Path) -> Path:
    path.write_text(
        f'[buckets]\nraw = "{config.raw_bucket}"\nml = "{config.ml_bucket}"\n'
        f'emulator_host = "{config.emulator_host}"\nrequest_retry_s = 3\n'
        f'[paths]\ndata_dir = "{config.data_dir}"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """One in-memory fake-gcs-server for the whole session."""
    with Emulator() as server:
        yield server


@dataclass(frozen=True)
class SeededFleet:
    config: RuntoolConfig
    client: storage.Client
    root: Path


@pytest.fixture(scope="session")
def demo_fleet(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> SeededFleet:
    """The small demo fleet, seeded once per session into its own buckets (tests must not modify it)."""
    from runtool.demo.fleet import plan_fleet, seed_fleet

    root = tmp_path_factory.mktemp("demo-fleet")
    config = make_config(root, emulator.url, raw="demo-fleet-raw", ml="demo-fleet-ml")
    client = make_client(emulator_host=emulator.url)
    seed_fleet(config, plan_fleet("small", 7), client)
    return SeededFleet(config, client, root)


@pytest.fixture
def fresh_config(emulator: Emulator, tmp_path: Path, request: pytest.FixtureRequest) -> RuntoolConfig:
    """A config with empty, test-private buckets (created) and local roots under tmp_path."""
    suffix = f"{abs(hash(request.node.nodeid)) % 10**10}"
    config = make_config(tmp_path, emulator.url, raw=f"raw-{suffix}", ml=f"ml-{suffix}")
    client = make_client(emulator_host=emulator.url)
    for name in (config.raw_bucket, config.ml_bucket):
        bucket = client.bucket(name)
        if not bucket.exists():
            client.create_bucket(name)
    return config


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Debian chromium for the session (Playwright allows one sync session per process)."""
    require(CHROMIUM.exists(), "Debian chromium is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield instance
        instance.close()
