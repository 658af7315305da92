"""Bulk analysis benchmark (issue 9 (c)): 16 demo runs analysed sequentially, on the local pool and on Dask.

Run: ``.venv/bin/python -m benchmarks.bulk_analysis [--runs 16] [--rounds 3]``.

The small demo fleet (:func:`runtool.demo.fleet.plan_fleet`, real ROS1 bags) is seeded into a memory-backend
fake-gcs-server. The first ``--runs`` runs that have bags in the raw bucket only (coordinate order) are
brought up to date once by :class:`~runtool.services.pipeline.RunPipeline` (download + extract + analyse),
outside any timing. Then, in each round, every variant starts from the same state (the runs' analysis
caches deleted, the extractions kept) and analyses the same runs:

- *sequential*: a plain loop calling ``AnalyticsService.analyze_run`` per run, in this process (the baseline);
- the pipeline (``RunPipeline.update_many``, what ``runtool analyze [filters] --yes`` runs) on
  ``LocalExecutor(workers=1)`` (the pipeline's own per-run cost, no parallelism),
  ``LocalExecutor(workers=2)`` (threads: the default local pool of ``runtool analyze``),
  ``LocalExecutor(workers=2, kind="process")`` (a process pool, made per call as the pipeline does) and
  ``DaskExecutor("local-cluster")`` (2 worker processes x 1 thread; started once, its start-up reported
  apart, as a cluster serves many calls).

Rounds interleave the variants so each sees the same load on the shared host; the table gives the median
(min-max) wall time and the ratio to sequential. Every variant must give the KPIs the preparation gave
(checked before any time is reported). The table goes to stdout and ``benchmarks/results/bulk_analysis.md``;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import RESULTS_DIR, markdown_table, median, say, spread
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.demo.fleet import LocalRaw, plan_fleet, seed_fleet
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.analytics import ANALYSIS_DIR
from runtool.services.executor import DaskExecutor, Executor, LocalExecutor, RunOutcome
from runtool.services.pipeline import PipelineResult, RunUpdate
from runtool.storage import local_raw_dir, make_client, processed_dir

Kpis = dict[str, float | int | None]
MEASURED = ("runtool/services/pipeline.py", "runtool/services/executor.py", "runtool/services/analytics.py",
            "runtool/analysis/perception.py")
"""The code the measured work runs through: the commit noted with the table says whether it was changed."""
BEFORE = "before the fix: services built for every run (`update_run` until this benchmark)"
SEQUENTIAL = "sequential: `analytics.analyze_run` in a loop"


def pick_runs(preset: str, runs: int) -> list[RunCoordinate]:
    """The first ``runs`` runs (coordinate order) with bags in the raw bucket and nothing on the local disk."""
    plan = plan_fleet(preset, 7)
    coords = sorted(
        (run.coordinate for run in plan.runs if run.in_raw_bucket and run.local.raw is LocalRaw.NONE),
        key=lambda coord: coord.to_path_str(),
    )
    if len(coords) < runs:
        raise SystemExit(f"the {preset} demo fleet has only {len(coords)} runs with raw bags to download")
    return coords[:runs]


def clear_analyses(services: ServiceContainer, coords: list[RunCoordinate]) -> None:
    """Delete the runs' analysis caches (extractions stay), so the next variant computes every run again."""
    for coord in coords:
        shutil.rmtree(processed_dir(services.config.processed_root, coord) / ANALYSIS_DIR)
        services.local.refresh_run(coord)


def same_kpis(actual: Kpis, expected: Kpis) -> bool:
    def equal(a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return a == b or (math.isnan(a) and math.isnan(b))
        return bool(a == b)

    return actual.keys() == expected.keys() and all(equal(actual[key], expected[key]) for key in actual)


def pipeline_kpis(result: PipelineResult) -> tuple[list[Kpis], float]:
    """Each run's KPIs and the sum of the runs' own seconds; every run must be ok and analysed just now."""
    failed = [f"{o.coordinate}: {o.error}" for o in result.outcomes if o.status != "ok"]
    assert not failed, f"runs failed: {failed}"
    updates = [o.update for o in result.outcomes if o.update is not None]
    assert all(update.steps == ("analyze",) for update in updates), "a run was not (only) analysed"
    return [update.kpis for update in updates], sum(update.seconds for update in updates)


def update_run_with_new_services(config: RuntoolConfig, force: bool, coord: RunCoordinate) -> Any:
    """``update_run`` as it was before it kept its services: every run builds its own (loads the inventory
    cache, scans the local roots). Measured beside the current one under the same load."""
    from runtool.services.container import writable_pipeline
    from runtool.services.pipeline import _update_with

    return _update_with(writable_pipeline(config), force, coord)


def outcome_kpis(outcomes: list[RunOutcome]) -> tuple[list[Kpis], float]:
    """As :func:`pipeline_kpis`, for the executor's outcomes of ``update_run``-like functions."""
    failed = [f"{o.coordinate}: {o.error}" for o in outcomes if o.status != "ok" or not isinstance(o.value, RunUpdate)]
    assert not failed, f"runs failed: {failed}"
    assert all(o.value.steps == ("analyze",) for o in outcomes), "a run was not (only) analysed"
    return [o.value.kpis for o in outcomes], sum(o.value.seconds for o in outcomes)


def total_cpu(leave_out: frozenset[int] = frozenset()) -> float:
    """CPU seconds so far of this process and of every process under it but ``leave_out``, each with its ended
    children."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        if process.pid in leave_out:
            continue
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended meanwhile: its time moves to its parent's ended children
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *MEASURED], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [line[3:] for line in dirty.stdout.splitlines()]
    return out.stdout.strip() + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the unrecorded warm-up round of every variant")
    parser.add_argument("--preset", default="small", help="demo fleet preset (small: every bag a real ROS1 bag)")
    args = parser.parse_args()
    coords = pick_runs(args.preset, args.runs)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="runtool-bench-bulk-") as tmp, Emulator() as emulator:
        root = Path(tmp)
        config = RuntoolConfig(
            raw_bucket="bench-bulk-raw", ml_bucket="bench-bulk-ml", emulator_host=emulator.url, data_dir=root,
            raw_root=root / "raw", processed_root=root / "processed", ml_root=root / "ML", cache_dir=root / "cache",
            list_workers=4, request_retry_s=10.0,
        )
        say(f"Seeding the {args.preset} demo fleet into fake-gcs-server ...")
        seed = seed_fleet(config, plan_fleet(args.preset, 7), make_client(emulator_host=emulator.url))
        services = ServiceContainer(config, read_only=False)
        services.inventory.refresh()

        say(f"Preparing {len(coords)} runs once (download + extract + analyse), outside the timing ...")
        started = time.perf_counter()
        prepared = services.pipeline.update_many(coords, executor=LocalExecutor(2))
        prepare_s = time.perf_counter() - started
        failed = [f"{o.coordinate}: {o.error}" for o in prepared.outcomes if o.status != "ok"]
        assert not failed, f"preparation failed: {failed}"
        expected = [o.update.kpis for o in prepared.outcomes if o.update is not None]
        assert all(o.update is not None and o.update.steps == ("download", "extract", "analyze")
                   for o in prepared.outcomes)
        bags = sum(len(list(local_raw_dir(config.raw_root, coord).glob("*.bag"))) for coord in coords)
        frames = sum(int(kpis.get("frames_messages") or 0) for kpis in expected)

        say("Starting the Dask LocalCluster (outside the timing) ...")
        started = time.perf_counter()
        dask = DaskExecutor("local-cluster")
        cluster_start_s = time.perf_counter() - started
        # The idle cluster's processes (heartbeats) are left out of the CPU time of the variants not using it.
        cluster = frozenset(child.pid for child in psutil.Process().children(recursive=True))

        def sequential() -> tuple[list[Kpis], float]:
            kpis = [dict(services.analytics.analyze_run(coord).kpis) for coord in coords]
            return kpis, math.nan

        def on(executor: Executor) -> Callable[[], tuple[list[Kpis], float]]:
            return lambda: pipeline_kpis(services.pipeline.update_many(coords, executor=executor))

        def before_fix() -> tuple[list[Kpis], float]:
            def reread(_done: int, _total: int, run: RunOutcome) -> None:
                services.local.refresh_run(run.coordinate)  # as update_many does after each run

            return outcome_kpis(dask.map_runs(partial(update_run_with_new_services, config, False), coords, reread))

        variants: dict[str, Callable[[], tuple[list[Kpis], float]]] = {
            SEQUENTIAL: sequential,
            "pipeline on `LocalExecutor(workers=1)` (one thread)": on(LocalExecutor(1)),
            "pipeline on `LocalExecutor(workers=2)` (threads; `runtool analyze` default)": on(LocalExecutor(2)),
            'pipeline on `LocalExecutor(workers=2, kind="process")`': on(LocalExecutor(2, "process")),
            'pipeline on `DaskExecutor("local-cluster")` (2 workers × 1 thread)': on(dask),
            f"{BEFORE}, on the same cluster": before_fix,
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        in_runs: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        try:
            # Round 0 is a warm-up, not recorded: the Dask workers import what a run needs on their first run
            # (once per cluster, which serves many calls). Later rounds rotate the order of the variants.
            for number in range(0 if args.warmup else 1, args.rounds + 1):
                for name in names[number % len(names):] + names[:number % len(names)]:
                    clear_analyses(services, coords)
                    say(f"round {number}/{args.rounds}{' (warm-up)' if number == 0 else ''}: {name} ...")
                    leave_out = frozenset() if "Dask" in name or name.startswith(BEFORE) else cluster
                    wall, process = time.perf_counter(), total_cpu(leave_out)
                    kpis, run_seconds = variants[name]()
                    if number > 0:
                        times[name].append(time.perf_counter() - wall)
                        cpu[name].append(total_cpu(leave_out) - process)
                        in_runs[name].append(run_seconds)
                    mismatched = [str(c) for c, got, want in zip(coords, kpis, expected, strict=True)
                                  if not same_kpis(got, want)]
                    assert not mismatched, f"{name} gave other KPIs for {mismatched}"
        finally:
            dask.close()
    load_after = os.getloadavg()

    baseline = median(times[SEQUENTIAL])
    rows = []
    for name, values in times.items():
        seconds = [s for s in in_runs[name] if not math.isnan(s)]
        rows.append([
            name, spread(values), f"{len(coords) / median(values):.1f}", f"{baseline / median(values):.2f}×",
            f"{median(seconds):.2f}" if seconds else "—", f"{median(cpu[name]):.2f}",
        ])
    table = markdown_table(
        ["variant", "wall s, median (min–max)", "runs/s", "vs sequential", "Σ per-run s", "CPU s, all processes"], rows
    )
    print(table)
    command = f".venv/bin/python -m benchmarks.bulk_analysis --runs {args.runs} --rounds {args.rounds}"
    if args.preset != "small":
        command += f" --preset {args.preset}"
    notes = [
        "# Bulk analysis: 16 demo runs, sequential vs the local pool vs a Dask LocalCluster (issue 9 (c))",
        "",
        f"`{command}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {_commit()}.",
        "",
        table,
        "",
        f"- Workload: {len(coords)} runs of the `{args.preset}` demo fleet ({seed.runs} runs seeded into "
        f"fake-gcs-server, memory backend), {bags} real ROS1 bags of ~1 s, {frames:,} camera frames in all. "
        f"Prepared once by the pipeline (download + extract + analyse) in {prepare_s:.1f} s, outside the table.",
        f"- {'After an unrecorded warm-up round, each' if args.warmup else 'Each'} variant, in each of "
        f"{args.rounds} interleaved rounds (order rotated each round), starts with the {len(coords)} analysis caches "
        "deleted (extractions kept), so every variant reads the same extraction outputs, computes the same "
        "metrics and writes the same caches; all gave the KPIs of the preparation, run by run.",
        "- *Σ per-run s*: the sum of the runs' own times (`RunUpdate.seconds`, check + analyse, measured where "
        "the run ran); *CPU s, all processes*: CPU time of this process, the processes under it (forkserver, pool, "
        "Dask nanny and workers, but those only for the Dask variants) and their ended children, median: the work "
        "each variant costs the machine, which other load on a shared host changes much less than the wall time.",
        f"- The process pool is made per call (its start-up is in its time, as in the pipeline); the LocalCluster "
        f"took {cluster_start_s:.2f} s to start, outside the table.",
        f"- Machine: {len(os.sched_getaffinity(0))} cores ({platform.machine()}, shared with other work), load "
        f"average {', '.join(f'{v:.2f}' for v in load_before)} before and "
        f"{', '.join(f'{v:.2f}' for v in load_after)} after; Python {platform.python_version()}.",
    ]
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "bulk_analysis.md").write_text("\n".join(notes) + "\n", encoding="utf-8")
    say(f"Written to {RESULTS_DIR / 'bulk_analysis.md'}")


if __name__ == "__main__":
    main()
