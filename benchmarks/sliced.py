"""One large object: runtool's sliced download against its single stream and a plain ``download_to_filename``.

Run: ``.venv/bin/python -m benchmarks.sliced [--mib 1024] [--repeats 3] [--latency-ms 20] [--stream-mbps 25]``.
The object (random bytes) is written as a fake-gcs-server ``-data`` folder and served by a memory-backend emulator
(it holds the object in RAM); every case downloads it once per repeat, in the same order, first through
:class:`~benchmarks.relay.NetworkRelay` (a latency per request and a bandwidth cap per connection, as a VM sees
GCS), then on loopback. Targets are deleted before each case (not timed).

Cases:

- runtool, sliced: ``TransferEngine.move_files`` of the object with the sliced path on (ranged GETs of the
  pinned generation, ``--streams`` at once, ``--slice-mib`` each; whole-object CRC32C; fdatasync; rename);
- runtool, single stream: the same engine with the threshold above the object (one pinned GET, per-chunk
  CRC32C; fdatasync; rename);
- plain ``Blob.download_to_filename`` with the library's default checksum (no fsync, no temporary file).

It also times the two ways to get the whole object's CRC32C for a sliced download: combining the slices'
CRC32Cs, and reading the landed file again (from the page cache, the cheapest a re-read can be).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import google_crc32c
import numpy as np

from benchmarks.common import RESULTS_DIR, markdown_table, measured_commit, median, say, spread
from benchmarks.relay import NetworkRelay, NetworkShape
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.services import ServiceContainer
from runtool.services.transfers import PlannedFile
from runtool.storage import make_client
from runtool.storage.checksums import crc32c_combine, file_crc32c
from runtool.storage.gcs import plan_slices

BUCKET = "bench-sliced"
KEY = "bench/region/field/TW_1/LB_0001/2025_08_01T08:00:00Z/rosbag/_2025-08-01-08-00-20_0.bag"
GOAL = 3.0
MEASURED = ("runtool/services/transfers", "runtool/storage", "runtool/config.py", "benchmarks/sliced.py",
            "benchmarks/relay.py")
"""The code these cases run: the reported commit says whether any of it had uncommitted changes."""


def write_object(folder: Path, size: int) -> None:
    path = folder / BUCKET / KEY
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(11)
    with path.open("wb") as out:
        for start in range(0, size, 64 << 20):
            out.write(rng.bytes(min(64 << 20, size - start)))


def runtool_case(config: RuntoolConfig, file: PlannedFile) -> Callable[[], None]:
    def go() -> None:
        outcome, = ServiceContainer(config).transfer_engine.move_files(BUCKET, [file])
        assert outcome.status == "transferred", outcome.error

    return go


def plain_case(url: str, target: Path) -> Callable[[], None]:
    def go() -> None:
        make_client(emulator_host=url).bucket(BUCKET).blob(KEY).download_to_filename(str(target))

    return go


def crc_costs(path: Path, size: int, slice_bytes: int) -> tuple[float, float]:
    """Seconds to combine the slices' CRC32Cs (given), and to re-read the landed file for its CRC32C."""
    slices = plan_slices(size, slice_bytes)
    crcs = [google_crc32c.value(str(i).encode()) for i in range(len(slices))]
    started = time.perf_counter()
    whole = 0
    for crc, (_, length) in zip(crcs, slices, strict=True):
        whole = crc32c_combine(whole, crc, length)
    combined = time.perf_counter() - started
    started = time.perf_counter()
    file_crc32c(path)
    return combined, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--stream-mbps", type=float, default=25.0, help="MB/s per connection through the relay")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--slice-mib", type=int, default=32)
    parser.add_argument("--networks", default="relay,loopback")
    args = parser.parse_args()
    size = args.mib << 20
    shape = NetworkShape(latency_ms=args.latency_ms, stream_bytes_per_s=args.stream_mbps * 1e6)
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="runtool-bench-sliced-"))
    sections = []
    try:
        say(f"writing a {args.mib} MiB object …")
        write_object(work / "data", size)
        with ExitStack() as stack:
            emulator = stack.enter_context(Emulator(preload=work / "data"))
            blob = make_client(emulator_host=emulator.url).bucket(BUCKET).get_blob(KEY)
            assert blob is not None and blob.size == size
            shutil.rmtree(work / "data")
            target = work / "out" / "object.bag"
            planned = PlannedFile(KEY, target, size, blob.crc32c or "", blob.md5_hash, int(blob.generation or 0),
                                  "transfer", "benchmark")
            for network in args.networks.split(","):
                if network == "relay":
                    relay = stack.enter_context(NetworkRelay(emulator.port, shape))
                    url, where = relay.url, f"through the relay ({shape.describe()})"
                else:
                    url, where = emulator.url, "on loopback"
                config = RuntoolConfig(raw_bucket="bench-raw", ml_bucket="bench-ml", emulator_host=url,
                                       data_dir=work, raw_root=work / "raw", processed_root=work / "processed",
                                       ml_root=work / "ML", cache_dir=work / "cache", sliced_download_bytes=1)
                cases: list[tuple[str, Callable[[], None]]] = [
                    (f"runtool, sliced ({args.streams} streams × {args.slice_mib} MiB slices)",
                     runtool_case(config, planned)),
                    ("runtool, single stream",
                     runtool_case(config.with_overrides(sliced_download_bytes=size + 1), planned)),
                    ("plain Blob.download_to_filename (default checksum)", plain_case(url, target)),
                ]
                seconds: dict[str, list[float]] = {name: [] for name, _ in cases}
                for repeat in range(args.repeats):
                    for name, case in cases:
                        say(f"{network}, repeat {repeat + 1}/{args.repeats}: {name} …")
                        shutil.rmtree(target.parent, ignore_errors=True)
                        target.parent.mkdir()
                        started = time.perf_counter()
                        case()
                        seconds[name].append(time.perf_counter() - started)
                        assert target.stat().st_size == size
                single = median(seconds[cases[1][0]])
                rows = [[name, spread(values), f"{size / 1e6 / median(values):.0f}", f"{single / median(values):.2f}×"]
                        for name, values in seconds.items()]
                sections.append(f"**{args.mib} MiB, {where}**\n\n" + markdown_table(
                    ["method", "seconds: median (min–max)", "MB/s (median)", "vs runtool single stream"], rows))
            runtool_case(config, planned)()
            combined, reread = crc_costs(target, size, args.slice_mib << 20)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    commit = measured_commit(MEASURED)
    header = (
        f"`python -m benchmarks.sliced --mib {args.mib} --repeats {args.repeats} --latency-ms {args.latency_ms:g} "
        f"--stream-mbps {args.stream_mbps:g} --streams {args.streams} --slice-mib {args.slice_mib}`; one object, "
        f"fake-gcs-server (memory backend); {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, "
        f"{os.cpu_count()} cores, load average (1/5/15 min) {'/'.join(f'{v:.1f}' for v in load_start)} at the "
        f"start, {'/'.join(f'{v:.1f}' for v in load_end)} at the end; {args.repeats} repeats, every case once per "
        f"repeat. Goal: sliced ≥ {GOAL:g}× the single stream through the relay."
    )
    crc_note = (
        f"Whole-object CRC32C of a sliced download: combining the {len(plan_slices(size, args.slice_mib << 20))} "
        f"slices' CRC32Cs took {combined * 1e3:.2f} ms; reading the landed file again (page cache) "
        f"{reread * 1e3:.0f} ms."
    )
    report = header + "\n\n" + "\n\n".join(sections) + "\n\n" + crc_note + "\n"
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "sliced.md").write_text(report)


if __name__ == "__main__":
    main()
