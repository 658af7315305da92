"""Raw download throughput: runtool's verified, atomic downloads against a plain ``download_to_filename`` loop.

Run: ``.venv/bin/python -m benchmarks.transfers [--files 20] [--mib 50] [--repeats 5]``. Everything runs in one
process against one in-memory fake-gcs-server; each repeat runs every case once, in the same order, so load
from other work on the machine falls on all of them alike. Targets are deleted before every timed case (and
not timed), so no case pays for truncating another's files.

Cases:

- the baseline: one ``Blob.download_to_filename`` after another, library defaults except ``checksum=None``
  (no verification at all: the cheapest plain client); also with the library's default checksum;
- runtool planning one run (one listing) and ``TransferService.execute`` of that plan, with 1 and with 4 file
  workers (CRC32C verified, temporary file synced then renamed, generation pinned, the run's lock and state
  refresh): all of it timed, the planning too;
- the single-run CLI download (``runtool download COORD --yes`` without its start-up): one run of
  ``--cli-files`` × ``--cli-mib``, planned and run through ``execute_bulk`` on the executor the CLI builds,
  against the same baseline loop over the same objects.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from google.cloud import storage

from benchmarks.common import RESULTS_DIR, markdown_table, measured_commit, median, say, spread
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.executor import executor_from_config
from runtool.services.transfers import BULK_RUNS_AT_ONCE, BulkPlan, TransferProgress
from runtool.storage import make_client, raw_bag_key

MANY = RunCoordinate.parse("bench/region/field/TW_1/LB_0001/2025_08_01T08:00:00Z")
CLI_RUN = RunCoordinate.parse("bench/region/field/TW_1/LB_0002/2025_08_01T09:00:00Z")
MEASURED = ("runtool/services", "runtool/storage", "runtool/config.py", "runtool/models", "benchmarks/transfers.py")
"""The code these cases run: the reported commit says whether any of it had uncommitted changes."""


def seed(bucket: storage.Bucket, run: RunCoordinate, files: int, size: int, rng: np.random.Generator) -> list[str]:
    payload = rng.bytes(size)
    keys = []
    for i in range(files):
        key = raw_bag_key(run, f"_2025-08-01-08-{i // 60:02d}-{i % 60:02d}_{i}.bag")
        bucket.blob(key).upload_from_string(payload[i:] + payload[:i])  # distinct bytes, distinct CRC32C
        keys.append(key)
    return keys


def plain_loop(bucket: storage.Bucket, keys: list[str], size: int, target: Path,
               checksum: str | None) -> Callable[[], None]:
    def run() -> None:
        for key in keys:
            path = target / key.rsplit("/", 1)[1]
            bucket.blob(key).download_to_filename(str(path), checksum=checksum)
            assert path.stat().st_size == size

    return run


def runtool_execute(config: RuntoolConfig, run: RunCoordinate, workers: int) -> Callable[[], None]:
    def go() -> None:
        services = ServiceContainer(config)
        services.transfer_engine.workers = workers
        plan = services.transfers.plan_raw_download(run)
        assert len(plan.to_transfer) == len(plan.files)
        result = services.transfers.execute(plan)
        assert result.ok, result.summary()

    return go


def runtool_cli(config: RuntoolConfig, run: RunCoordinate) -> Callable[[], None]:
    """What ``runtool download COORD --yes`` does after its preview (cli._confirm_and_execute)."""

    def go() -> None:
        services = ServiceContainer(config)
        plan = services.transfers.plan_raw_download(run)
        bulk = BulkPlan(plan.operation, (plan,))
        seen: list[TransferProgress] = []
        with executor_from_config(config.dask_scheduler, workers=BULK_RUNS_AT_ONCE) as executor:
            result = services.transfers.execute_bulk(bulk, progress=lambda _r, _n, e: seen.append(e),
                                                      executor=executor)
        assert result.ok, result.summary()

    return go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--cli-files", type=int, default=8)
    parser.add_argument("--cli-mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if os.environ.get("RUNTOOL_DASK_SCHEDULER"):
        parser.error("unset RUNTOOL_DASK_SCHEDULER: the CLI case measures the default local executor")
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="runtool-bench-transfers-"))
    try:
        with Emulator() as emulator:
            config = RuntoolConfig(raw_bucket="bench-raw", ml_bucket="bench-ml", emulator_host=emulator.url,
                                   data_dir=work, raw_root=work / "raw", processed_root=work / "processed",
                                   ml_root=work / "ML", cache_dir=work / "cache")
            client = make_client(emulator_host=emulator.url)
            bucket = client.create_bucket(config.raw_bucket)
            rng = np.random.default_rng(1)
            size, cli_size = args.mib << 20, args.cli_mib << 20
            say(f"uploading {args.files} × {args.mib} MiB and {args.cli_files} × {args.cli_mib} MiB …")
            keys = seed(bucket, MANY, args.files, size, rng)
            cli_keys = seed(bucket, CLI_RUN, args.cli_files, cli_size, rng)
            plain = work / "plain"
            cases: list[tuple[str, str, Callable[[], None]]] = [
                ("many", "plain download_to_filename loop, checksum=None (baseline)",
                 plain_loop(bucket, keys, size, plain, None)),
                ("many", "plain download_to_filename loop, library default checksum",
                 plain_loop(bucket, keys, size, plain, "auto")),
                ("many", "runtool execute, 1 worker", runtool_execute(config, MANY, 1)),
                ("many", "runtool execute, 4 workers", runtool_execute(config, MANY, 4)),
                ("cli", "plain download_to_filename loop, checksum=None (baseline)",
                 plain_loop(bucket, cli_keys, cli_size, plain, None)),
                ("cli", "runtool download COORD --yes (execute_bulk, default 8 file workers)",
                 runtool_cli(config, CLI_RUN)),
            ]
            seconds: dict[str, list[float]] = {group + name: [] for group, name, _ in cases}
            for repeat in range(args.repeats):
                say(f"repeat {repeat + 1}/{args.repeats} …")
                for group, name, case in cases:
                    shutil.rmtree(plain, ignore_errors=True)
                    shutil.rmtree(config.raw_root, ignore_errors=True)
                    plain.mkdir()
                    started = time.perf_counter()
                    case()
                    seconds[group + name].append(time.perf_counter() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    sections = []
    for group, files, mib in (("many", args.files, args.mib), ("cli", args.cli_files, args.cli_mib)):
        total_mb = files * (mib << 20) / 1e6
        base = median(seconds[group + cases[0 if group == "many" else 4][1]])
        rows = []
        for case_group, name, _ in cases:
            if case_group != group:
                continue
            values = seconds[group + name]
            rows.append([name, spread(values), f"{total_mb / median(values):.0f}", f"{base / median(values):.2f}×"])
        title = f"{files} files × {mib} MiB" + (" (one run, the CLI's path)" if group == "cli" else "")
        sections.append(f"**{title}**\n\n" + markdown_table(
            ["method", "seconds: median (min–max)", "MB/s (median)", "vs baseline (medians)"], rows))
    commit = measured_commit(MEASURED)
    header = (
        f"`python -m benchmarks.transfers --files {args.files} --mib {args.mib} --cli-files {args.cli_files} "
        f"--cli-mib {args.cli_mib} --repeats {args.repeats}`; fake-gcs-server (memory backend) on loopback; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, {os.cpu_count()} cores, load average "
        f"(1/5/15 min) {'/'.join(f'{v:.1f}' for v in load_start)} at the start, "
        f"{'/'.join(f'{v:.1f}' for v in load_end)} at the end; {args.repeats} repeats, every case once per repeat."
    )
    report = header + "\n\n" + "\n\n".join(sections) + "\n"
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "transfers.md").write_text(report)


if __name__ == "__main__":
    main()
