"""A small hand-made fleet in the session's fake-gcs-server, and service containers over it.

Every count is chosen so that the expected KPI values can be worked out by hand (see FLEET); E is 4
to keep the number of objects small.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.cloud import storage

from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.storage import make_client, ml_file_key, raw_bag_key
from tests.conftest import make_config as base_config

EXPECTED_SAMPLES = 4.0
UNDER_LABELLED_PCT = 80.0
_bucket_counter = itertools.count()


@dataclass(frozen=True)
class RunSpec:
    """One run to upload: ``bags`` raw bags, ``labels`` label files and ``frames`` frame files."""

    lb: str
    timestamp: str
    bags: int
    labels: int
    frames: int

    @property
    def coordinate(self) -> RunCoordinate:
        return RunCoordinate.parse(f"{self.lb}/{self.timestamp}")


LB01 = "c1/r1/f1/t1/lb01"
LB02 = "c1/r1/f1/t1/lb02"
LB03 = "c1/r1/f1/t2/lb03"

FLEET: tuple[RunSpec, ...] = (
    RunSpec(LB01, "2025_08_01T08:00:00Z", bags=2, labels=8, frames=10),  # 8/8   = 100 %
    RunSpec(LB01, "2025_08_03T09:30:00Z", bags=3, labels=3, frames=3),  # 3/12  = 25 %, under
    RunSpec(LB01, "2025_08_03T14:00:00Z", bags=1, labels=3, frames=4),  # 3/4   = 75 %, under
    RunSpec(LB01, "2025_08_05T10:00:00Z", bags=0, labels=2, frames=2),  # ML only
    RunSpec(LB02, "2025_08_02T07:00:00Z", bags=2, labels=6, frames=6),  # 6/8   = 75 %, under
    RunSpec(LB02, "2025_08_06T07:00:00Z", bags=1, labels=0, frames=0),  # 0/4   = 0 %, under
    RunSpec(LB03, "2025_08_04T12:00:00Z", bags=1, labels=4, frames=4),  # 4/4   = 100 %
)
ANOMALIES = {"raw": ("c1/r1/f1/t1/lb01/notes.txt",), "ml": ("raw/c1/README.md",)}


def _bag_stem(spec: RunSpec, index: int) -> str:
    moment = spec.coordinate.start_time
    return f"_{moment:%Y-%m-%d-%H-%M-%S}_{index}"


def seed(client: storage.Client, raw_bucket: str, ml_bucket: str, runs: Iterable[RunSpec]) -> None:
    """Upload the runs following the bucket layout (tiny bodies: only keys and counts matter here)."""
    raw, ml = client.bucket(raw_bucket), client.bucket(ml_bucket)
    for spec in runs:
        coord = spec.coordinate
        for index in range(spec.bags):
            raw.blob(raw_bag_key(coord, f"{_bag_stem(spec, index)}.bag")).upload_from_string(b"bag" * (index + 1))
        dirs = max(spec.bags, 1)
        for kind, count, suffix in (("labels", spec.labels, "txt"), ("frames", spec.frames, "jpg")):
            for n in range(count):
                name = f"{1754035200 + n}.{n:09d}.{suffix}"
                key = ml_file_key(coord, _bag_stem(spec, n % dirs), kind, name)  # type: ignore[arg-type]
                ml.blob(key).upload_from_string(b"0 0.5 0.5 0.1 0.1\n" if kind == "labels" else b"\xff\xd8")
    for key in ANOMALIES["raw"]:
        raw.blob(key).upload_from_string(b"x")
    for key in ANOMALIES["ml"]:
        ml.blob(key).upload_from_string(b"x")


def make_config(root: Path, emulator_url: str, raw: str, ml: str, read_only: bool = False) -> RuntoolConfig:
    return base_config(root, emulator_url, raw, ml).with_overrides(
        expected_samples_per_bag=EXPECTED_SAMPLES, under_labelled_pct=UNDER_LABELLED_PCT, list_workers=2,
        read_only=read_only,
    )


def _new_buckets(client: storage.Client, name: str) -> tuple[str, str]:
    serial = next(_bucket_counter)
    raw, ml = f"ui-{name}-{serial}-raw", f"ui-{name}-{serial}-ml"
    for bucket in (raw, ml):
        client.create_bucket(bucket)
    return raw, ml


@pytest.fixture(scope="session")
def seeded_buckets(emulator: Emulator) -> tuple[str, str]:
    """Raw and ML bucket names holding FLEET and ANOMALIES (tests must not write to them)."""
    client = make_client(emulator_host=emulator.url)
    raw, ml = _new_buckets(client, "fleet")
    seed(client, raw, ml, FLEET)
    return raw, ml


@pytest.fixture
def fleet_config(emulator: Emulator, seeded_buckets: tuple[str, str], tmp_path: Path) -> RuntoolConfig:
    """A config over the seeded buckets with a private cache and local roots."""
    return make_config(tmp_path, emulator.url, *seeded_buckets)


@pytest.fixture
def services(fleet_config: RuntoolConfig) -> ServiceContainer:
    """Services over the seeded fleet with the inventory already scanned."""
    container = ServiceContainer(fleet_config)
    container.inventory.refresh()
    return container


@pytest.fixture
def empty_config(emulator: Emulator, tmp_path: Path) -> RuntoolConfig:
    """A config over two new, empty buckets."""
    client = make_client(emulator_host=emulator.url)
    return make_config(tmp_path, emulator.url, *_new_buckets(client, "empty"))


def pytest_configure(config: pytest.Config) -> None:
    # bqscales (imported by bqplot) still passes trait metadata the traitlets-4.0 way.
    config.addinivalue_line("filterwarnings", "ignore:metadata .* was set from the constructor:DeprecationWarning")
