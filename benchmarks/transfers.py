"""Raw download throughput: runtool's verified, atomic downloads against a plain ``download_to_filename`` loop.

Run: ``.venv/bin/python -m benchmarks.transfers [--files 20] [--mib 50] [--repeats 5] [--latency-ms 0]
[--stream-mbps 0]``. Everything runs in one process against one in-memory fake-gcs-server; each repeat runs every
case once, in the same order, so load from other work on the machine falls on all of them alike. Targets are
deleted before every timed case (and not timed), so no case pays for truncating another's files.
``--latency-ms`` (and ``--stream-mbps``) put ``benchmarks/relay.py``'s :class:`NetworkRelay` in front of the
emulator: the objects are seeded straight into the emulator, and every measured client (the baseline loop and
runtool) goes through the relay, which delays every request and caps each connection's rate, as the network
from a VM to a real bucket does. ``--files 0`` leaves out the many-files group (only the CLI's case runs).

Cases:

- the baseline: one ``Blob.download_to_filename`` after another, library defaults except ``checksum=None``
  (no verification at all: the cheapest plain client); also with the library's default checksum;
- runtool planning one run (one listing) and ``TransferService.execute`` of that plan, with 1 and with 4 file
  workers (CRC32C verified, temporary file synced then renamed, generation pinned, the run's lock and state
  refresh): all of it timed, the planning too;
- the single-run CLI download (``runtool download COORD --yes`` without its start-up): one run of
  ``--cli-files`` × ``--cli-mib``, planned and run as ``cli._confirm_and_execute_run`` runs it
  (``TransferService.execute`` of the previewed plan with the engine's default file workers and a progress
  callback), against the same baseline loop over the same objects;
- the same run by whole processes, start-up included: ``runtool download COORD --yes`` (the inventory refreshed
  beforehand, untimed, as a user's would be), against the baseline loop run by ``python -c`` in a process of its
  own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from google.cloud import storage

from benchmarks.common import RESULTS_DIR, markdown_table, measured_commit, median, say, spread
from benchmarks.relay import NetworkRelay, NetworkShape
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.transfers import TransferProgress
from runtool.storage import make_client, raw_bag_key

MANY = RunCoordinate.parse("bench/region/field/TW_1/LB_0001/2025_08_01T08:00:00Z")
CLI_RUN = RunCoordinate.parse("bench/region/field/TW_1/LB_0002/2025_08_01T09:00:00Z")
MEASURED = ("runtool/services", "runtool/storage", "runtool/config.py", "runtool/models", "benchmarks/transfers.py",
            "benchmarks/relay.py")
"""The code these cases run: the reported commit says whether any of it had uncommitted changes."""
BASELINE = "plain download_to_filename loop, checksum=None (baseline)"


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
    """What ``runtool download COORD --yes`` does after its start-up: plan the run, then
    ``cli._confirm_and_execute_run``: ``TransferService.execute`` of that plan, bytes reported as they arrive."""

    def go() -> None:
        services = ServiceContainer(config)
        plan = services.transfers.plan_raw_download(run)
        seen: list[TransferProgress] = []
        result = services.transfers.execute(plan, progress=seen.append)
        assert result.ok, result.summary()

    return go


PLAIN_PROCESS = """
import sys
from pathlib import Path
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
client = storage.Client(project="bench", credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": sys.argv[1]})
bucket = client.bucket(sys.argv[2])
for key in sys.argv[4:]:
    bucket.blob(key).download_to_filename(str(Path(sys.argv[3]) / key.rsplit("/", 1)[1]), checksum=None)
"""


def plain_process(url: str, bucket: str, keys: list[str], target: Path) -> Callable[[], None]:
    """The baseline loop in a process of its own (``python -c``): interpreter and library start-up included."""

    def run() -> None:
        subprocess.run([sys.executable, "-c", PLAIN_PROCESS, url, bucket, str(target), *keys], check=True)

    return run


def runtool_process(config: RuntoolConfig, run: RunCoordinate) -> Callable[[], None]:
    """``runtool download COORD --yes``, the whole process; its configuration from the environment."""
    empty = config.data_dir / "runtool.toml"
    empty.write_text("", encoding="utf-8")
    environment = {**os.environ, "RUNTOOL_CONFIG": str(empty), "RUNTOOL_RAW_BUCKET": config.raw_bucket,
                   "RUNTOOL_ML_BUCKET": config.ml_bucket, "STORAGE_EMULATOR_HOST": str(config.emulator_host),
                   "RUNTOOL_DATA_DIR": str(config.data_dir), "RUNTOOL_RAW_ROOT": str(config.raw_root),
                   "RUNTOOL_PROCESSED_ROOT": str(config.processed_root), "RUNTOOL_ML_ROOT": str(config.ml_root),
                   "RUNTOOL_CACHE_DIR": str(config.cache_dir)}
    runtool = str(Path(sys.executable).with_name("runtool"))

    def go() -> None:
        subprocess.run([runtool, "download", str(run), "--yes"], check=True, env=environment,
                       stdout=subprocess.DEVNULL)

    return go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20, help="files of the many-files group (0: leave it out)")
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--cli-files", type=int, default=8)
    parser.add_argument("--cli-mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every request (default 0)")
    parser.add_argument("--stream-mbps", type=float, default=0.0,
                        help="cap each connection's responses at this many MB/s (default 0: no cap)")
    args = parser.parse_args()
    shape = (NetworkShape(args.latency_ms, args.stream_mbps * 1e6 or None)
             if args.latency_ms or args.stream_mbps else None)
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="runtool-bench-transfers-"))
    try:
        with Emulator() as emulator, ExitStack() as held:
            seeding = make_client(emulator_host=emulator.url)
            seeding.create_bucket("bench-raw")
            seeding.create_bucket("bench-ml")  # empty: the inventory the CLI needs lists both buckets
            rng = np.random.default_rng(1)
            size, cli_size = args.mib << 20, args.cli_mib << 20
            say(f"uploading {args.files} × {args.mib} MiB and {args.cli_files} × {args.cli_mib} MiB …")
            keys = seed(seeding.bucket("bench-raw"), MANY, args.files, size, rng)
            cli_keys = seed(seeding.bucket("bench-raw"), CLI_RUN, args.cli_files, cli_size, rng)
            url = emulator.url if shape is None else held.enter_context(NetworkRelay(emulator.port, shape)).url
            config = RuntoolConfig(raw_bucket="bench-raw", ml_bucket="bench-ml", emulator_host=url,
                                   data_dir=work, raw_root=work / "raw", processed_root=work / "processed",
                                   ml_root=work / "ML", cache_dir=work / "cache")
            bucket = make_client(emulator_host=url).bucket(config.raw_bucket)
            plain = work / "plain"
            cases: list[tuple[str, str, Callable[[], None]]] = []
            if args.files:
                cases += [
                    ("many", BASELINE, plain_loop(bucket, keys, size, plain, None)),
                    ("many", "plain download_to_filename loop, library default checksum",
                     plain_loop(bucket, keys, size, plain, "auto")),
                    ("many", "runtool execute, 1 worker", runtool_execute(config, MANY, 1)),
                    ("many", "runtool execute, 4 workers", runtool_execute(config, MANY, 4)),
                ]
            cases += [
                ("cli", BASELINE, plain_loop(bucket, cli_keys, cli_size, plain, None)),
                ("cli", "runtool download COORD --yes (plan + execute, default 8 file workers)",
                 runtool_cli(config, CLI_RUN)),
                ("process", "plain loop as above, in its own process (python -c; baseline)",
                 plain_process(url, config.raw_bucket, cli_keys, plain)),
                ("process", "runtool download COORD --yes, the whole process", runtool_process(config, CLI_RUN)),
            ]
            ServiceContainer(config).inventory.refresh()  # the CLI's download needs it, as a user's would have
            seconds: dict[str, list[float]] = {group + name: [] for group, name, _ in cases}
            for repeat in range(args.repeats):
                for group, name, case in cases:
                    shutil.rmtree(plain, ignore_errors=True)
                    shutil.rmtree(config.raw_root, ignore_errors=True)
                    plain.mkdir()
                    started = time.perf_counter()
                    case()
                    seconds[group + name].append(time.perf_counter() - started)
                say(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
                    f"{group} {name.split(',')[0].split(' (')[0]} {values[-1]:.2f} s"
                    for (group, name, _), values in zip(cases, seconds.values(), strict=True)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    sections = []
    groups = (("many", args.files, args.mib), ("cli", args.cli_files, args.cli_mib),
              ("process", args.cli_files, args.cli_mib))
    for group, files, mib in groups:
        if not files:
            continue
        total_mb = files * (mib << 20) / 1e6
        base = median(next(values for (case_group, _, _), values in zip(cases, seconds.values(), strict=True)
                           if case_group == group))
        rows = []
        for case_group, name, _ in cases:
            if case_group != group:
                continue
            values = seconds[group + name]
            rows.append([name, spread(values), f"{total_mb / median(values):.0f}", f"{base / median(values):.2f}×"])
        title = f"{files} files × {mib} MiB" + {"many": "", "cli": " (one run, the CLI's path)",
                                                 "process": " (one run, whole processes, start-up included)"}[group]
        sections.append(f"**{title}**\n\n" + markdown_table(
            ["method", "seconds: median (min–max)", "MB/s (median)", "vs baseline (medians)"], rows))
    commit = measured_commit(MEASURED)
    network = f"through a relay (`benchmarks/relay.py`): {shape.describe()}" if shape else "on loopback"
    command = (f"python -m benchmarks.transfers --files {args.files} --mib {args.mib} --cli-files {args.cli_files} "
               f"--cli-mib {args.cli_mib} --repeats {args.repeats}")
    if shape:
        command += f" --latency-ms {args.latency_ms:g} --stream-mbps {args.stream_mbps:g}"
    header = (
        f"`{command}`; fake-gcs-server (memory backend), {network}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, {os.cpu_count()} cores, load average "
        f"(1/5/15 min) {'/'.join(f'{v:.1f}' for v in load_start)} at the start, "
        f"{'/'.join(f'{v:.1f}' for v in load_end)} at the end; {args.repeats} repeats, every case once per repeat."
    )
    report = header + "\n\n" + "\n\n".join(sections) + "\n"
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    name = "transfers.md"
    if shape:
        name = f"transfers-latency-{args.latency_ms:g}ms{f'-{args.stream_mbps:g}MBs' if args.stream_mbps else ''}.md"
    (RESULTS_DIR / name).write_text(report)


if __name__ == "__main__":
    main()
