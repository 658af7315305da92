"""Docker vs local extraction: the same runs through both backends, and what the container costs.

Run: ``.venv/bin/python -m benchmarks.docker_vs_local [--gb 1.0] [--repeats 3]`` (needs a running Docker
engine and the base image from ``scripts/docker-base-image.sh``).

The runs are the extraction benchmark's cached ones (:mod:`benchmarks.extraction`: a camera-heavy run of
``--gb`` gigabytes and a message-heavy run of tiny frames), read warm from the page cache. Each is extracted
by the local backend as the service runs it (:func:`extract_bags` in this process), by the same command
the container runs but on the host (``python -m runtool.extract``, a fresh interpreter like the
container's) and by the Docker backend (:func:`run_in_docker`, image already built). The difference between
the last two is the container's own cost: create, start, mounts, log streaming, removal. The table goes to
stdout and ``benchmarks/results/docker_vs_local.md``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import docker as docker_sdk

from benchmarks.common import RESULTS_DIR, markdown_table, median, say
from benchmarks.extraction import TIMESTAMP, Run, ensure_camera_run, ensure_tiny_run
from runtool.config import DEFAULT_TOPICS
from runtool.extract import extract_bags, find_bags
from runtool.extract.docker_backend import IMAGE_TAG, docker_available, ensure_image, run_in_docker


def in_process(run: Run, out: Path) -> None:
    metadata = extract_bags(find_bags(run.folder), out, TIMESTAMP, DEFAULT_TOPICS)
    if metadata.bags_failed:
        raise RuntimeError(f"in-process extraction failed on {[bag.name for bag in metadata.bags_failed]}")


def host_command(run: Run, out: Path) -> None:
    command = ["--bags-dir", str(run.folder), "--out", str(out), "--timestamp", TIMESTAMP]
    subprocess.run([sys.executable, "-m", "runtool.extract", *command], check=True, stdout=subprocess.DEVNULL)


def docker(run: Run, out: Path) -> None:
    run_in_docker(run.folder, out, TIMESTAMP, DEFAULT_TOPICS)


METHODS: dict[str, Callable[[Run, Path], None]] = {
    "local backend (in-process)": in_process,
    "`python -m runtool.extract` on the host": host_command,
    "Docker backend": docker,
}


def timed(method: Callable[[Run, Path], None], run: Run) -> float:
    with tempfile.TemporaryDirectory(prefix="runtool-bench-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        started = time.perf_counter()
        method(run, out)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gb", type=float, default=1.0, help="size of the camera-heavy run (GB, 1e9 bytes)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    reason = docker_available()
    if reason is not None:
        raise SystemExit(reason)

    build_lines: list[str] = []

    def on_build(line: str) -> None:
        build_lines.append(line)
        say(f"  build: {line}")

    started = time.perf_counter()
    ensure_image(progress=on_build)
    first_ensure = time.perf_counter() - started
    started = time.perf_counter()
    ensure_image()
    current_check = time.perf_counter() - started

    runs = [ensure_tiny_run(), ensure_camera_run(int(args.gb * 1e9))]
    rows: list[list[str]] = []
    for run in runs:
        say(f"{run.name}: {run.bags} bags, {run.bytes / 1e6:,.0f} MB, {run.messages:,} messages")
        timed(in_process, run)  # warms the page cache and this process's imports
        baseline = 0.0
        for name, method in METHODS.items():
            seconds = median([timed(method, run) for _ in range(args.repeats)])
            baseline = baseline or seconds
            say(f"  {name}: {seconds:.2f} s")
            rows.append(
                [
                    run.name,
                    f"{run.bytes / 1e6:,.0f} MB",
                    name,
                    f"{seconds:.2f} s",
                    f"{run.bytes / 1e6 / seconds:,.0f} MB/s",
                    f"+{seconds - baseline:.2f} s" if seconds != baseline else "—",
                ]
            )

    table = markdown_table(["Run", "Bags", "Method", "Median time", "Throughput", "vs in-process"], rows)
    image_bytes = int(docker_sdk.from_env().images.get(IMAGE_TAG).attrs["Size"])
    built = f"built in {first_ensure:.1f} s" if build_lines else "already current"
    text = "\n".join(
        [
            "# Docker vs local extraction",
            "",
            f"`.venv/bin/python -m benchmarks.docker_vs_local --gb {args.gb} --repeats {args.repeats}`",
            "",
            table,
            "",
            f"- Image {IMAGE_TAG} ({image_bytes / 1e6:,.0f} MB): {built}; `ensure_image` on a current image "
            f"(the check every run makes): {current_check * 1000:.0f} ms.",
            f"- Medians of {args.repeats} warm runs (bags in the page cache); MB/s is bag bytes per second.",
            f"- {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            "",
        ]
    )
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "docker_vs_local.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
