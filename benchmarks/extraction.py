"""Extraction benchmark: runtool's extractor against the legacy extractor and the I/O floor.

Run: ``.venv/bin/python -m benchmarks.extraction [--gb 1.0] [--repeats 3]``.

Two runs are generated once and cached in ``benchmarks/.fleet-extract/`` (git-ignored as ``.fleet-*``):

- *camera-heavy*: bags from the demo writer, rewritten with camera-sized JPEG payloads (1920x1200, about
  200-400 KB per frame, 768 KiB chunks like ``rosbag record``) until the run holds ``--gb`` gigabytes; the
  detection and tracking messages are the demo writer's, unchanged;
- *message-heavy*: plain demo-writer bags (tiny JPEGs), where deserialisation, not I/O, is the cost.

In one process each run is read by: a plain read of every byte (the I/O floor), the legacy algorithm
(:mod:`benchmarks.legacy_extractor`) and runtool's :func:`extract_bags` (with and without its fast path),
with the bags evicted from the page cache (cold) and cached (warm). Peak memory is measured in fresh
processes (``RUSAGE_CHILDREN``) for runtool and the legacy algorithm on two sizes of the camera-heavy
run. The table goes to stdout and ``benchmarks/results/extraction.md``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer

from benchmarks import legacy_extractor
from benchmarks.common import BENCH_DIR, RESULTS_DIR, markdown_table, median, say
from runtool.config import DEFAULT_TOPICS
from runtool.demo.bags import CAMERA_TOPIC, write_bag
from runtool.extract import extract_bags, find_bags

FLEET_DIR = BENCH_DIR / ".fleet-extract"
# Bump when the generated bags change shape, so a cached fleet of the old shape is regenerated.
FLEET_VERSION = 1
TIMESTAMP = "2025_08_25T08:59:38Z"
START_NS = 1_756_112_397_000_000_000
BAG_SECONDS = 20.0
CHUNK_BYTES = 768 * 1024
JPEG_NOISE = (6.0, 7.0, 8.0, 9.0, 10.0, 7.5)  # noise level per pooled frame: 220-380 KiB JPEGs
TINY_BAGS, TINY_SECONDS = 3, 60.0
SPEEDUP_GOAL = 3.0
FLOOR_GOAL = 0.30
RSS_GOAL = 1 << 30
SMALL_RUN_BAGS = 2


@dataclass(frozen=True)
class Run:
    """A cached run: its folder, bag bytes and messages on the three topics."""

    name: str
    folder: Path
    bags: int
    bytes: int
    messages: int
    frame_kib: float


def _jpeg_pool() -> list[np.ndarray]:
    """Camera-sized JPEGs of soil texture; the noise level sets the size, like scene detail does."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:1200, 0:1920]
    pool = []
    for noise in JPEG_NOISE:
        base = np.stack(
            [96 + 10 * np.sin(xx / 90 + noise), 78 + 8 * np.cos(yy / 70), 52 + 6 * np.sin((xx + yy) / 120)], -1
        )
        pixels = np.clip(base + rng.normal(0, noise, (1200, 1920, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
        pool.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    return pool


def _with_camera_frames(source: Path, target: Path, pool: list[np.ndarray]) -> None:
    """Copy a demo bag, replacing each camera payload with a pooled camera-sized JPEG."""
    with AnyReader([source]) as reader:
        writer = Writer(target)
        writer.chunk_threshold = CHUNK_BYTES
        with writer:
            connections = {
                c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, md5sum=c.digest,
                                            callerid=getattr(c.ext, "callerid", None))
                for c in reader.connections
            }
            frame = 0
            for connection, stamp, raw in reader.messages():
                data: bytes | memoryview = raw
                if connection.topic == CAMERA_TOPIC:
                    image: Any = reader.deserialize(raw, connection.msgtype)
                    image.data = pool[frame % len(pool)]
                    frame += 1
                    data = reader.typestore.serialize_ros1(image, connection.msgtype)
                writer.write(connections[connection.id], stamp, data)


def _bag_name(index: int, seconds: float) -> str:
    start = datetime.fromtimestamp(START_NS / 1e9 + index * seconds, UTC)
    return f"rosbag_{start:%Y-%m-%d-%H-%M-%S}_{index}.bag"


def _manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "run.json"
    if not path.exists():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest if manifest.get("version") == FLEET_VERSION else None


def _as_run(name: str, folder: Path, manifest: dict[str, Any]) -> Run:
    return Run(name, folder, manifest["bags"], manifest["bytes"], manifest["messages"], manifest["frame_kib"])


def ensure_camera_run(target_bytes: int) -> Run:
    """The camera-heavy run of at least ``target_bytes``, generated now unless a large enough one is cached."""
    folder = FLEET_DIR / "camera"
    manifest = _manifest(folder)
    if manifest is not None and manifest["bytes"] >= target_bytes:
        return _as_run("camera-heavy", folder, manifest)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    say("generating the camera-heavy run (once; cached in benchmarks/.fleet-extract/) ...")
    pool = _jpeg_pool()
    rng = np.random.default_rng(5)
    total = messages = frames = 0
    seq = track_id = 0
    index = 0
    with tempfile.TemporaryDirectory(dir=FLEET_DIR) as scratch:
        while total < target_bytes:
            start = START_NS + int(index * BAG_SECONDS * 1e9)
            demo = Path(scratch) / f"demo_{index}.bag"
            summary = write_bag(demo, start, BAG_SECONDS, rng, first_seq=seq, track_id_start=track_id)
            target = folder / _bag_name(index, BAG_SECONDS)
            _with_camera_frames(demo, target, pool)
            demo.unlink()
            seq, track_id = summary.next_seq, summary.next_track_id
            total += target.stat().st_size
            messages += summary.frames + summary.detections + summary.tracks
            frames += summary.frames
            index += 1
            say(f"  {target.name}: {target.stat().st_size / 1e6:,.0f} MB (run {total / 1e9:.2f} GB)")
    manifest = {"version": FLEET_VERSION, "bags": index, "bytes": total, "messages": messages,
                "frame_kib": float(np.mean([len(j) for j in pool]) / 1024)}
    (folder / "run.json").write_text(json.dumps(manifest, indent=2))
    return _as_run("camera-heavy", folder, manifest)


def ensure_tiny_run() -> Run:
    folder = FLEET_DIR / "tiny"
    manifest = _manifest(folder)
    if manifest is not None:
        return _as_run("message-heavy", folder, manifest)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(6)
    seq = track_id = messages = 0
    for index in range(TINY_BAGS):
        start = START_NS + int(index * TINY_SECONDS * 1e9)
        summary = write_bag(folder / _bag_name(index, TINY_SECONDS), start, TINY_SECONDS, rng, first_seq=seq,
                            track_id_start=track_id)
        seq, track_id = summary.next_seq, summary.next_track_id
        messages += summary.frames + summary.detections + summary.tracks
    total = sum(path.stat().st_size for path in folder.glob("*.bag"))
    manifest = {"version": FLEET_VERSION, "bags": TINY_BAGS, "bytes": total, "messages": messages,
                "frame_kib": 0.7}
    (folder / "run.json").write_text(json.dumps(manifest, indent=2))
    return _as_run("message-heavy", folder, manifest)


def small_run(run: Run) -> Run:
    """The first bags of a run, hard-linked into their own folder (no extra disk)."""
    folder = FLEET_DIR / f"{run.folder.name}-small"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bags = find_bags(run.folder)[:SMALL_RUN_BAGS]
    for bag in bags:
        os.link(bag, folder / bag.name)
    size = sum(bag.stat().st_size for bag in bags)
    return Run(f"{run.name} ({SMALL_RUN_BAGS} bags)", folder, len(bags), size,
               int(run.messages * size / run.bytes), run.frame_kib)


# ---- the methods ---------------------------------------------------------------------------------------


def plain_read(run: Run, out: Path) -> None:
    """The I/O floor: every byte of every bag read into one reused 8 MiB buffer.

    With the same read-ahead hint runtool gives (``POSIX_FADV_WILLNEED``), so a cold floor is the disk's
    best and not a slower one that runtool could beat.
    """
    buffer = bytearray(8 << 20)
    view = memoryview(buffer)
    for bag in find_bags(run.folder):
        with bag.open("rb", buffering=0) as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
            while handle.readinto(view):
                pass


def legacy(run: Run, out: Path) -> None:
    legacy_extractor.extract(run.folder, out, TIMESTAMP, DEFAULT_TOPICS)


def runtool_rosbags(run: Run, out: Path) -> None:
    _runtool(run, out, fast=False)


def runtool(run: Run, out: Path) -> None:
    _runtool(run, out, fast=True)


def _runtool(run: Run, out: Path, fast: bool) -> None:
    metadata = extract_bags(find_bags(run.folder), out, TIMESTAMP, DEFAULT_TOPICS, fast=fast)
    if metadata.bags_failed:
        raise RuntimeError(f"runtool failed on {[bag.name for bag in metadata.bags_failed]}")


METHODS: dict[str, Callable[[Run, Path], None]] = {
    "plain read": plain_read,
    "legacy": legacy,
    "runtool, rosbags deserialize": runtool_rosbags,
    "runtool": runtool,
}


def evict(run: Run) -> None:
    """Drop the run's bags from the page cache (no root needed), so the next read comes from the disk."""
    for bag in find_bags(run.folder):
        descriptor = os.open(bag, os.O_RDONLY)
        try:
            os.fdatasync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def _call(method: Callable[[Run, Path], None], run: Run) -> float:
    """Seconds of one call writing into a fresh folder (removed afterwards); the legacy prints are muted."""
    out = FLEET_DIR / "out"
    shutil.rmtree(out, ignore_errors=True)
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            started = time.perf_counter()
            method(run, out)
            seconds = time.perf_counter() - started
        finally:
            sys.stdout = stdout
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def timings(run: Run, cold: bool, repeats: int) -> dict[str, float]:
    """Median seconds per method. Methods take turns within each round, so a busy moment of the machine
    hits all of them alike; ``cold`` evicts the bags before every call, otherwise one plain read warms them.
    """
    seconds: dict[str, list[float]] = {name: [] for name in METHODS}
    if not cold:
        plain_read(run, FLEET_DIR)
    for _ in range(repeats):
        for name, method in METHODS.items():
            if cold:
                evict(run)
            seconds[name].append(_call(method, run))
    return {name: median(values) for name, values in seconds.items()}


# A small launcher between this process and the measured one: a child's ru_maxrss starts from its parent's
# peak at fork time (Linux keeps it across exec), so a child of this big process would report at least our
# own peak. The launcher is small; its child's figure is the extraction's own.
_LAUNCHER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_rss(method: str, run: Run) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of one extraction in a fresh grandchild process (``RUSAGE_CHILDREN``)."""
    out = FLEET_DIR / "out"
    shutil.rmtree(out, ignore_errors=True)
    child = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "benchmarks.extraction", "--child", method,
         "--child-run", str(run.folder), "--child-out", str(out)],
        capture_output=True, text=True, check=True, cwd=BENCH_DIR.parent,
    )
    shutil.rmtree(out, ignore_errors=True)
    *_, report_line, children_kib = child.stdout.strip().splitlines()
    return int(children_kib) * 1024, float(json.loads(report_line)["seconds"])


def _child(method: str, folder: Path, out: Path) -> None:
    run = Run("child", folder, 0, 0, 0, 0.0)
    print(json.dumps({"seconds": _call(METHODS[method], run)}), flush=True)


# ---- report --------------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gb", type=float, default=1.0, help="size of the camera-heavy run (GB, 1e9 bytes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--child-run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.child_run, args.child_out)
        return

    FLEET_DIR.mkdir(parents=True, exist_ok=True)
    camera = ensure_camera_run(int(args.gb * 1e9))
    tiny = ensure_tiny_run()
    speed_rows = []
    goals = []
    for run, cache in ((camera, "cold"), (camera, "warm"), (tiny, "warm")):
        say(f"{run.name}, {cache} cache: {run.bags} bags, {run.bytes / 1e9:.2f} GB, {run.messages:,} messages")
        results = timings(run, cache == "cold", args.repeats)
        for name, seconds in results.items():
            say(f"  {name}: {seconds:.2f} s")
            extracting = name != "plain read"
            speed_rows.append([
                run.name, cache, name, f"{seconds:,.2f}", f"{run.bytes / 1e6 / seconds:,.0f}",
                f"{run.messages / seconds:,.0f}" if extracting else "–",
                f"{results['legacy'] / seconds:,.1f}×" if extracting else "–",
                f"{results['plain read'] / seconds:.0%}",
            ])
        # the plain-read goal is about reading bags; on the message-heavy run the bytes are not the cost
        of_floor = results["plain read"] / results["runtool"] if run is camera else None
        goals.append((f"{run.name}, {cache} cache", results["legacy"] / results["runtool"], of_floor))

    small = small_run(camera)
    memory_rows = []
    peaks: dict[tuple[str, str], int] = {}
    for run in (small, camera):
        for method in ("runtool", "legacy"):
            say(f"peak RSS: {method} on {run.name} ...")
            rss, seconds = peak_rss(method, run)
            peaks[method, run.name] = rss
            memory_rows.append([method, run.name, f"{run.bytes / 1e9:.2f} GB", f"{rss / 2**20:,.0f} MiB",
                                f"{seconds:,.2f}"])
    shutil.rmtree(small.folder)
    runtool_peak = max(peaks["runtool", small.name], peaks["runtool", camera.name])

    lines = [
        "# Extraction benchmark",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.python_implementation()} {platform.python_version()} "
        f"· {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end · "
        f"`.venv/bin/python -m benchmarks.extraction --gb {args.gb} --repeats {args.repeats}`",
        "",
        f"- camera-heavy run: {camera.bags} bags × {BAG_SECONDS:.0f} s at 30 fps, {camera.bytes / 1e9:.2f} GB, "
        f"{camera.messages:,} messages; demo-writer detections and tracks, camera JPEGs 1920×1200 of "
        f"≈ {camera.frame_kib:,.0f} KiB on average (220–380 KiB), 768 KiB chunks, uncompressed;",
        f"- message-heavy run: {tiny.bags} demo-writer bags × {TINY_SECONDS:.0f} s (tiny JPEGs), "
        f"{tiny.bytes / 1e6:.0f} MB, {tiny.messages:,} messages: the cost there is decoding, not bytes;",
        "- *cold*: the bags are evicted from the page cache (`posix_fadvise(DONTNEED)`) before every call, as "
        "after a download that no longer fits in memory; *warm*: they are in the page cache;",
        f"- seconds are the median of {args.repeats} rounds in which the methods take turns; messages/s counts "
        "the three topics; MB = 10^6 bytes; *runtool, rosbags deserialize* is runtool with its fast path off "
        "(`extract_bags(..., fast=False)`).",
        "",
        "## Speed",
        "",
        markdown_table(["run", "cache", "method", "seconds", "MB/s", "messages/s", "vs legacy", "of plain read"],
                       speed_rows),
        "",
        "## Peak memory (fresh process, `RUSAGE_CHILDREN` `ru_maxrss`, interpreter and imports included)",
        "",
        markdown_table(["method", "run", "size", "peak RSS", "seconds"], memory_rows),
        "",
        "## Goals",
        "",
    ]
    for label, speedup, of_floor in goals:
        floor = "" if of_floor is None else (
            f", {of_floor:.0%} of a plain read (goal ≥ {FLOOR_GOAL:.0%}: {_met(of_floor >= FLOOR_GOAL)})")
        lines.append(f"- {label}: runtool {speedup:.1f}× the legacy algorithm (goal ≥ {SPEEDUP_GOAL:.0f}×: "
                     f"{_met(speedup >= SPEEDUP_GOAL)}){floor}")
    growth = peaks["runtool", camera.name] / peaks["runtool", small.name]
    lines.append(f"- runtool peak RSS {runtool_peak / 2**20:,.0f} MiB (goal < 1 GiB: {_met(runtool_peak < RSS_GOAL)}); "
                 f"{growth:.2f}× from {small.bags} to {camera.bags} bags")
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "extraction.md").write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
