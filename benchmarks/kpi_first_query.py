"""Issue 9 (a), before and after: a new KpiService's first query, this code against an earlier commit's, interleaved.

On a shared machine the load moves between two benchmark runs, so a before/after taken minutes apart compares
the load as much as the code. Here both versions of :mod:`runtool.services.kpis` run in one process on the same
10,000 synthetic caches of :mod:`benchmarks.kpi_table` (its helpers): the earlier one is loaded from
``git show <commit>:runtool/services/kpis.py``, each keeps its own index file (written once, untimed), and each
repeat times a new service of each version in turn (wall clock and this process's CPU time, which the load
disturbs less). The two tables must have the same records.

    python -m benchmarks.kpi_first_query --before ae517ec [--runs 10000] [--repeats 9]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from benchmarks.common import RESULTS_DIR, markdown_table, median, say
from benchmarks.kpi_table import FIRST_GOAL_MS, scanned_services, write_caches
from runtool.models import Filters
from runtool.services import ServiceContainer
from runtool.services import kpis as current_kpis

_REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=_REPO).stdout


def load_module_at(commit: str, folder: Path) -> ModuleType:
    """``runtool/services/kpis.py`` as it was at ``commit``, imported under another name."""
    path = folder / f"kpis_{commit}.py"
    path.write_text(_git("show", f"{commit}:runtool/services/kpis.py"), encoding="utf-8")
    name = f"kpis_at_{commit}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def measure(services: ServiceContainer, versions: dict[str, ModuleType], folder: Path,
            repeats: int) -> dict[str, dict[str, list[float]]]:
    def own_index(number: int) -> property:
        return property(lambda _self: folder / f"index-{number}.parquet")

    # Each version with its own index file (the formats may differ), written once by a cold build.
    classes = {label: type(f"KpiService{number}", (module.KpiService,), {"index_path": own_index(number)})
               for number, (label, module) in enumerate(versions.items())}

    def service(label: str) -> Any:
        return classes[label](services.config, services.data_state)

    for label in versions:
        service(label).table(Filters())
    times: dict[str, dict[str, list[float]]] = {label: {"wall": [], "cpu": []} for label in versions}
    for repeat in range(repeats):
        say(f"  repeat {repeat + 1}/{repeats}")
        for label in versions:
            kpis = service(label)
            wall, cpu = time.perf_counter(), time.process_time()
            rows = kpis.table(Filters()).rows
            times[label]["cpu"].append(time.process_time() - cpu)
            times[label]["wall"].append(time.perf_counter() - wall)
            if len(rows) != len(services.data_state.all_runs()):
                raise SystemExit(f"the {label} table does not hold every run")
    tables = [service(label).table(Filters()).records() for label in versions]
    if any(table != tables[0] for table in tables):
        raise SystemExit("the two versions' tables differ")
    return times


def report(times: dict[str, dict[str, list[float]]], runs: int, repeats: int, load: tuple[float, float]) -> str:
    def ms(values: list[float]) -> str:
        return f"{median(values) * 1000:,.1f} ms ({min(values) * 1000:,.1f}–{max(values) * 1000:,.1f})"

    rows = [[label, ms(t["wall"]), ms(t["cpu"]), "yes" if median(t["wall"]) * 1000 < FIRST_GOAL_MS else "**no**"]
            for label, t in times.items()]
    before, after = (times[label]["wall"] for label in times)
    table = markdown_table([f"First query, whole fleet ({runs:,} rows)", "wall, median (min–max)",
                            "CPU of this process", "< 200 ms"], rows)
    return (f"{table}\n\n- Ratio of the wall medians, before / after: {median(before) / median(after):.1f}×. "
            f"{repeats} repeats, versions alternating. Machine: {psutil.cpu_count()} cores, Python "
            f"{platform.python_version()}, load average {load[0]:.1f} at the start and {load[1]:.1f} at the end, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kpi_first_query", description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit whose KpiService is the 'before'")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    head = _git("rev-parse", "--short", "HEAD").strip()
    dirty = " + working tree" if _git("status", "--porcelain", "--", "runtool/services/kpis.py").strip() else ""
    with tempfile.TemporaryDirectory(prefix="runtool-bench-kpi-first-") as scratch:
        root = Path(scratch)
        say(f"Writing {args.runs:,} synthetic analysis caches …")
        write_caches(root / "processed", args.runs)
        services = scanned_services(root)
        services.data_state.all_runs()
        versions = {f"before ({args.before})": load_module_at(args.before, root),
                    f"after ({head}{dirty})": current_kpis}
        load_before = psutil.getloadavg()[0]
        times = measure(services, versions, root, args.repeats)
    text = report(times, args.runs, args.repeats, (load_before, psutil.getloadavg()[0]))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "kpi_first_query.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
