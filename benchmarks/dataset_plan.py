"""Dataset planning at fleet scale: the first plan (every label read) and the second (labels cached), before and after.

Run: ``.venv/bin/python -m benchmarks.dataset_plan [--runs 50] [--samples 150] [--repeats 3] [--latency-ms 0]``.
The ML bucket (frames of 2-6 KiB, one in 14 unlabelled, and YOLO labels: about 14,000 labels at the defaults) is
written as a fake-gcs-server ``-data`` folder and served by a memory-backend emulator started here;
``--latency-ms`` puts ``benchmarks/relay.py``'s relay in front of it, delaying every request as the network to a
real bucket does. Both variants plan the same selection ("All" at every level) in turns, in this process, each
repeat from an empty label cache:

- *before*: the label reads of commit a4bb2ee (``Blob.download_as_bytes`` of ``bytes=0-<cap>`` through the client's
  requests session, 8 workers, each cache write through ``runtool.files.replacing``), kept here as
  :class:`BeforeLabelReads`;
- *after*: :class:`~runtool.services.datasets.DatasetService` as it is (``read_bounded`` through the media pool,
  its default workers, lean cache writes), with a ``progress`` callback counting calls.

Both must give the same plan. The table goes to stdout and ``benchmarks/results/dataset_plan[-latency-N ms].md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import psutil

from benchmarks.bulk_ml import bench_config, machine, write_ml_store
from benchmarks.common import RESULTS_DIR, PreloadedEmulator, markdown_table, measured_commit, say, spread
from benchmarks.relay import NetworkRelay, NetworkShape
from runtool.files import replacing
from runtool.formatting import format_bytes
from runtool.models import Filters
from runtool.services import ServiceContainer
from runtool.services import datasets as datasets_module
from runtool.services.datasets import LABEL_WORKERS, DatasetOptions, DatasetPlan, DatasetService
from runtool.storage import storage_errors
from runtool.storage.gcs import ObjectChangedError, ObjectNotFoundError, retry_policy

NAME = "bench"
BEFORE_WORKERS = 8


class BeforeLabelReads(DatasetService):
    """The dataset service with the label reads of commit a4bb2ee (the code this benchmark compares against)."""

    def _label_contents(
        self, labels: Iterable[tuple[str, int, str, int]], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, bytes | str]:
        cap = self.config.max_label_bytes
        found: dict[str, bytes | str] = {}
        missing: list[tuple[str, int, str]] = []
        for key, generation, crc, size in labels:
            if size > cap:
                found[key] = datasets_module._too_large(f"{format_bytes(size)}", cap)
                continue
            data = self._cached_label(key, generation, crc, size)
            if data is not None:
                found[key] = data
            else:
                missing.append((key, generation, crc))

        def download(label: tuple[str, int, str]) -> tuple[str, bytes | str]:
            from google.api_core import exceptions as gexc

            key, generation, crc = label
            bucket = self.config.ml_bucket
            blob = self.client.bucket(bucket).blob(key)
            try:
                with storage_errors(bucket, "reading", key, generation, self.client):
                    try:
                        data = blob.download_as_bytes(
                            start=0,
                            end=cap,
                            checksum=None,
                            if_generation_match=generation or None,
                            retry=retry_policy(self.config.request_retry_s),
                            timeout=60,
                        )
                    except gexc.RequestRangeNotSatisfiable:
                        data = b""
            except ObjectNotFoundError:
                return key, "no longer in the bucket; refresh the inventory"
            except ObjectChangedError:
                return key, "changed since the inventory was scanned; refresh the inventory"
            if len(data) > cap:
                return key, datasets_module._too_large(f"over {format_bytes(cap)}", cap)
            if datasets_module._crc(data) != crc:
                return key, "changed since the inventory was scanned (CRC32C differs); refresh the inventory"
            if not self.read_only:
                with replacing(self._label_cache_path(key, generation)) as tmp:
                    tmp.write_bytes(data)
            return key, data

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="labels") as pool:
            found.update(pool.map(download, missing))
        return found


@dataclasses.dataclass
class Runs:
    """Seconds and CPU seconds (this process, the emulator) of each repeat of one variant."""

    cold: list[float] = dataclasses.field(default_factory=list)
    warm: list[float] = dataclasses.field(default_factory=list)
    cold_cpu: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    progress_calls: list[int] = dataclasses.field(default_factory=list)


def _counting(calls: list[int]) -> Callable[[int, int], None]:
    """A progress callback that records each ``done``."""
    return lambda done, _total: calls.append(done)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(
    variants: dict[str, DatasetService], repeats: int, server: psutil.Process
) -> tuple[dict[str, Runs], DatasetPlan]:
    """Every variant in turns (the order rotating per repeat), each from an empty label cache; same plans."""
    me = psutil.Process()
    runs = {name: Runs() for name in variants}
    reference: dict[str, object] | None = None
    plan: DatasetPlan | None = None
    names = list(variants)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            service = variants[name]
            shutil.rmtree(service.config.ml_root / "trainings", ignore_errors=True)
            calls: list[int] = []
            before = (_cpu(me), _cpu(server), time.perf_counter())
            plan = service.plan_dataset_fetch(NAME, Filters(), DatasetOptions(), progress=_counting(calls))
            seconds = time.perf_counter() - before[2]
            runs[name].cold.append(seconds)
            runs[name].cold_cpu.append((_cpu(me) - before[0], _cpu(server) - before[1]))
            runs[name].progress_calls.append(len(calls))
            started = time.perf_counter()
            warm = service.plan_dataset_fetch(NAME, Filters(), DatasetOptions())
            runs[name].warm.append(time.perf_counter() - started)
            result = {"plan": plan.to_dict(), "samples": [s.to_dict() for s in plan.samples]}
            if warm.samples != plan.samples or warm.rejected != plan.rejected:
                raise SystemExit(f"{name}: the second plan differs from the first")
            if reference is None:
                reference = result
            elif result != reference:
                raise SystemExit(f"{name}: the plan differs from the other variant's")
            say(f"  repeat {repeat + 1} {name}: first plan {seconds:.2f} s, second {runs[name].warm[-1]:.2f} s")
    assert plan is not None
    return runs, plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dataset_plan", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--samples", type=int, default=150, help="frames per bag, one in 14 unlabelled (default 150)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every request (default 0)")
    parser.add_argument("--workers", type=int, default=LABEL_WORKERS,
                        help=f"label reads in flight after (default {LABEL_WORKERS}, the service's)")
    args = parser.parse_args(argv)
    shape = NetworkShape(args.latency_ms, None) if args.latency_ms else None
    work = Path(tempfile.mkdtemp(prefix="runtool-bench-dataset-plan-"))
    try:
        store = write_ml_store(work / "store", args.runs, args.samples, unlabelled_every=14)
        say(f"{store.describe()}; loading the emulator …")
        emulator = PreloadedEmulator(store.folder)
        started = time.perf_counter()
        emulator.start(timeout=3600)  # loading is quadratic in the objects: minutes at 30,000
        say(f"  loaded in {time.perf_counter() - started:.0f} s")
        try:
            assert emulator.process is not None
            server = psutil.Process(emulator.process.pid)
            with NetworkRelay(emulator.port, shape) if shape else nullcontext() as relay:
                url = relay.url if relay is not None else emulator.url
                config = bench_config(url, work)
                services = ServiceContainer(config)
                services.inventory.refresh()
                after = DatasetService(config, services.data_state, services.inventory, services.transfer_engine,
                                       workers=args.workers)
                before = BeforeLabelReads(config, services.data_state, services.inventory, services.transfer_engine,
                                          workers=BEFORE_WORKERS)
                load = os.getloadavg()[0]
                runs, plan = measure({"before": before, "after": after}, args.repeats, server)
                host = machine(load)
        finally:
            emulator.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    labels = sum(1 for s in plan.samples if s.label_key is not None) + len(plan.rejected)
    workers = {"before": BEFORE_WORKERS, "after": after.workers}

    def per_label(cpu: list[tuple[float, float]], side: int) -> str:
        return spread([c[side] * 1000 / labels for c in cpu])

    rows = []
    for name, timing in runs.items():
        first = sorted(timing.cold)[len(timing.cold) // 2]
        rows.append([
            f"{name} ({workers[name]} workers)",
            spread(timing.cold),
            f"{labels / first:,.0f}",
            per_label(timing.cold_cpu, 0),
            per_label(timing.cold_cpu, 1),
            spread(timing.warm),
            f"{min(timing.progress_calls):,}" if name == "after" else "none",
        ])
    speedup = sorted(runs["before"].cold)[args.repeats // 2] / sorted(runs["after"].cold)[args.repeats // 2]
    table = markdown_table(
        ["label reads", "first plan s", "labels/s", "our CPU ms/label", "emulator CPU ms/label", "second plan s",
         "progress calls"],
        rows,
    )
    details = [
        f"- Data: {store.describe()}; the plan: {plan.describe()}; {labels:,} labels read by each first plan.",
        "- seconds: median (min–max) of "
        f"{args.repeats} repeats, variants in turns; first plan {speedup:.2f}× faster after (medians). "
        "CPU per label: this process's threads, then the emulator's, over the first plan.",
        "- fake-gcs-server memory backend loaded with `-data`; "
        + (f"through a relay (`benchmarks/relay.py`): {shape.describe()}." if shape else "on loopback."),
        f"- Commit {measured_commit(['runtool', 'benchmarks/dataset_plan.py'])}; machine: {host}.",
    ]
    text = table + "\n\n" + "\n".join(details) + "\n"
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    command = (
        f".venv/bin/python -m benchmarks.dataset_plan --runs {args.runs} --samples {args.samples} "
        f"--repeats {args.repeats} --latency-ms {args.latency_ms:g} --workers {args.workers}"
    )
    name = "dataset_plan" + (f"-latency-{args.latency_ms:g}ms" if shape else "") + (
        f"-{args.workers}-workers" if args.workers != LABEL_WORKERS else ""
    ) + ".md"
    (RESULTS_DIR / name).write_text(f"# Dataset planning\n\n`{command}`\n\n{text}")


if __name__ == "__main__":
    main()
