"""Kernel memory benchmark: what one idle page kernel costs, i.e. the memory of one more viewer.

Run: ``.venv/bin/python -m benchmarks.kernel_memory [--repeats N]``.

It starts fake-gcs-server (memory backend), seeds the small demo fleet and scans the inventory, then, for
each repeat and each case in turn, starts a real ipykernel with jupyter_client (the kernel Voila would
start, with ``RUNTOOL_CONFIG`` and the request variables Voila puts in its environment, working directory
the notebooks folder), runs the code cells of the case's notebook, waits until the kernel is idle and its
memory has settled, reads the kernel process's RSS, PSS and USS (``psutil`` ``memory_full_info``) and shuts
the kernel down. One kernel is alive at a time. Cases: a kernel that ran nothing, one that ran
``import ipywidgets`` (the baseline: any widget page pays for it) and the three shipped pages.

USS is what a kernel frees when it ends, so it is the cost of one more viewer; PSS also charges the
kernel its share of pages it maps together with other processes. To explain the difference between a page
and the baseline, the packages a page imports beyond it are listed with the USS each adds, in a fresh
interpreter, on top of ipywidgets and the pandas + Parquet stack every page needs. The tables go to stdout
and to ``benchmarks/results/kernel_memory.md``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import psutil
from jupyter_client.manager import KernelManager
from jupyter_client.provisioning import LocalProvisioner

from benchmarks.common import DEMO_PRESET, DEMO_SEED, RESULTS_DIR, markdown_table, median, say, seeded_demo, spread
from runtool.demo.fleet import LocalRaw
from runtool.models import Filters
from runtool.ui.query import COVERAGE, DOWNLOAD_MANAGER, PER_RUN, selection_query

MB = 1024 * 1024
TIMEOUT_S = 300.0
SETTLE_S = 2.0
"""Memory counts as settled when it moved less than ``SETTLE_MB`` over this long."""
SETTLE_MB = 0.5
SETTLE_LIMIT_S = 30.0
TOP_PACKAGES = 12
BASELINE = "import ipywidgets"

# Run inside the kernel after the page: the modules it has imported, as one JSON line.
_LIST_MODULES = "import json as _j, sys as _s; print(_j.dumps(sorted(_s.modules)))"
# Run in a fresh interpreter: the USS that importing the modules after "--" adds on top of those before it.
# A name that is only an alias in sys.modules (six.moves.*) cannot be imported by name and is left out.
_MODULES_USS = """
import importlib, sys, psutil
split = sys.argv.index("--")
for name in sys.argv[1:split]:
    importlib.import_module(name)
process = psutil.Process()
before = process.memory_full_info().uss
for name in sys.argv[split + 1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
print(process.memory_full_info().uss - before)
"""
# Every page reads its inventory into pandas from Parquet: packages are costed on top of this, so the figures
# show what a package adds to a page rather than the data stack again.
DATA_STACK = ("pandas", "pyarrow.parquet")
# Namespace packages: their top level says nothing, the distribution is one or two levels down.
_NAMESPACES = {"google": 2, "google.cloud": 3}


@dataclass
class Case:
    """One kernel to measure: the code it runs and its URL query (what Voila would put in QUERY_STRING)."""

    name: str
    code: str
    query: str = ""
    notebook: str = ""
    rss: list[float] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)
    uss: list[float] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)


def _notebook_code(folder: Path, notebook: str) -> str:
    """The code cells of a shipped page notebook, in order, as Voila executes them."""
    cells = json.loads((folder / notebook).read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def _execute(client: Any, code: str) -> list[str]:
    """Run ``code`` in the kernel until it is idle again; its printed lines. A failing cell stops the run."""
    printed: list[str] = []
    errors: list[str] = []

    def output(message: dict[str, Any]) -> None:
        kind, content = message["header"]["msg_type"], message["content"]
        if kind == "stream":
            printed.extend(content["text"].splitlines())
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    reply = client.execute_interactive(code, timeout=TIMEOUT_S, output_hook=output, store_history=False)
    if reply["content"]["status"] != "ok" or errors:
        raise RuntimeError(f"the kernel failed to run {code!r}:\n" + "\n".join(errors))
    return printed


def _settled(process: psutil.Process) -> Any:
    """The process's memory once its RSS stops moving (a page may still finish work on its threads)."""
    deadline = time.monotonic() + SETTLE_LIMIT_S
    last = process.memory_full_info()
    while time.monotonic() < deadline:
        time.sleep(SETTLE_S)
        now = process.memory_full_info()
        if abs(now.rss - last.rss) < SETTLE_MB * MB:
            return now
        last = now
    return last


def _measure(case: Case, env: dict[str, str], cwd: Path, list_modules: bool) -> None:
    manager = KernelManager(kernel_name="python3")
    # Voila's request variables (voila.handler): a page reads its selection from QUERY_STRING.
    request = {
        "SCRIPT_NAME": f"/voila/render/{case.notebook}", "PATH_INFO": "", "QUERY_STRING": case.query,
        "SERVER_SOFTWARE": "voila", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "",
    }
    manager.start_kernel(env={**env, **request}, cwd=str(cwd))
    try:
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=TIMEOUT_S)
            if case.code:
                _execute(client, case.code)
            provisioner = manager.provisioner
            if not isinstance(provisioner, LocalProvisioner) or provisioner.pid is None:
                raise RuntimeError("the kernel is not a local process")
            memory = _settled(psutil.Process(provisioner.pid))
            case.rss.append(memory.rss / MB)
            case.pss.append(memory.pss / MB)
            case.uss.append(memory.uss / MB)
            if list_modules:
                # After the reading, so listing does not count; json and sys are loaded in any kernel.
                case.modules = set(json.loads(_execute(client, _LIST_MODULES)[-1]))
        finally:
            client.stop_channels()
    finally:
        manager.shutdown_kernel(now=False)


def _package(module: str) -> str | None:
    """The third-party package a module belongs to (``google.cloud.storage``, ``pandas``); None for the
    standard library, runtool itself and private extension modules."""
    parts = module.split(".")
    if parts[0] in sys.stdlib_module_names or parts[0] in {"runtool", "__main__"} or module.startswith("_"):
        return None
    depth = _NAMESPACES.get(".".join(parts[:2]), _NAMESPACES.get(parts[0], 1))
    if len(parts) < depth or parts[depth - 1].startswith("_"):
        return None
    return ".".join(parts[:depth])


def _packages(modules: set[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for module in sorted(modules):
        package = _package(module)
        if package is not None:
            grouped.setdefault(package, []).append(module)
    return grouped


def _imported(modules: list[str], env: dict[str, str]) -> set[str]:
    """Every module a fresh interpreter holds after importing ``modules``."""
    script = "import importlib, json, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n" \
        "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script, *modules], env=env, capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def _modules_uss(base: list[str], modules: list[str], env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", _MODULES_USS, *base, "--", *modules], env=env, capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[-1]) / MB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="kernels measured per case (default 3)")
    args = parser.parse_args(argv)
    notebooks = Path(str(files("runtool.notebooks")))

    with seeded_demo("kernel") as demo:
        plan, config_path = demo.plan, demo.config_path
        cid = plan.runs[0].coordinate.cid
        # The per-run page opens on a run with its bags local, so its cards show local state too.
        local_run = next(run for run in plan.runs if run.local.raw is LocalRaw.COMPLETE and run.in_raw_bucket)
        run_query = selection_query(local_run.coordinate.to_filters())
        env = {**os.environ, "RUNTOOL_CONFIG": str(config_path)}
        baseline = Case(f"`{BASELINE}` (baseline)", BASELINE)
        pages = [
            Case(f"{page.title} (`{page.notebook}?{query}`)", _notebook_code(notebooks, page.notebook), query,
                 page.notebook)
            for page, query in (
                (COVERAGE, selection_query(Filters(cid=cid))),
                (PER_RUN, run_query),
                (DOWNLOAD_MANAGER, selection_query(Filters(cid=cid))),
            )
        ]
        cases = [Case("empty kernel (ran nothing)", ""), baseline, *pages]
        for repeat in range(args.repeats):
            for case in cases:
                _measure(case, env, notebooks, list_modules=repeat == 0)
            say(f"  repeat {repeat + 1}/{args.repeats} USS: " + ", ".join(f"{c.uss[-1]:.1f}" for c in cases)
                + " MB")
        say("Measuring what each package a page adds costs on its own ...")
        added = {page.name: _packages(page.modules - baseline.modules) for page in pages}
        wanted: dict[str, set[str]] = {}
        for grouped in added.values():
            for package, modules in grouped.items():
                wanted.setdefault(package, set()).update(modules)
        stack_uss = _modules_uss(["ipywidgets"], list(DATA_STACK), env)
        stack = set(_packages(_imported(["ipywidgets", *DATA_STACK], env)))
        alone = {package: _modules_uss(["ipywidgets", *DATA_STACK], sorted(modules), env)
                 for package, modules in wanted.items() if package not in stack}

    base_rss, base_uss = median(baseline.rss), median(baseline.uss)
    rows = [
        [case.name, spread(case.rss, 1), spread(case.uss, 1), f"{median(case.pss):.1f}",
         f"{median(case.rss) - base_rss:+.1f}", f"{median(case.uss) - base_uss:+.1f}",
         f"{median(case.uss) / base_uss:.2f}×"]
        for case in cases
    ]
    table = markdown_table(
        ["Kernel, idle after its code ran", "RSS MB", "USS MB", "PSS MB", "RSS − baseline", "USS − baseline",
         "USS × baseline"], rows,
    )
    heavy_rows = []
    for page in pages:
        ranked = sorted(((alone[p], p) for p in added[page.name] if p in alone), reverse=True)[:TOP_PACKAGES]
        runtool_modules = sorted(m for m in page.modules if m.startswith("runtool."))
        heavy_rows.append([
            page.name.split(" (")[0], str(len(page.modules - baseline.modules)), str(len(runtool_modules)),
            ", ".join(f"{p} {mb:.0f}" for mb, p in ranked),
        ])
    heavy = markdown_table(
        ["Page", "modules beyond the baseline", "runtool modules",
         f"heaviest packages beyond the baseline and the data stack: USS MB each adds (top {TOP_PACKAGES})"],
        heavy_rows,
    )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    notes = [
        f"- Fleet: demo preset `{DEMO_PRESET}` (seed {DEMO_SEED}): {demo.report.runs} runs, {demo.info.objects:,} "
        "objects; inventory scanned before the kernels start, so a page loads its cache and does not list the buckets.",
        f"- Repeats: {args.repeats} kernels per case, cases interleaved, one kernel alive at a time: median "
        f"(min–max); PSS and the differences are medians. Memory read once RSS moved < {SETTLE_MB} MB over "
        f"{SETTLE_S:.0f} s. USS leaves out pages shared with any other process (this benchmark maps pandas, "
        "pyarrow and google-cloud-storage too, as other kernels would on a server), so it moves with what "
        "else runs; RSS does not.",
        f"- Packages: costed in fresh interpreters on top of ipywidgets and the data stack every page reads its "
        f"inventory with ({', '.join(DATA_STACK)}, itself {stack_uss:.0f} MB USS over ipywidgets alone); a "
        "package's figure includes what it imports, so figures overlap (google.auth is part of "
        "google.cloud.storage's).",
        f"- Machine: {os.cpu_count()} cores, shared with other work (load average {load} at the end); "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
    ]
    text = "\n".join(
        ["# Kernel memory benchmark", "", "`.venv/bin/python -m benchmarks.kernel_memory"
         + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + "`", "", table, "", heavy, "", *notes, ""]
    )
    print(table)
    print()
    print(heavy)
    print()
    print("\n".join(notes))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "kernel_memory.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
