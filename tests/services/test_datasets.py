"""Dataset fetch against a real fake-gcs-server: selection, YOLO layout, manifest, incremental re-runs, faults."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import yaml

from runtool.config import RuntoolConfig
from runtool.errors import UsageError
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services import datasets as datasets_module
from runtool.services.conflicts import ConflictMode
from runtool.services.datasets import DatasetError, DatasetOptions, DatasetService, parse_yolo_label
from runtool.services.transfers import TransferProgress
from runtool.storage import make_client, ml_file_key, raw_bag_key
from runtool.storage.checksums import file_crc32c

A = RunCoordinate.parse("acme/north/field_1/TW_1/LB_0001/2025_05_10T08:00:00Z")  # coverage 100 %
B = RunCoordinate.parse("acme/north/field_1/TW_1/LB_0002/2025_06_01T08:00:00Z")  # 50 %, one malformed label
C = RunCoordinate.parse("acme/north/field_1/TW_1/LB_0001/2025_04_01T08:00:00Z")  # 75 %
D = RunCoordinate.parse("acme/north/field_2/TW_1/LB_0003/2025_07_01T08:00:00Z")  # no raw bags: no coverage
BAG = "_2025-01-01-08-00-00_0"
BOX = "0.5 0.5 0.1 0.1\n"
# Per run: frame stem -> label bytes (None: no label). Expected samples per bag is set to 4.
FLEET: dict[RunCoordinate, dict[str, bytes | None]] = {
    A: {"1.0": f"0 {BOX}".encode(), "2.0": f"1 {BOX}".encode(), "3.0": b"", "4.0": f"0 {BOX}2 {BOX}".encode()},
    B: {"1.0": f"1 {BOX}".encode(), "2.0": b"not a yolo line\n", "3.0": None, "4.0": None},
    C: {"1.0": f"2 {BOX}".encode(), "2.0": f"2 {BOX}".encode(), "3.0": f"2 {BOX}".encode()},
    D: {"1.0": f"0 {BOX}".encode(), "2.0": f"0 {BOX}".encode()},
}
MALFORMED = ml_file_key(B, BAG, "labels", "2.0.txt")
ALL = Filters(cid="acme")


def frame_bytes(coord: RunCoordinate, stem: str) -> bytes:
    return f"jpeg {coord} {stem}".encode() * 3


@pytest.fixture
def services(fresh_config: RuntoolConfig) -> ServiceContainer:
    client = make_client(emulator_host=fresh_config.emulator_host)
    ml, raw = client.bucket(fresh_config.ml_bucket), client.bucket(fresh_config.raw_bucket)
    for coord, samples in FLEET.items():
        for stem, label in samples.items():
            ml.blob(ml_file_key(coord, BAG, "frames", f"{stem}.jpg")).upload_from_string(frame_bytes(coord, stem))
            if label is not None:
                ml.blob(ml_file_key(coord, BAG, "labels", f"{stem}.txt")).upload_from_string(label)
        if coord != D:
            raw.blob(raw_bag_key(coord, f"{BAG}.bag")).upload_from_string(b"bag")
    container = ServiceContainer(dataclasses.replace(fresh_config, expected_samples_per_bag=4.0))
    container.inventory.refresh()
    return container


@pytest.fixture
def datasets(services: ServiceContainer) -> DatasetService:
    return services.datasets


def waiting(datasets: DatasetService, seconds: float) -> DatasetService:
    """Another dataset service over the same services, which waits ``seconds`` for a dataset's lock."""
    return DatasetService(datasets.config, datasets.data_state, datasets.inventory, datasets.engine,
                          lock_wait_s=seconds)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
            and p.parts[len(root.parts)] in ("images", "labels")}


def test_fetch_writes_the_yolo_layout_matching_the_buckets(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions(val_fraction=0.25))
    assert plan.rejected == ((MALFORMED, "line 1: 4 fields, expected 5 (class cx cy w h)"),)
    assert len(plan.samples) == 4 + 1 + 3 + 2 and plan.runs == 4
    assert len(plan.runs_in("val")) == 1 and not plan.runs_in("train") & plan.runs_in("val")
    assert plan.count("train") + plan.count("val") == 10 and "10 samples from 4 runs" in plan.describe()

    result = datasets.execute(plan)
    # The frames are downloaded; the labels, which planning read and checked, come from its cache.
    assert result.ok and (result.downloaded, result.copied, result.removed) == (10, 10, 0), result.summary()
    root = plan.root
    on_disk = files(root)
    for split in ("train", "val"):
        assert len(list((root / "images" / split).iterdir())) == plan.count(split)
        assert len(list((root / "labels" / split).iterdir())) == plan.count(split)
    for sample in plan.samples:
        stem = sample.frame_key.rsplit("/", 1)[1].rsplit(".", 1)[0]
        assert on_disk[sample.image_path] == frame_bytes(sample.coordinate, stem)
        assert on_disk[sample.label_path] == FLEET[sample.coordinate][stem]
        assert sample.image_name.startswith(f"acme_north_{sample.coordinate.fieldid}_TW_1_")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["options"]["val_fraction"] == 0.25 and len(manifest["samples"]) == 10
    for entry in manifest["samples"]:
        for part in ("frame", "label"):
            assert file_crc32c(root / entry[part]["target"]) == entry[part]["crc32c"]
    runs_by_split = {s: {e["coordinate"] for e in manifest["samples"] if e["split"] == s} for s in ("train", "val")}
    assert not runs_by_split["train"] & runs_by_split["val"]
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["nc"] == 3 and data["names"] == {0: "class_0", 1: "class_1",
                                                                                    2: "class_2"}

    again = datasets.execute(datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions(val_fraction=0.25)))
    assert again.ok and again.downloaded == 0 and again.removed == 0 and again.kept == 20
    assert again.summary().startswith("0 downloaded")
    assert files(root) == on_disk


def test_a_narrower_selection_changes_only_the_difference(datasets: DatasetService) -> None:
    wide = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions())
    assert datasets.execute(wide).ok
    narrow = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions(since=date(2025, 5, 1)))
    assert C not in {s.coordinate for s in narrow.samples}
    before = {p for s in wide.samples for p in (s.image_path, s.label_path)}
    after = {p for s in narrow.samples for p in (s.image_path, s.label_path)}
    result = datasets.execute(narrow)
    assert result.ok and result.downloaded == len(after - before) and result.removed == len(before - after)
    assert set(files(wide.root)) == after
    assert len(json.loads((wide.root / "manifest.json").read_text())["samples"]) == len(narrow.samples)


def test_class_filter_keeps_samples_with_a_box_of_those_classes(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("c2", ALL, DatasetOptions(classes=(2,)))
    assert {(s.coordinate, s.frame_key.rsplit("/", 1)[1]) for s in plan.samples} == {
        (A, "4.0.jpg"), (C, "1.0.jpg"), (C, "2.0.jpg"), (C, "3.0.jpg")
    }
    assert all(2 in s.classes for s in plan.samples)


def test_min_coverage_and_date_range_select_runs(datasets: DatasetService) -> None:
    covered = datasets.plan_dataset_fetch("cov", ALL, DatasetOptions(min_coverage_pct=60))
    assert {s.coordinate for s in covered.samples} == {A, C} and covered.runs_excluded == 2
    dated = datasets.plan_dataset_fetch("dates", ALL, DatasetOptions(since=date(2025, 5, 1), until=date(2025, 6, 30)))
    assert {s.coordinate for s in dated.samples} == {A, B}
    field = datasets.plan_dataset_fetch("f2", Filters(cid="acme", regionid="north", fieldid="field_2"),
                                        DatasetOptions())
    assert {s.coordinate for s in field.samples} == {D}


def test_all_frames_writes_empty_labels_for_unlabelled_frames(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("all", Filters(cid="acme", regionid="north", fieldid="field_1",
                                                      twid="TW_1", lbid="LB_0002"),
                                       DatasetOptions(labelled_only=False))
    assert len(plan.samples) == 3 and sum(1 for s in plan.samples if s.label_key is None) == 2
    assert [key for key, _ in plan.rejected] == [MALFORMED]
    result = datasets.execute(plan)
    assert result.ok and (result.written, result.downloaded, result.copied) == (2, 3, 1)
    for sample in plan.samples:
        expected = b"" if sample.label_key is None else FLEET[B]["1.0"]
        assert (plan.root / sample.label_path).read_bytes() == expected
    assert datasets.execute(plan).downloaded == 0


def test_max_samples_and_split_are_deterministic(datasets: DatasetService) -> None:
    first = datasets.plan_dataset_fetch("m", ALL, DatasetOptions(max_samples=5, seed=3))
    second = datasets.plan_dataset_fetch("m", ALL, DatasetOptions(max_samples=5, seed=3))
    assert len(first.samples) == 5 and first.samples == second.samples


def test_cancel_leaves_no_half_written_file_and_no_manifest(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("cancel", ALL, DatasetOptions())
    cancel = threading.Event()

    def stop(event: TransferProgress) -> None:
        if event.files_done >= 2:
            cancel.set()

    # One download at a time: the cancel then stops all files but those done and the one handed on to be synced.
    datasets.engine.workers = datasets.workers = 1
    result = datasets.execute(plan, progress=stop, cancel=cancel)
    assert result.cancelled and not result.ok and 2 <= result.downloaded < 10
    assert not (plan.root / "manifest.json").exists()
    expected = {s.image_path: s.frame_crc32c for s in plan.samples} | {s.label_path: s.label_crc32c
                                                                      for s in plan.samples}
    leftovers = [p for p in plan.root.rglob("*") if p.is_file()]
    assert leftovers and all(".part-" not in p.name and not p.name.startswith(".") for p in leftovers)
    for path in leftovers:
        assert file_crc32c(path) == expected[str(path.relative_to(plan.root))]
    resumed = datasets.execute(plan)
    assert resumed.ok and resumed.fetched == 20 - result.fetched


def test_a_rerun_reads_only_files_that_changed_since_the_manifest(
    datasets: DatasetService, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = datasets.plan_dataset_fetch("quick", ALL, DatasetOptions())
    assert datasets.execute(plan).ok
    manifest_path = plan.root / "manifest.json"
    entry = json.loads(manifest_path.read_text())["samples"][0]["frame"]
    path = plan.root / entry["target"]
    assert entry["mtime_ns"] == path.stat().st_mtime_ns
    read: list[Path] = []
    crc32c = datasets_module.file_crc32c

    def counted(file: Path) -> str:
        read.append(file)
        return crc32c(file)

    monkeypatch.setattr(datasets_module, "file_crc32c", counted)
    again = datasets.execute(plan)
    assert again.ok and again.downloaded == 0 and again.kept == 20 and read == []

    # Same size, other bytes, written later: the recorded mtime no longer matches, so it is read and replaced.
    original = path.read_bytes()
    path.write_bytes(bytes(len(original)))
    later = entry["mtime_ns"] + 10**9
    os.utime(path, ns=(later, later))
    fixed = datasets.execute(plan)
    assert fixed.ok and fixed.downloaded == 1 and path.read_bytes() == original and set(read) == {path}

    # A manifest without usable records (damaged, or from an older version) only means every file is read.
    for damaged in ("{", json.dumps({"samples": [{"frame": {}, "label": {}}]})):
        manifest_path.write_text(damaged)
        read.clear()
        kept = datasets.execute(plan)
        assert kept.ok and kept.downloaded == 0 and len(read) == 20


def test_a_damaged_cached_label_is_downloaded_not_copied(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("cache", ALL, DatasetOptions())
    cache = datasets.config.ml_root / "trainings" / datasets_module.LABELS_CACHE
    damaged = sorted(cache.iterdir())[0]
    damaged.write_bytes(b"9 0.1 0.1 0.1 0.1\n")
    result = datasets.execute(plan)
    assert result.ok and (result.downloaded, result.copied) == (11, 9), result.summary()
    for sample in plan.samples:
        assert file_crc32c(plan.root / sample.label_path) == sample.label_crc32c


def test_conflict_modes_decide_what_happens_to_files_already_there(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("modes", ALL, DatasetOptions())
    assert datasets.execute(plan).ok
    image = plan.root / plan.samples[0].image_path
    original = image.read_bytes()
    image.write_bytes(bytes(len(original)))  # the same size, other bytes
    skipped = datasets.execute(plan, conflict="skip")
    assert skipped.ok and skipped.fetched == 0 and image.read_bytes() != original  # skip trusts the size
    verified = datasets.execute(plan)  # verify (the default) reads the file the manifest does not vouch for
    assert verified.ok and verified.fetched == verified.replaced == 1 and image.read_bytes() == original
    again = datasets.execute(plan, conflict="overwrite")
    assert again.ok and again.fetched == again.replaced == 20 and again.kept == 0
    with pytest.raises(DatasetError, match="Unknown conflict mode 'merge'"):
        datasets.execute(plan, conflict="merge")  # type: ignore[arg-type]


def test_skip_replaces_a_file_of_another_size_and_leaves_one_of_the_same_size(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("sizes", ALL, DatasetOptions())
    assert datasets.execute(plan).ok
    cut = plan.root / plan.samples[0].image_path
    original = cut.read_bytes()
    cut.write_bytes(original[:5])  # cut short
    same = plan.root / plan.samples[1].image_path
    same.write_bytes(bytes(same.stat().st_size))  # same size, other bytes
    os.utime(same, ns=(1_000_000_000, 1_000_000_000))
    result = datasets.execute(plan, conflict="skip")
    assert result.ok and (result.downloaded, result.replaced) == (1, 1), result.summary()
    assert "1 replaced" in result.summary() and result.to_dict()["replaced"] == 1
    assert cut.read_bytes() == original
    assert same.stat().st_mtime_ns == 1_000_000_000  # skip keeps a file of the right size without reading it
    assert not [p for p in plan.root.rglob("*") if ".part-" in p.name]


def test_bad_input_is_refused_clearly(datasets: DatasetService) -> None:
    with pytest.raises(DatasetError, match="validation fraction"):
        DatasetOptions(val_fraction=1.5)
    with pytest.raises(DatasetError, match="date range is empty"):
        DatasetOptions(since=date(2025, 6, 1), until=date(2025, 5, 1))
    with pytest.raises(DatasetError, match="Bad dataset name"):
        datasets.plan_dataset_fetch("../x", ALL, DatasetOptions())
    # The name as typed (letters of any script), a control character escaped.
    with pytest.raises(DatasetError, match="Bad dataset name '☃/💥' "):
        datasets.plan_dataset_fetch("☃/💥", ALL, DatasetOptions())
    with pytest.raises(DatasetError, match=r"Bad dataset name 'a\\x1bb' "):
        datasets.plan_dataset_fetch("a\x1bb", ALL, DatasetOptions())
    assert parse_yolo_label(b"0 0.5 0.5 1.5 0.1\n") == "line 1: box values must lie in [0, 1]"
    assert parse_yolo_label(b"x 0.5 0.5 0.5 0.1\n").startswith("line 1: class 'x'")
    assert parse_yolo_label(b"\n3 0 1 0.5 0.5\n\n") == (3,)


def test_cli_dataset_fetch(services: ServiceContainer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtool.cli import main
    from tests.conftest import write_toml

    toml = write_toml(services.config, tmp_path / "runtool.toml")
    with toml.open("a", encoding="utf-8") as handle:
        handle.write("[coverage]\nexpected_samples_per_bag = 4\n")
    assert main(["--config", str(toml), "dataset", "fetch", "weeds", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "10 samples from 4 runs" in out and "rejected" in err
    assert main(["--config", str(toml), "dataset", "fetch", "weeds", "--yes"]) == 0
    assert "10 downloaded, 10 labels from the cache" in capsys.readouterr().out
    assert main(["--config", str(toml), "dataset", "fetch", "weeds", "--yes"]) == 0
    assert "\n0 downloaded" in capsys.readouterr().out  # same parameters: a no-op
    assert main(["--config", str(toml), "dataset", "fetch", "weeds", "--yes", "--conflict", "overwrite"]) == 0
    assert "10 downloaded, 10 labels from the cache, 0 empty labels, 0 kept, 0 removed, 20 replaced" in (
        capsys.readouterr().out)
    with pytest.raises(SystemExit) as bad_date:
        main(["--config", str(toml), "dataset", "fetch", "weeds", "--since", "yesterday"])
    assert bad_date.value.code == 2
    assert main(["--config", str(toml), "dataset", "fetch", "weeds", "--val-fraction", "2", "--dry-run"]) == 2


def test_cli_dataset_plan_shows_its_label_reads_on_a_terminal(services: ServiceContainer, tmp_path: Path) -> None:
    """On a terminal the plan's label reads are counted on one stderr line; stdout carries only the plan."""
    import pty

    from tests.conftest import write_toml

    toml = write_toml(services.config, tmp_path / "runtool.toml")
    runtool = str(Path(sys.executable).with_name("runtool"))
    terminal, stderr = pty.openpty()
    try:
        done = subprocess.run([runtool, "--config", str(toml), "dataset", "fetch", "weeds", "--dry-run"],
                              stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300)
        os.close(stderr)
        shown = b""
        while True:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the command has ended and closed its end
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(terminal)
    assert done.returncode == 0 and "samples from" in done.stdout and "Planning" not in done.stdout
    lines = shown.decode().replace("\r\n", "\n").split("\n")
    planning = next(line for line in lines if "Planning" in line)
    assert planning.startswith("\rPlanning: ") and planning.rstrip().endswith("11 of 11 labels read and checked")


# -- sample names, the dataset lock, untrusted label sizes -------------------------------------------------------

# Joined with "_", the parts of these two runs read the same: only the key hash in the file names tells them apart.
JOINED_A = RunCoordinate.parse("client_002/region_east/field_1/TW_1/LB_0001/2025_05_10T08:00:00Z")
JOINED_B = RunCoordinate.parse("client/002_region_east/field_1/TW_1/LB_0001/2025_05_10T08:00:00Z")


def legacy_name(sample: datasets_module.DatasetSample) -> str:
    """The file name stem runtool gave a sample before names carried a key hash."""
    stem = sample.frame_key.rsplit("/", 1)[1].rsplit(".", 1)[0]
    coord = sample.coordinate
    parts = [*coord.to_path_tuple()[:5], coord.timestamp.replace(":", "-"), sample.bag.lstrip("_"), stem]
    return "_".join(parts)


@pytest.fixture
def joined(fresh_config: RuntoolConfig) -> DatasetService:
    """Two runs whose parts join alike, each with frames 1.0 and 2.0 and labels of its own class (0 for A, 1 for B)."""
    ml = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)
    for cls, coord in enumerate((JOINED_A, JOINED_B)):
        for stem in ("1.0", "2.0"):
            ml.blob(ml_file_key(coord, BAG, "frames", f"{stem}.jpg")).upload_from_string(frame_bytes(coord, stem))
            ml.blob(ml_file_key(coord, BAG, "labels", f"{stem}.txt")).upload_from_string(f"{cls} {BOX}".encode())
    container = ServiceContainer(fresh_config)
    container.inventory.refresh()
    return container.datasets


def test_runs_whose_parts_join_alike_keep_their_own_images_and_labels(joined: DatasetService) -> None:
    plan = joined.plan_dataset_fetch("joined", Filters(), DatasetOptions(val_fraction=0))
    assert len(plan.samples) == 4 and len({legacy_name(s) for s in plan.samples}) == 2  # the old names collided
    result = joined.execute(plan)
    assert result.ok and result.downloaded == 4, result.summary()
    images = sorted((plan.root / "images" / "train").iterdir())
    assert len(images) == 4 and len(list((plan.root / "labels" / "train").iterdir())) == 4
    for image in images:
        # The YOLO pairing (same stem) must give every image the label of its own run.
        label = (plan.root / "labels" / "train" / f"{image.stem}.txt").read_bytes()
        run = JOINED_A if image.read_bytes().startswith(f"jpeg {JOINED_A} ".encode()) else JOINED_B
        assert image.read_bytes() in {frame_bytes(run, "1.0"), frame_bytes(run, "2.0")}
        assert label == f"{0 if run == JOINED_A else 1} {BOX}".encode(), image.name
        assert image.name.startswith("client") and "region_east_field_1_TW_1_LB_0001_2025_05_10T08-00-00Z" in image.name


def test_a_plan_writing_two_sources_to_one_file_is_refused(
    joined: DatasetService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets_module, "_KEY_HASH_CHARS", 0)  # names without the hash: the old collision
    with pytest.raises(DatasetError, match=r"Two samples would be written to images/train/client.*: the frames raw/"):
        joined.plan_dataset_fetch("joined", Filters(), DatasetOptions(val_fraction=0))
    assert not (joined.config.ml_root / "trainings" / "joined").exists()


def test_a_dataset_with_the_old_sample_names_migrates_on_the_next_fetch(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions())
    assert datasets.execute(plan).ok
    root = plan.root
    # Turn it into the dataset an older runtool wrote: the same files and manifest under the old names.
    manifest = (root / "manifest.json").read_text()
    for sample in plan.samples:
        for path, suffix in ((sample.image_path, ".jpg"), (sample.label_path, ".txt")):
            old = f"{path.rsplit('/', 1)[0]}/{legacy_name(sample)}{suffix}"
            os.rename(root / path, root / old)
            manifest = manifest.replace(f'"{path}"', f'"{old}"')
    (root / "manifest.json").write_text(manifest)
    old_files = set(files(root))
    assert len(old_files) == 20 and not old_files & {p for s in plan.samples for p in (s.image_path, s.label_path)}

    result = datasets.execute(datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions()))
    assert result.ok and result.removed == 20 and result.fetched == 20 and result.kept == 0, result.summary()
    on_disk = files(root)
    assert set(on_disk) == {p for s in plan.samples for p in (s.image_path, s.label_path)}
    for sample in plan.samples:
        stem = sample.frame_key.rsplit("/", 1)[1].rsplit(".", 1)[0]
        assert on_disk[sample.image_path] == frame_bytes(sample.coordinate, stem)
        assert on_disk[sample.label_path] == FLEET[sample.coordinate][stem]
    targets = {e[p]["target"] for e in json.loads((root / "manifest.json").read_text())["samples"]
               for p in ("frame", "label")}
    assert targets == set(on_disk)
    assert datasets.execute(plan).fetched == 0


@pytest.mark.parametrize(
    "name", ["", ".hidden", "-rf", "a/b", "..", "a b", "naïve", "x" * 101, "tab\there", "new\nline"]
)
def test_bad_dataset_names_are_refused_with_their_own_error(datasets: DatasetService, name: str) -> None:
    with pytest.raises(datasets_module.DatasetNameError, match="letters, digits") as refused:
        datasets.plan_dataset_fetch(name, ALL, DatasetOptions())
    assert isinstance(refused.value, UsageError) and isinstance(refused.value, DatasetError)
    assert "\n" not in str(refused.value) and "\t" not in str(refused.value) and len(str(refused.value)) < 300
    assert not (datasets.config.ml_root / "trainings").exists()


def test_good_dataset_names(datasets: DatasetService) -> None:
    for name in ("weeds", "weeds-2025.v1_b", "x" * 100, "7"):
        assert datasets.dataset_root(name).name == name


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from runtool.files import exclusive_lock
with exclusive_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_fetch_while_another_holds_the_dataset_waits_then_refuses(datasets: DatasetService) -> None:
    plan = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions())
    lock = datasets.lock_path("weeds")
    assert lock.is_relative_to(datasets.config.data_dir / ".runtool" / "locks")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = waiting(datasets, 0.5)
        started = time.monotonic()
        with pytest.raises(datasets_module.DatasetBusyError, match="Another fetch of dataset 'weeds' is running"):
            refused.execute(plan)
        assert time.monotonic() - started >= 0.5
        assert not plan.root.exists()
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        stopped = waiting(datasets, 60).execute(plan, cancel=cancel)
        assert stopped.cancelled and stopped.fetched == 0 and not plan.root.exists()
        # Another dataset is not held up.
        assert datasets.execute(datasets.plan_dataset_fetch("other", ALL, DatasetOptions())).ok
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert waiting(datasets, 0.5).execute(plan).ok


def test_two_fetches_of_one_dataset_at_once_both_succeed(services: ServiceContainer, tmp_path: Path) -> None:
    from tests.conftest import write_toml

    toml = write_toml(services.config, tmp_path / "runtool.toml")
    runtool = Path(sys.executable).with_name("runtool")
    for extra in ([], ["--conflict", "overwrite"]):
        fetches = [
            subprocess.Popen([str(runtool), "--config", str(toml), "dataset", "fetch", "weeds", "--yes", *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for fetch in fetches:
            out, err = fetch.communicate(timeout=300)
            assert fetch.returncode == 0, out + err
            assert "0 failed" in out
    root = services.config.ml_root / "trainings" / "weeds"
    manifest = json.loads((root / "manifest.json").read_text())
    on_disk = files(root)
    assert len(manifest["samples"]) == 10
    assert set(on_disk) == {e[p]["target"] for e in manifest["samples"] for p in ("frame", "label")}
    for entry in manifest["samples"]:
        for part in ("frame", "label"):
            assert file_crc32c(root / entry[part]["target"]) == entry[part]["crc32c"]


def test_labels_over_the_cap_are_refused_unread_and_never_cached(services: ServiceContainer) -> None:
    capped = ServiceContainer(dataclasses.replace(services.config, max_label_bytes=64)).datasets
    big_key = ml_file_key(A, BAG, "labels", "1.0.txt")
    big = (f"0 {BOX}" * 20).encode()  # a valid YOLO label of 360 bytes
    make_client(emulator_host=services.config.emulator_host).bucket(services.config.ml_bucket).blob(
        big_key).upload_from_string(big)
    capped.inventory.refresh()
    plan = capped.plan_dataset_fetch("capped", ALL, DatasetOptions())
    reasons = dict(plan.rejected)
    assert reasons[big_key] == "360 B, larger than the 64 B a label may have (max_label_bytes); not read"
    assert reasons[MALFORMED].startswith("line 1")  # the other samples are planned as before
    assert len(plan.samples) == 9 and big_key not in {s.label_key for s in plan.samples}
    cache = services.config.ml_root / "trainings" / datasets_module.LABELS_CACHE
    # Every other label read (the empty one needs no copy), none over the cap.
    assert len(list(cache.iterdir())) == 9 and all(p.stat().st_size <= 64 for p in cache.iterdir())
    assert capped.execute(plan).ok


def test_a_label_that_grew_after_the_listing_is_read_no_further_than_the_cap(services: ServiceContainer) -> None:
    import tracemalloc

    datasets = services.datasets
    key = ml_file_key(A, BAG, "labels", "2.0.txt")
    # Replaced after the inventory was scanned, so the listing still says a few bytes.
    huge = b"0 0.5 0.5 0.1 0.1\n" * (24 * 1024 * 1024 // 18)
    make_client(emulator_host=services.config.emulator_host).bucket(services.config.ml_bucket).blob(
        key).upload_from_string(huge)
    tracemalloc.start()
    try:
        plan = datasets.plan_dataset_fetch("grown", ALL, DatasetOptions())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dict(plan.rejected)[key] == (
        "over 1.0 MiB, larger than the 1.0 MiB a label may have (max_label_bytes); not read"
    )
    assert peak < 12 * 1024 * 1024, f"planning held {peak} bytes at once"
    cache = services.config.ml_root / "trainings" / datasets_module.LABELS_CACHE
    assert all(p.stat().st_size < 1024 for p in cache.iterdir())
    assert key not in {s.label_key for s in plan.samples} and len(plan.samples) == 9


def test_planning_reports_its_label_reads(datasets: DatasetService) -> None:
    calls: list[tuple[int, int]] = []
    plan = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions(), progress=lambda *call: calls.append(call))
    # 11 labels: the empty one needs no read and counts as done at once, the other 10 as they arrive.
    assert calls == [(done, 11) for done in range(1, 12)]
    assert len(plan.samples) == 10 and dict(plan.rejected)[MALFORMED].startswith("line 1")
    calls.clear()
    again = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions(), progress=lambda *call: calls.append(call))
    assert calls == [(11, 11)] and again.samples == plan.samples  # all from the cache: one call, all done


def test_a_label_replaced_after_the_listing_is_rejected_and_not_cached(services: ServiceContainer) -> None:
    key = ml_file_key(A, BAG, "labels", "2.0.txt")
    make_client(emulator_host=services.config.emulator_host).bucket(services.config.ml_bucket).blob(
        key).upload_from_string(f"3 {BOX}".encode())  # a valid label, but not the one the inventory listed
    plan = services.datasets.plan_dataset_fetch("replaced", ALL, DatasetOptions())
    assert dict(plan.rejected)[key].startswith("changed since the inventory was scanned")
    assert key not in {s.label_key for s in plan.samples} and len(plan.samples) == 9
    cache = services.config.ml_root / "trainings" / datasets_module.LABELS_CACHE
    cached = sorted(p.name for p in cache.iterdir())
    # The 9 other non-empty labels (the malformed one too: its bytes are what was listed), no temporary file.
    assert len(cached) == 9 and not any(name.startswith(".") for name in cached)
    assert services.datasets._label_cache_path(key, 0).name.split("-")[0] not in {
        name.split("-")[0] for name in cached
    }


def stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file and folder under ``root``, the root included."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root)): (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths}


@pytest.mark.parametrize("conflict", ["verify", "skip"])
def test_an_identical_fetch_writes_nothing(datasets: DatasetService, conflict: ConflictMode) -> None:
    first = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions())
    assert datasets.execute(first, conflict=conflict).ok
    root = first.root
    before = stamps(root.parent)  # the dataset and the label cache beside it
    assert {"weeds/data.yaml", "weeds/manifest.json"} <= set(before) and len(before) > 20
    yaml_text, manifest_text = (root / "data.yaml").read_text(), (root / "manifest.json").read_text()

    again = datasets.execute(datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions()), conflict=conflict)
    assert again.ok and (again.downloaded, again.copied, again.written, again.removed) == (0, 0, 0, 0)
    assert stamps(root.parent) == before
    assert (root / "data.yaml").read_text() == yaml_text and (root / "manifest.json").read_text() == manifest_text

    # As another process (the command line) would: services built afresh from the configuration.
    elsewhere = ServiceContainer(datasets.config).datasets
    assert elsewhere.execute(elsewhere.plan_dataset_fetch("weeds", ALL, DatasetOptions()), conflict=conflict).ok
    assert stamps(root.parent) == before


def test_a_changed_plan_rewrites_only_what_changed(datasets: DatasetService) -> None:
    assert datasets.execute(datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions())).ok
    root = datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions()).root
    names = ("data.yaml", "manifest.json")
    old = {name: stamps(root)[name] for name in names}

    # Another validation share: the manifest records it, data.yaml (paths and classes) stays as it was.
    assert datasets.execute(datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions(val_fraction=0.5))).ok
    now = {name: stamps(root)[name] for name in names}
    assert now["data.yaml"] == old["data.yaml"]
    assert now["manifest.json"][0] != old["manifest.json"][0]  # a new file renamed into place
    assert '"val_fraction": 0.5' in (root / "manifest.json").read_text()

    # Runs from June on have classes 0 and 1 only: both files change.
    assert datasets.execute(datasets.plan_dataset_fetch("weeds", ALL, DatasetOptions(since=date(2025, 6, 1)))).ok
    later = {name: stamps(root)[name] for name in names}
    assert all(later[name][0] != now[name][0] for name in names)
    assert "nc: 2" in (root / "data.yaml").read_text()
