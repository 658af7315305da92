"""The synthetic demo fleet: a deterministic plan, its seeding into a GCS emulator, and local copies.

Why a plan first: :func:`plan_fleet` is pure and seeded, so every object the demo writes (which runs
exist, their bags, which samples are labelled, what sits on the local disk, which keys are malformed)
is decided before any I/O. Tests and benchmarks can reason about the fleet from the plan alone, and
seeding the same plan twice writes the same objects.

Why it looks the way it does: the fleet imitates what the legacy buckets hold (see
``reference/legacy-dashboard.md`` §1-2), not a uniform grid, because the pages and the inventory are
judged on realistic shapes: laser boxes of one TW start their runs within a minute of each other, work
happens on weekdays with idle days in between, bag counts vary per session, both timestamp spellings
occur, labelling coverage is uneven, and a few keys do not fit the layout at all.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Literal

import numpy as np
from google.cloud import storage

from runtool.config import RuntoolConfig
from runtool.demo.bags import tiny_jpeg, write_bag, yolo_label_lines
from runtool.errors import RuntoolError
from runtool.files import replacing
from runtool.models import RunCoordinate
from runtool.storage.gcs import retry_policy, storage_errors
from runtool.storage.layout import cloud_to_local_name, local_ml_dir, local_raw_dir, ml_file_key, raw_bag_key

__all__ = [
    "PRESET_NAMES",
    "AnomalyObject",
    "FleetError",
    "FleetPlan",
    "LocalML",
    "LocalPlan",
    "LocalRaw",
    "MLBagPlan",
    "MLCase",
    "MLPlan",
    "PlannedBag",
    "PlannedRun",
    "SeedReport",
    "is_seeded",
    "plan_fleet",
    "seed_fleet",
    "write_fleet_tree",
]

_NS = 1_000_000_000
FIRST_DAY = date(2025, 6, 2)
"""The first working day of the demo season (a Monday)."""
LAST_DAY = date(2025, 9, 12)
"""The last working day of the demo season (a Friday); the span is over three months."""
_HOLIDAY = (date(2025, 8, 4), date(2025, 8, 8))  # a company holiday week: a visible gap in the calendar
_RAIN_SHARE = 0.1  # weekdays on which the whole fleet stays idle
_SATURDAY_SHARE = 0.25  # Saturdays worked at peak season; Sundays never
_SAMPLE_FPS = 30.0  # camera rate assumed when placing samples in a placeholder bag
_REAL_BAG_S = (1.0, 1.3)  # real bags are short so seeding stays fast; >= 1 s keeps ~30 frames per bag
_PLACEHOLDER_BAG_S = (172.0, 178.0)  # a ~500 MB split of the real robots lasts about three minutes
_LAST_BAG_S = (40.0, 170.0)  # the last split of a run is cut short when recording stops
_EXPORT_ID = "export_2025_09_15_001"


class FleetError(RuntoolError):
    """A preset is unknown, or a plan cannot be seeded as it stands (it contradicts itself)."""


class MLCase(StrEnum):
    """How a run's ML samples look; every case occurs in every preset.

    A sample is an exported frame (``frames/<stamp>.jpg``); it is labelled when ``labels/<stamp>.txt``
    exists. Frame stamps are real camera stamps of the bag (or, for a zero-byte placeholder bag,
    stamps synthesised inside its time span).
    """

    NONE = "none"
    """No samples at all: the usual state of a run nobody has labelled yet (ML sync "missing")."""
    FULL = "full"
    """Every bag has 17-20 labelled samples: reaches the expected E per bag (coverage near 100 %)."""
    UNDER = "under"
    """2-10 labelled samples per bag and about one bag in five without any: under-labelled."""
    UNLABELLED_FRAMES = "unlabelled_frames"
    """Frames were exported but some have no label yet: frame count > label count (v1 vs v2 counts)."""
    EMPTY_LABELS = "empty_labels"
    """Some label files are 0 bytes: frames without weeds, which are still valid labelled samples."""
    ML_ONLY = "ml_only"
    """Labelled samples but no bags in the raw bucket: must be flagged "ML only", never counted as 100 %."""
    NOT_UPLOADED = "not_uploaded"
    """Samples exported into the local ML root and never uploaded (ML sync "local only")."""


class LocalRaw(StrEnum):
    """What of a run's bags sits in the local raw root (``rosbag_…`` names, no ``rosbag/`` level)."""

    NONE = "none"
    """Nothing local: raw sync "cloud only" (or "missing" for an ML-only run)."""
    COMPLETE = "complete"
    """Every bag, byte-identical to the cloud: raw sync "synced"."""
    PARTIAL = "partial"
    """Only the first bag of several (a download that stopped): raw sync "mismatch"."""
    SIZE_MISMATCH = "size_mismatch"
    """Every bag, but the last one truncated to half its size (a broken legacy copy): "mismatch"."""
    LOCAL_ONLY = "local_only"
    """Every bag of a run that was never uploaded: raw sync "local only"."""


class LocalML(StrEnum):
    """What of a run's samples sits in the local ML root (``raw/<coord>/rosbag_<stem>/…``)."""

    NONE = "none"
    """Nothing local."""
    COMPLETE = "complete"
    """Every sample, byte-identical to the cloud: ML sync "synced"."""
    PARTIAL = "partial"
    """Only the first bag dir's samples (a download that stopped): ML sync "mismatch"."""
    LOCAL_ONLY = "local_only"
    """A local export (one ``.json`` per bag dir, listed in ``.export_tracking.json``), not uploaded."""


@dataclass(frozen=True)
class PlannedBag:
    """One bag of a run.

    ``real`` bags are written as ROS1 bags (seeded from ``seed``); the others become zero-byte
    placeholder objects, which keeps large fleets cheap while their keys and spans stay realistic.
    """

    name: str
    start_ns: int
    duration_s: float
    real: bool
    seed: int

    @property
    def stem(self) -> str:
        """The cloud bag dir name used in the ML bucket (``_2025-08-25-08-59-57_0``)."""
        return self.name.removesuffix(".bag")


@dataclass(frozen=True)
class MLBagPlan:
    """The samples of one bag: ``samples`` frames, the first ``labels`` of them (in a seeded random
    order) labelled, and ``empty_labels`` of those labels 0 bytes long."""

    bag: str
    samples: int
    labels: int
    empty_labels: int = 0


@dataclass(frozen=True)
class MLPlan:
    """A run's ML case and its per-bag samples (bags without samples are absent)."""

    case: MLCase
    bags: tuple[MLBagPlan, ...] = ()

    @property
    def in_ml_bucket(self) -> bool:
        """Whether the samples are uploaded (local exports and runs without samples are not)."""
        return bool(self.bags) and self.case is not MLCase.NOT_UPLOADED


@dataclass(frozen=True)
class LocalPlan:
    """What of the run is copied into the local roots."""

    raw: LocalRaw = LocalRaw.NONE
    ml: LocalML = LocalML.NONE

    @property
    def any(self) -> bool:
        return self.raw is not LocalRaw.NONE or self.ml is not LocalML.NONE


@dataclass(frozen=True)
class PlannedRun:
    """One run: its coordinate, bags, samples, and where copies of it exist."""

    coordinate: RunCoordinate
    bags: tuple[PlannedBag, ...]
    ml: MLPlan
    in_raw_bucket: bool
    local: LocalPlan


@dataclass(frozen=True)
class AnomalyObject:
    """A malformed key seeded on purpose, so anomaly reporting has something real to find."""

    bucket: Literal["raw", "ml"]
    key: str
    reason: str
    data: bytes


@dataclass(frozen=True)
class FleetPlan:
    """Everything the demo fleet holds, decided up front (see :func:`plan_fleet`)."""

    preset: str
    seed: int
    runs: tuple[PlannedRun, ...]
    anomalies: tuple[AnomalyObject, ...]


@dataclass(frozen=True)
class SeedReport:
    """What :func:`seed_fleet` wrote.

    ``raw_objects`` and ``ml_objects`` count every object written to each bucket, malformed ones
    included; ``anomaly_objects`` says how many of them are malformed on purpose.
    """

    runs: int
    raw_objects: int
    ml_objects: int
    anomaly_objects: int
    local_runs: int
    bytes_uploaded: int
    seconds: float


# -- presets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Preset:
    """The knobs of one preset (private: only the preset names are a contract)."""

    regions: tuple[tuple[str, str], ...]  # (cid, regionid); machines are dealt to them in turn
    tws: int  # machines
    fields_per_region: int
    days_per_tw: int  # working days each machine records on
    second_session_share: float  # days with an afternoon session too
    lb_skip_share: float  # laser boxes that miss a session
    bag_median: float  # bags per run (lognormal around it, clipped to 2..bag_max)
    bag_max: int
    all_real: bool  # every uploaded bag a real ROS1 bag (else: local runs and extra_real_runs only)
    extra_real_runs: int
    local_sets: int  # copies of the _SPECIAL_RUNS table placed on local disk
    ml_shares: tuple[tuple[MLCase, float], ...]  # ML cases of the remaining runs
    dash_share: float  # sessions whose timestamps spell the date with '-'


_REGIONS = (
    ("client_001", "region_north"),
    ("client_001", "region_south"),
    ("client_002", "region_east"),
    ("client_001", "region_west"),
    ("client_002", "region_central"),
)

_PRESETS: dict[str, _Preset] = {
    # ~56 runs over 4 machines; every bag a real (short) ROS1 bag, about 30 MB in all.
    "small": _Preset(
        regions=_REGIONS[:3], tws=4, fields_per_region=2, days_per_tw=4, second_session_share=0.0,
        lb_skip_share=0.0, bag_median=3.0, bag_max=10, all_real=True, extra_real_runs=0, local_sets=1,
        ml_shares=((MLCase.NONE, 0.40), (MLCase.FULL, 0.15), (MLCase.UNDER, 0.25),
                   (MLCase.UNLABELLED_FRAMES, 0.10), (MLCase.EMPTY_LABELS, 0.10)),
        dash_share=0.07,
    ),
    # ~400 runs; real bags for the local runs and a few labelled ones, placeholders for the rest.
    "medium": _Preset(
        regions=_REGIONS[:3], tws=8, fields_per_region=3, days_per_tw=14, second_session_share=0.1,
        lb_skip_share=0.03, bag_median=14.0, bag_max=40, all_real=False, extra_real_runs=6, local_sets=2,
        ml_shares=((MLCase.NONE, 0.78), (MLCase.FULL, 0.05), (MLCase.UNDER, 0.11),
                   (MLCase.UNLABELLED_FRAMES, 0.03), (MLCase.EMPTY_LABELS, 0.03)),
        dash_share=0.04,
    ),
    # >= 5,000 runs (24 machines, 84 laser boxes, 58 working days each); a few real runs.
    "large": _Preset(
        regions=_REGIONS, tws=24, fields_per_region=4, days_per_tw=58, second_session_share=0.12,
        lb_skip_share=0.03, bag_median=14.0, bag_max=40, all_real=False, extra_real_runs=4, local_sets=2,
        ml_shares=((MLCase.NONE, 0.95), (MLCase.FULL, 0.012), (MLCase.UNDER, 0.028),
                   (MLCase.UNLABELLED_FRAMES, 0.005), (MLCase.EMPTY_LABELS, 0.005)),
        dash_share=0.02,
    ),
}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)
"""The fleet sizes :func:`plan_fleet` knows, smallest first."""


# -- planning ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Machine:
    """A TW (one machine) carrying several laser boxes, working the fields of one region."""

    cid: str
    regionid: str
    twid: str
    lbids: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass
class _Skeleton:
    """A run before its bags are materialised (their durations depend on whether they are real)."""

    coordinate: RunCoordinate
    first_bag_ns: int
    bag_count: int
    case: MLCase = MLCase.NONE
    in_raw_bucket: bool = True
    local: LocalPlan = field(default_factory=LocalPlan)
    real: bool = False


def plan_fleet(preset: str = "small", seed: int = 7) -> FleetPlan:
    """Plan a deterministic synthetic fleet: the same preset and seed always give an equal plan.

    Raises:
        FleetError: the preset is unknown (or a preset too small for its local cases, a bug).
    """
    if preset not in _PRESETS:
        raise FleetError(f"unknown fleet preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    spec = _PRESETS[preset]
    rng = np.random.default_rng(seed)
    machines = _machines(spec, rng)
    skeletons = _sessions(spec, machines, _calendar(rng), rng)
    _assign_cases(spec, skeletons, rng)
    runs = tuple(_materialise(skeleton, rng) for skeleton in skeletons)
    return FleetPlan(preset=preset, seed=seed, runs=runs, anomalies=_anomalies(runs))


def _calendar(rng: np.random.Generator) -> list[date]:
    """The fleet's working days: weekdays minus rain days and a holiday week, plus a few Saturdays."""
    days: list[date] = []
    day = FIRST_DAY
    while day <= LAST_DAY:
        weekday = day.weekday()
        if day in (FIRST_DAY, LAST_DAY):
            works = True
        elif _HOLIDAY[0] <= day <= _HOLIDAY[1] or weekday == 6:
            works = False
        elif weekday == 5:
            works = bool(rng.random() < _SATURDAY_SHARE)
        else:
            works = bool(rng.random() >= _RAIN_SHARE)
        if works:
            days.append(day)
        day += timedelta(days=1)
    return days


def _machines(spec: _Preset, rng: np.random.Generator) -> list[_Machine]:
    """Machines spread over the regions; 3 or 4 laser boxes each, laser box ids unique in the fleet."""
    field_numbers = rng.choice(np.arange(1, 200), size=len(spec.regions) * spec.fields_per_region, replace=False)
    region_fields = {
        region: tuple(
            f"field_{int(n):03d}"
            for n in sorted(field_numbers[i * spec.fields_per_region : (i + 1) * spec.fields_per_region])
        )
        for i, region in enumerate(spec.regions)
    }
    lb_counts = rng.permutation([3 + i % 2 for i in range(spec.tws)])
    machines: list[_Machine] = []
    next_lb = 1
    for i in range(spec.tws):
        cid, regionid = spec.regions[i % len(spec.regions)]
        fields = region_fields[(cid, regionid)]
        served = rng.choice(len(fields), size=min(len(fields), int(rng.integers(1, 4))), replace=False)
        lbids = tuple(f"LB_{n:04d}" for n in range(next_lb, next_lb + int(lb_counts[i])))
        next_lb += len(lbids)
        machines.append(_Machine(cid, regionid, f"TW_{i + 1:03d}", lbids, tuple(fields[j] for j in sorted(served))))
    return machines


def _sessions(
    spec: _Preset, machines: Sequence[_Machine], days: Sequence[date], rng: np.random.Generator
) -> list[_Skeleton]:
    """One skeleton run per laser box and session; a session's runs start within a minute."""
    skeletons: list[_Skeleton] = []
    sessions: list[list[_Skeleton]] = []
    for index, machine in enumerate(machines):
        count = min(spec.days_per_tw, len(days))
        if index == 0:  # the first machine opens and closes the season, so the span is always full
            inner = rng.choice(np.arange(1, len(days) - 1), size=count - 2, replace=False)
            chosen = [0, *sorted(int(i) for i in inner), len(days) - 1]
        else:
            chosen = sorted(int(i) for i in rng.choice(len(days), size=count, replace=False))
        field_id = machine.fields[0]
        for day_index in chosen:
            if rng.random() < 0.3:  # machines mostly stay on a field for several working days
                field_id = machine.fields[int(rng.integers(len(machine.fields)))]
            day = days[day_index]
            morning = datetime(day.year, day.month, day.day, 5, 30, tzinfo=UTC) + timedelta(
                seconds=int(rng.integers(0, 5 * 3600))
            )
            starts = [morning]
            if rng.random() < spec.second_session_share:
                longest = timedelta(seconds=90 + spec.bag_max * _PLACEHOLDER_BAG_S[1])
                noon = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
                starts.append(max(noon + timedelta(seconds=int(rng.integers(0, 3 * 3600))),
                                  morning + longest + timedelta(minutes=45)))
            for start in starts:
                session = _session(spec, machine, field_id, start, rng)
                sessions.append(session)
                skeletons.extend(session)
    dashed = rng.choice(len(sessions), size=max(1, round(spec.dash_share * len(sessions))), replace=False)
    for i in dashed:  # a firmware version that spelled the date with '-': whole sessions use it
        for skeleton in sessions[int(i)]:
            skeleton.coordinate = _with_dash(skeleton.coordinate)
    skeletons.sort(key=lambda s: (s.coordinate.start_time, s.coordinate.to_path_str()))
    return skeletons


def _session(
    spec: _Preset, machine: _Machine, field_id: str, start: datetime, rng: np.random.Generator
) -> list[_Skeleton]:
    """The runs of one session: similar bag counts (same pass over the field), boot times within 56 s."""
    base = float(np.clip(round(rng.lognormal(np.log(spec.bag_median), 0.5)), 2, spec.bag_max))
    runs: list[_Skeleton] = []
    for lbid in machine.lbids:
        if runs and rng.random() < spec.lb_skip_share:  # a laser box that did not record this time
            continue
        stamp = start + timedelta(seconds=int(rng.integers(0, 56)))
        coordinate = RunCoordinate(
            machine.cid, machine.regionid, field_id, machine.twid, lbid, stamp.strftime("%Y_%m_%dT%H:%M:%SZ")
        )
        first_bag_ns = int(stamp.timestamp()) * _NS + int(rng.integers(20 * _NS, 30 * _NS))
        bag_count = int(np.clip(base + rng.integers(-1, 2), 2, spec.bag_max))
        runs.append(_Skeleton(coordinate, first_bag_ns, bag_count))
    return runs


def _with_dash(coordinate: RunCoordinate) -> RunCoordinate:
    """The same run with its timestamp spelled ``2025-08-25T08:59:38Z``."""
    date_part, time_part = coordinate.timestamp.split("T")
    parts = coordinate.to_path_tuple()
    return RunCoordinate(*parts[:5], f"{date_part.replace('_', '-')}T{time_part}")


# (local raw, local ML, ML case, in the raw bucket, minimum bags): one run per row and local set,
# so every raw and ML sync status (synced, cloud_only, local_only, mismatch, missing) occurs.
_SPECIAL_RUNS: tuple[tuple[LocalRaw, LocalML, MLCase, bool, int], ...] = (
    (LocalRaw.COMPLETE, LocalML.COMPLETE, MLCase.FULL, True, 2),  # raw synced, ML synced
    (LocalRaw.COMPLETE, LocalML.NONE, MLCase.UNDER, True, 2),  # ML cloud only
    (LocalRaw.COMPLETE, LocalML.LOCAL_ONLY, MLCase.NOT_UPLOADED, True, 2),  # ML local only
    (LocalRaw.PARTIAL, LocalML.NONE, MLCase.NONE, True, 3),  # raw mismatch (bag count)
    (LocalRaw.SIZE_MISMATCH, LocalML.NONE, MLCase.NONE, True, 2),  # raw mismatch (size)
    (LocalRaw.LOCAL_ONLY, LocalML.NONE, MLCase.NONE, False, 2),  # raw local only, ML missing
    (LocalRaw.NONE, LocalML.COMPLETE, MLCase.EMPTY_LABELS, True, 2),  # raw cloud only, ML synced
    (LocalRaw.NONE, LocalML.PARTIAL, MLCase.UNLABELLED_FRAMES, True, 2),  # ML mismatch
    (LocalRaw.NONE, LocalML.NONE, MLCase.ML_ONLY, False, 2),  # raw missing
)
_REAL_RUN_MAX_BAGS = 12  # where only some runs are real, they are short ones: seeding stays small


def _assign_cases(spec: _Preset, skeletons: list[_Skeleton], rng: np.random.Generator) -> None:
    """Give every run its ML case, local copies and whether its bags are real."""
    order = [int(i) for i in rng.permutation(len(skeletons))]
    taken: set[int] = set()
    for _ in range(spec.local_sets):
        for raw, ml, case, in_raw, min_bags in _SPECIAL_RUNS:
            needs_real = raw is not LocalRaw.NONE or case is MLCase.NOT_UPLOADED
            index = next(
                (
                    i for i in order
                    if i not in taken and skeletons[i].bag_count >= min_bags
                    and (spec.all_real or not needs_real or skeletons[i].bag_count <= _REAL_RUN_MAX_BAGS)
                ),
                None,
            )
            if index is None:
                raise FleetError(f"the fleet has no run left for the {raw}/{ml}/{case} local case")
            taken.add(index)
            skeleton = skeletons[index]
            skeleton.case, skeleton.in_raw_bucket, skeleton.local = case, in_raw, LocalPlan(raw, ml)
            skeleton.real = needs_real
    cases = [case for case, _ in spec.ml_shares]
    shares = np.array([share for _, share in spec.ml_shares])
    for i in order:
        if i not in taken:
            skeletons[i].case = cases[int(rng.choice(len(cases), p=shares / shares.sum()))]
    if spec.all_real:
        for skeleton in skeletons:
            skeleton.real = skeleton.in_raw_bucket or skeleton.local.raw is not LocalRaw.NONE
        return
    labelled = [
        i for i in order
        if i not in taken and skeletons[i].case is not MLCase.NONE and skeletons[i].bag_count <= _REAL_RUN_MAX_BAGS
    ]
    for i in labelled[: spec.extra_real_runs]:  # labelled real runs: samples that point at real frames
        skeletons[i].real = True


def _materialise(skeleton: _Skeleton, rng: np.random.Generator) -> PlannedRun:
    """Lay out the bags back to back and plan the samples of each bag."""
    bags: list[PlannedBag] = []
    start_ns = skeleton.first_bag_ns
    for i in range(skeleton.bag_count):
        if skeleton.real:
            duration = round(float(rng.uniform(*_REAL_BAG_S)), 3)
        elif i == skeleton.bag_count - 1:
            duration = round(float(rng.uniform(*_LAST_BAG_S)), 3)
        else:
            duration = round(float(rng.uniform(*_PLACEHOLDER_BAG_S)), 3)
        moment = datetime.fromtimestamp(start_ns // _NS, UTC)
        name = f"_{moment:%Y-%m-%d-%H-%M-%S}_{i}.bag"
        bags.append(PlannedBag(name, start_ns, duration, skeleton.real, int(rng.integers(0, 2**63 - 1))))
        start_ns += int(duration * _NS) + int(rng.integers(0, 5_000_000))  # the split costs a few ms
    ml = MLPlan(skeleton.case, tuple(_ml_bags(skeleton.case, bags, rng)))
    return PlannedRun(skeleton.coordinate, tuple(bags), ml, skeleton.in_raw_bucket, skeleton.local)


def _ml_bags(case: MLCase, bags: Sequence[PlannedBag], rng: np.random.Generator) -> Iterator[MLBagPlan]:
    """Per-bag sample counts for an ML case (see :class:`MLCase`)."""
    def between(low: int, high: int) -> int:
        return int(rng.integers(low, high + 1))

    if case is MLCase.NONE:
        return
    unlabelled_bag = between(0, len(bags) - 1)  # UNLABELLED_FRAMES: at least this bag lacks labels
    for i, bag in enumerate(bags):
        if case is MLCase.FULL:
            count = between(17, 20)
            yield MLBagPlan(bag.stem, count, count)
        elif case is MLCase.UNDER:
            if i > 0 and rng.random() < 0.2:
                continue
            count = between(2, 10)
            yield MLBagPlan(bag.stem, count, count)
        elif case is MLCase.UNLABELLED_FRAMES:
            count = between(6, 18)
            short = between(1, count // 2) if i == unlabelled_bag or rng.random() < 0.4 else 0
            yield MLBagPlan(bag.stem, count, count - short)
        elif case is MLCase.EMPTY_LABELS:
            count = between(10, 18)
            yield MLBagPlan(bag.stem, count, count, between(1, count // 3))
        elif case is MLCase.ML_ONLY:
            count = between(5, 15)
            yield MLBagPlan(bag.stem, count, count)
        else:  # NOT_UPLOADED: a fresh local export of a few frames per bag
            count = between(4, 12)
            yield MLBagPlan(bag.stem, count, count)


def _anomalies(runs: Sequence[PlannedRun]) -> tuple[AnomalyObject, ...]:
    """Malformed keys in both buckets, placed next to real runs as stray uploads would be."""
    raw_runs = [run for run in runs if run.in_raw_bucket]
    first = next(run for run in raw_runs if run.coordinate.regionid == "region_north")
    other = next(run for run in reversed(raw_runs) if run.coordinate.cid == "client_002")
    ml_run = next(run for run in runs if run.ml.in_ml_bucket and run.in_raw_bucket)
    lb = "/".join(first.coordinate.to_path_tuple()[:5])
    bag = ml_run.bags[0]
    ml_bag = f"raw/{ml_run.coordinate}/rosbag/{bag.stem}"
    sec, nsec = divmod(bag.start_ns, _NS)
    stamp = f"{sec}.{nsec:09d}"
    return (
        AnomalyObject("raw", f"{first.coordinate.cid}/{first.coordinate.regionid}/stray.txt",
                      "wrong depth: a file two levels down", b"uploaded by hand, no idea what this is\n"),
        AnomalyObject("raw", f"{lb}/not-a-time/rosbag/_2025-07-01-08-00-00_0.bag",
                      "timestamp folder that is not a time", b""),
        AnomalyObject("raw", f"{first.coordinate}/rosbag/notes.md",
                      "a note among the bags: not a .bag", b"# Field notes\nRain from 11:00, stopped early.\n"),
        AnomalyObject("raw", f"{other.coordinate}/{other.bags[0].name}",
                      "wrong depth: bag without the rosbag/ level", b""),
        AnomalyObject("ml", "raw/README.md", "wrong depth: a file at the top", b"ML samples, one folder per run\n"),
        AnomalyObject("ml", f"{ml_bag}/frames/{stamp}.json",
                      "metadata JSON in frames/: not an image", b'{"exposure_us": 800}\n'),
        AnomalyObject("ml", f"{ml_bag}/previews/{stamp}.jpg", "unknown folder 'previews' instead of frames/labels",
                      b""),
        AnomalyObject("ml", f"raw/{lb}/not-a-time/rosbag/_2025-07-01-08-00-00_0/labels/1751356800.000000000.txt",
                      "timestamp folder that is not a time", b""),
        AnomalyObject("ml", f"annot/{ml_run.coordinate}/rosbag/{bag.stem}/labels/{stamp}.txt",
                      "top folder 'annot' instead of 'raw'", b"0 0.500000 0.500000 0.100000 0.100000\n"),
    )


# -- seeding ----------------------------------------------------------------------------------------

Payload = bytes | Path
ProgressCallback = Callable[[str, int, int], None]


class _Uploads:
    """Uploads on a bounded thread pool; completions are counted (and reported) on the caller's thread.

    Only a few uploads are in flight at a time, so a large fleet's objects are produced lazily
    instead of being held in memory all at once.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        workers: int,
        totals: dict[str, int],
        progress: ProgressCallback | None,
        retry_s: float,
    ) -> None:
        self.pool = pool
        self.totals = totals
        self.done = dict.fromkeys(totals, 0)
        self.progress = progress
        self.retry_s = retry_s
        self.bytes = 0
        self.limit = 4 * workers
        self.pending: dict[Future[int], str] = {}

    def submit(self, stage: str, bucket: storage.Bucket, key: str, payload: Payload) -> None:
        while len(self.pending) >= self.limit:
            self._collect()
        self.pending[self.pool.submit(self._upload, bucket, key, payload)] = stage

    def drain(self) -> None:
        while self.pending:
            self._collect()

    def _collect(self) -> None:
        """Account for the uploads that finished (waiting for at least one); re-raise their errors."""
        finished, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        for future in finished:
            stage = self.pending.pop(future)
            self.bytes += future.result()
            self.done[stage] += 1
            if self.progress is not None:
                self.progress(stage, self.done[stage], self.totals[stage])

    def _upload(self, bucket: storage.Bucket, key: str, payload: Payload) -> int:
        # Seeding owns these objects and re-uploads identical bytes, so retrying a write is harmless.
        retry = retry_policy(self.retry_s)
        with storage_errors(bucket.name, f"uploading {key} to"):
            blob = bucket.blob(key)
            if isinstance(payload, Path):
                blob.upload_from_filename(str(payload), content_type=_content_type(key), retry=retry)
                return payload.stat().st_size
            blob.upload_from_string(payload, content_type=_content_type(key), retry=retry)
            return len(payload)


def _content_type(key: str) -> str:
    suffix = key.rsplit(".", 1)[-1]
    return {"jpg": "image/jpeg", "txt": "text/plain", "md": "text/markdown", "json": "application/json"}.get(
        suffix, "application/octet-stream"
    )


def seed_fleet(
    config: RuntoolConfig,
    plan: FleetPlan,
    client: storage.Client,
    progress: ProgressCallback | None = None,
    work_dir: Path | None = None,
    workers: int = 8,
) -> SeedReport:
    """Create the buckets if missing, upload the plan's objects, and write its local copies.

    Real bags are written into a temporary folder under ``work_dir`` (the system temp folder by
    default) and uploaded from there. Seeding the same plan again overwrites the same objects with the
    same bytes. ``progress(stage, done, total)`` is called on the caller's thread as objects finish,
    with stage ``raw``, ``ml`` or ``local`` (local counts runs).

    The default of 8 upload threads is what the emulator sustains best on a small machine; more
    threads than the client's 10 pooled connections only churn connections.

    Raises:
        FleetError: the plan contradicts itself (e.g. a local copy of a placeholder bag).
        StorageError: a bucket could not be created or an upload failed.
    """
    started = time.perf_counter()
    buckets = {
        "raw": _ensure_bucket(client, config.raw_bucket, config.request_retry_s),
        "ml": _ensure_bucket(client, config.ml_bucket, config.request_retry_s),
    }
    totals = _totals(plan)
    bag_files: dict[tuple[int, str], Path] = {}
    stamps: dict[tuple[int, str], tuple[int, ...]] = {}
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="runtool-seed-") as tmp, ThreadPoolExecutor(
        workers, thread_name_prefix="seed"
    ) as pool:
        uploads = _Uploads(pool, workers, totals, progress, config.request_retry_s)
        try:
            for bucket, key, payload in _bucket_objects(plan, Path(tmp), bag_files, stamps):
                uploads.submit(bucket, buckets[bucket], key, payload)
            uploads.drain()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        _write_local_copies(config, plan, bag_files, stamps, progress, totals["local"])
    return _report(plan, totals, uploads.bytes, started)


def write_fleet_tree(config: RuntoolConfig, plan: FleetPlan, folder: Path, work_dir: Path | None = None) -> SeedReport:
    """Write the plan's objects as files ``folder/<bucket>/<key>``, and its local copies as :func:`seed_fleet` does.

    This is the folder fake-gcs-server preloads (``Emulator(preload=folder)``, its ``-data`` option): the
    server then holds the objects :func:`seed_fleet` would upload, with sizes and checksums it computes
    itself, without one HTTP request per object. On 2 cores the medium fleet (~37,000 objects) takes
    ~20 s to write and ~13 s to preload into the filesystem backend on tmpfs, against 2.5-3.5 minutes
    of uploads.
    ``bytes_uploaded`` counts the bytes written under ``folder``.

    Raises:
        FleetError: the plan contradicts itself (e.g. a local copy of a placeholder bag).
    """
    started = time.perf_counter()
    names = {"raw": config.raw_bucket, "ml": config.ml_bucket}
    totals = _totals(plan)
    bag_files: dict[tuple[int, str], Path] = {}
    stamps: dict[tuple[int, str], tuple[int, ...]] = {}
    written = 0
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="runtool-seed-") as tmp:
        for bucket, key, payload in _bucket_objects(plan, Path(tmp), bag_files, stamps):
            _place(folder / names[bucket] / key, payload)
            written += payload.stat().st_size if isinstance(payload, Path) else len(payload)
        _write_local_copies(config, plan, bag_files, stamps, None, totals["local"])
    return _report(plan, totals, written, started)


def is_seeded(client: storage.Client, config: RuntoolConfig) -> bool:
    """Whether both buckets exist and the raw bucket holds an object (so a demo seeds only once)."""
    with storage_errors(config.raw_bucket, "checking"):
        if client.lookup_bucket(config.raw_bucket) is None or client.lookup_bucket(config.ml_bucket) is None:
            return False
        return any(True for _ in client.list_blobs(config.raw_bucket, max_results=1))


def _ensure_bucket(client: storage.Client, name: str, retry_s: float) -> storage.Bucket:
    with storage_errors(name, "creating"):
        bucket = client.lookup_bucket(name, retry=retry_policy(retry_s))
        return bucket if bucket is not None else client.create_bucket(name, retry=retry_policy(retry_s))


def _totals(plan: FleetPlan) -> dict[str, int]:
    """Objects per bucket (malformed ones included) and runs with a local copy."""
    return {
        "raw": sum(len(run.bags) for run in plan.runs if run.in_raw_bucket)
        + sum(1 for a in plan.anomalies if a.bucket == "raw"),
        "ml": sum(b.samples + b.labels for run in plan.runs if run.ml.in_ml_bucket for b in run.ml.bags)
        + sum(1 for a in plan.anomalies if a.bucket == "ml"),
        "local": sum(1 for run in plan.runs if run.local.any),
    }


def _report(plan: FleetPlan, totals: dict[str, int], written: int, started: float) -> SeedReport:
    return SeedReport(
        runs=len(plan.runs),
        raw_objects=totals["raw"],
        ml_objects=totals["ml"],
        anomaly_objects=len(plan.anomalies),
        local_runs=totals["local"],
        bytes_uploaded=written,
        seconds=time.perf_counter() - started,
    )


def _bucket_objects(
    plan: FleetPlan,
    folder: Path,
    bag_files: dict[tuple[int, str], Path],
    stamps: dict[tuple[int, str], tuple[int, ...]],
) -> Iterator[tuple[Literal["raw", "ml"], str, Payload]]:
    """Every object of both buckets, produced lazily: (bucket, key, bytes or the file holding them).

    Real bags (also those only copied locally) are written under ``folder`` as their run comes up and
    noted in ``bag_files`` and ``stamps``; the ML samples come after all bags, since they use the bags'
    camera stamps.
    """
    for index, run in enumerate(plan.runs):
        if run.in_raw_bucket or run.local.raw is not LocalRaw.NONE:
            _write_run_bags(index, run, folder, bag_files, stamps)
        if run.in_raw_bucket:
            for bag in run.bags:
                yield "raw", raw_bag_key(run.coordinate, bag.name), bag_files.get((index, bag.name), b"")
    yield from (("raw", a.key, a.data) for a in plan.anomalies if a.bucket == "raw")
    for index, run in enumerate(plan.runs):
        if run.ml.in_ml_bucket:
            for bag_dir, kind, name, data in _samples(index, run, stamps):
                yield "ml", ml_file_key(run.coordinate, bag_dir, kind, name), data
    yield from (("ml", a.key, a.data) for a in plan.anomalies if a.bucket == "ml")


def _write_local_copies(
    config: RuntoolConfig,
    plan: FleetPlan,
    bag_files: dict[tuple[int, str], Path],
    stamps: dict[tuple[int, str], tuple[int, ...]],
    progress: ProgressCallback | None,
    total: int,
) -> None:
    """Write every run's local copy and the export tracking file (after :func:`_bucket_objects` ran)."""
    done = 0
    for index, run in enumerate(plan.runs):
        if run.local.any:
            _write_local(config, index, run, bag_files, stamps)
            done += 1
            if progress is not None:
                progress("local", done, total)
    _write_export_tracking(config, plan)


def _write_run_bags(
    index: int,
    run: PlannedRun,
    folder: Path,
    bag_files: dict[tuple[int, str], Path],
    stamps: dict[tuple[int, str], tuple[int, ...]],
) -> None:
    """Write the run's real bags; sequence numbers and track ids continue from one split to the next."""
    first_seq = track_id = 0
    for bag in run.bags:
        if not bag.real:
            continue
        path = folder / str(index) / bag.name
        summary = write_bag(
            path, bag.start_ns, bag.duration_s, np.random.default_rng([bag.seed, 0]),
            first_seq=first_seq, track_id_start=track_id,
        )
        first_seq, track_id = summary.next_seq, summary.next_track_id
        bag_files[(index, bag.name)] = path
        stamps[(index, bag.name)] = summary.frame_stamps_ns


def _samples(
    index: int, run: PlannedRun, stamps: dict[tuple[int, str], tuple[int, ...]]
) -> Iterator[tuple[str, Literal["frames", "labels"], str, bytes]]:
    """Every frame and label file of a run: (cloud bag dir, kind, file name, bytes), deterministic."""
    bags = {bag.stem: bag for bag in run.bags}
    for plan in run.ml.bags:
        bag = bags[plan.bag]
        rng = np.random.default_rng([bag.seed, 1])  # its own stream: samples do not change the bag
        frame_stamps = stamps.get((index, bag.name))
        if frame_stamps is None:
            nominal = int(bag.duration_s * _SAMPLE_FPS)
            picks = np.sort(rng.choice(nominal, size=plan.samples, replace=False))
            jitter = rng.integers(0, 4_000_000, size=plan.samples)
            chosen = [bag.start_ns + int(k * _NS / _SAMPLE_FPS) + int(j) for k, j in zip(picks, jitter, strict=True)]
        else:
            if len(frame_stamps) < plan.samples:
                raise FleetError(
                    f"{run.coordinate} {bag.name}: {plan.samples} samples planned, the bag has "
                    f"{len(frame_stamps)} frames"
                )
            chosen = [frame_stamps[int(k)] for k in np.sort(rng.choice(len(frame_stamps), plan.samples, replace=False))]
        order = rng.permutation(plan.samples)
        labelled = {int(k) for k in order[: plan.labels]}
        empty = {int(k) for k in order[: plan.empty_labels]}
        for k, stamp_ns in enumerate(chosen):
            sec, nsec = divmod(stamp_ns, _NS)
            stem = f"{sec}.{nsec:09d}"
            yield bag.stem, "frames", f"{stem}.jpg", tiny_jpeg(rng)
            if k in labelled:
                lines = 0 if k in empty else 1 + int(rng.poisson(2.5))
                yield bag.stem, "labels", f"{stem}.txt", yolo_label_lines(rng, lines).encode()


def _write_local(
    config: RuntoolConfig,
    index: int,
    run: PlannedRun,
    bag_files: dict[tuple[int, str], Path],
    stamps: dict[tuple[int, str], tuple[int, ...]],
) -> None:
    """Copy the run into the local roots as its :class:`LocalPlan` says."""
    raw = run.local.raw
    if raw is not LocalRaw.NONE:
        bags = run.bags[:1] if raw is LocalRaw.PARTIAL else run.bags
        folder = local_raw_dir(config.raw_root, run.coordinate)
        for bag in bags:
            source = bag_files.get((index, bag.name))
            if source is None:
                raise FleetError(f"{run.coordinate}: a local copy of {bag.name} is planned but the bag is not real")
            truncated = raw is LocalRaw.SIZE_MISMATCH and bag is bags[-1]
            _place(folder / cloud_to_local_name(bag.name), source, truncate=truncated)
    if run.local.ml is LocalML.NONE:
        return
    first_dir = run.ml.bags[0].bag if run.ml.bags else None
    folder = local_ml_dir(config.ml_root, run.coordinate)
    counts: dict[str, int] = {}
    for bag_dir, kind, name, data in _samples(index, run, stamps):
        if run.local.ml is LocalML.PARTIAL and bag_dir != first_dir:
            continue
        _place(folder / cloud_to_local_name(bag_dir) / kind / name, data)
        counts[bag_dir] = counts.get(bag_dir, 0) + (kind == "labels")
    if run.local.ml is LocalML.LOCAL_ONLY:
        for bag_dir, labels in counts.items():
            note = {"export_id": _EXPORT_ID, "bag": cloud_to_local_name(bag_dir), "labels": labels}
            _place(folder / cloud_to_local_name(bag_dir) / "export.json", json.dumps(note, indent=1).encode())


def _write_export_tracking(config: RuntoolConfig, plan: FleetPlan) -> None:
    """List the local exports in ``ML/raw/.export_tracking.json``, as the annotation pipeline does."""
    exported = [run for run in plan.runs if run.local.ml is LocalML.LOCAL_ONLY]
    if not exported:
        return
    document = {
        "exports": {
            _EXPORT_ID: {
                "created": "2025-09-15",
                "samples": sum(b.labels for run in exported for b in run.ml.bags),
                "coordinates": [str(run.coordinate) for run in exported],
            }
        },
        "metadata": {"writer": "runtool demo fleet", "preset": plan.preset, "seed": plan.seed},
    }
    _place(config.ml_root / "raw" / ".export_tracking.json", json.dumps(document, indent=2).encode())


def _place(path: Path, source: Payload, truncate: bool = False) -> None:
    """Write a file through a temporary name, so a file at its final path is always whole."""
    with replacing(path) as partial:
        if isinstance(source, Path):
            if truncate:
                partial.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
            else:
                shutil.copyfile(source, partial)
        else:
            partial.write_bytes(source)
