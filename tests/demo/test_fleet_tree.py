"""Tests for :func:`write_fleet_tree`: a tree preloaded into fake-gcs-server holds what seeding uploads
(and for the emulator start that preloading relies on).

Both paths start from the same plan; the buckets are compared through plain ``client.list_blobs`` (names,
sizes and the checksums each server computed) and the local roots by a walk of their files.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import replace
from pathlib import Path

import google_crc32c
import pytest
from google.cloud import storage

from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.demo.fleet import FleetPlan, PlannedRun, plan_fleet, seed_fleet, write_fleet_tree
from runtool.storage import make_client


def fleet_config(root: Path, emulator: Emulator) -> RuntoolConfig:
    return RuntoolConfig(
        raw_bucket="tree-test-raw", ml_bucket="tree-test-ml", emulator_host=emulator.url, data_dir=root,
        raw_root=root / "raw", processed_root=root / "processed", ml_root=root / "ML", cache_dir=root / "cache",
    )


def listing(client: storage.Client, config: RuntoolConfig) -> dict[str, dict[str, tuple[int, str, str]]]:
    """Per bucket role: every object's size, CRC32C and MD5 as the server reports them."""
    return {
        role: {b.name: (b.size or 0, b.crc32c or "", b.md5_hash or "") for b in client.list_blobs(name)}
        for role, name in (("raw", config.raw_bucket), ("ml", config.ml_bucket))
    }


def local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_run_of_each_kind(plan: FleetPlan) -> FleetPlan:
    """The plan cut to its first run of every ML case, local copy and raw upload combination (and every
    malformed key): all the object kinds, at a quarter of the small fleet's seeding time."""
    kinds: dict[tuple[object, ...], PlannedRun] = {}
    for run in plan.runs:
        kinds.setdefault((run.ml.case, run.local.raw, run.local.ml, run.in_raw_bucket), run)
    return replace(plan, runs=tuple(kinds.values()))


def test_a_preloaded_tree_holds_what_seeding_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # make_client sets it; restored afterwards
    plan = one_run_of_each_kind(plan_fleet("small", 7))

    with Emulator() as uploaded:
        seeded_config = fleet_config(tmp_path / "seeded", uploaded)
        client = make_client(emulator_host=uploaded.url)
        seeded = seed_fleet(seeded_config, plan, client)
        expected = listing(client, seeded_config)

    preloaded = Emulator(data_dir=tmp_path / "gcs", preload=tmp_path / "tree")
    tree_config = fleet_config(tmp_path / "written", preloaded)
    written = write_fleet_tree(tree_config, plan, tmp_path / "tree")
    started = time.perf_counter()
    with preloaded.start(timeout=120):
        print(f"\npreloading the small fleet took {time.perf_counter() - started:.1f} s: {written}")
        actual = listing(make_client(emulator_host=preloaded.url), tree_config)

    assert actual == expected
    assert replace(written, seconds=0) == replace(seeded, seconds=0)
    assert local_files(tmp_path / "written") == local_files(tmp_path / "seeded") != {}
    # The server's checksums are those of the files written (no re-encoding on the way in).
    some_bag = next(k for k, (size, _, _) in expected["raw"].items() if size > 0)
    data = (tmp_path / "tree" / tree_config.raw_bucket / some_bag).read_bytes()
    assert actual["raw"][some_bag] == (
        len(data),
        base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
        base64.b64encode(hashlib.md5(data).digest()).decode(),
    )


def test_entering_a_started_emulator_keeps_its_server() -> None:
    emulator = Emulator()
    with emulator.start() as entered:
        assert entered is emulator
        process = emulator.process
        assert process is not None and emulator.start().process is process
    assert emulator.process is None and process.poll() is not None
