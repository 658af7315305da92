"""Raw download throughput: runtool's parallel, verified downloads against a sequential per-file download.

Run: ``.venv/bin/python -m benchmarks.transfers [--files 20] [--mib 50]``. Everything is measured in one
process against one in-memory fake-gcs-server, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import google_crc32c
import numpy as np

from benchmarks.common import RESULTS_DIR, markdown_table, say
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.storage import make_client, raw_bag_key

RUN = RunCoordinate.parse("bench/region/field/TW_1/LB_0001/2025_08_01T08:00:00Z")


def sequential_download(config: RuntoolConfig, keys: list[str], target: Path) -> float:
    """The legacy way: one file after another, straight to the final path, size check only."""
    client = make_client(emulator_host=config.emulator_host)
    bucket = client.bucket(config.raw_bucket)
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for key in keys:
        blob = bucket.get_blob(key)
        path = target / key.rsplit("/", 1)[1]
        blob.download_to_filename(str(path), checksum=None)
        assert path.stat().st_size == blob.size
    return time.perf_counter() - started


def runtool_download(config: RuntoolConfig, workers: int) -> float:
    shutil.rmtree(config.raw_root, ignore_errors=True)
    services = ServiceContainer(config)
    services.transfers.workers = workers
    plan = services.transfers.plan_raw_download(RUN)
    started = time.perf_counter()
    result = services.transfers.execute(plan)
    seconds = time.perf_counter() - started
    assert result.ok, result.summary()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mib", type=int, default=50)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    total_mb = args.files * size / 1e6
    work = Path(tempfile.mkdtemp(prefix="runtool-bench-transfers-"))
    try:
        with Emulator() as emulator:
            config = RuntoolConfig(raw_bucket="bench-raw", ml_bucket="bench-ml", emulator_host=emulator.url,
                                   data_dir=work, raw_root=work / "raw", processed_root=work / "processed",
                                   ml_root=work / "ML", cache_dir=work / "cache")
            client = make_client(emulator_host=emulator.url)
            bucket = client.create_bucket(config.raw_bucket)
            rng = np.random.default_rng(1)
            payload = rng.bytes(size)
            keys = []
            say(f"uploading {args.files} x {args.mib} MiB …")
            for i in range(args.files):
                key = raw_bag_key(RUN, f"_2025-08-01-08-{i // 60:02d}-{i % 60:02d}_{i}.bag")
                bucket.blob(key).upload_from_string(payload[i:] + payload[:i])
                keys.append(key)
            rows = []
            say("sequential …")
            base = sequential_download(config, keys, work / "sequential")
            rows.append(["sequential per-file (legacy), size check only", f"{base:.2f}", f"{total_mb / base:.0f}",
                         "1.00×"])
            for workers in (1, 4, 8):
                say(f"runtool, {workers} workers …")
                seconds = runtool_download(config, workers)
                rows.append([f"runtool, {workers} worker(s), CRC32C verified, temp file + rename",
                             f"{seconds:.2f}", f"{total_mb / seconds:.0f}", f"{base / seconds:.2f}×"])
            started = time.perf_counter()
            for _ in range(args.files):
                google_crc32c.Checksum(payload).digest()
            crc = time.perf_counter() - started
            rows.append(["CRC32C of the same bytes alone (verification cost)", f"{crc:.2f}",
                         f"{total_mb / crc:.0f}", "–"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = markdown_table(["method", "seconds", "MB/s", "speed-up vs sequential"], rows)
    header = f"Download of {args.files} files × {args.mib} MiB from fake-gcs-server (memory backend)\n\n"
    print(header + table)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "transfers.md").write_text(header + table + "\n")


if __name__ == "__main__":
    main()
