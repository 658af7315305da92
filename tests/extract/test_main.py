"""``python -m runtool.extract``: JSON progress lines and the exit codes the Docker backend relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtool.extract.__main__ import main
from runtool.extract.outputs import OUTPUT_FILES, ExtractionProgress, ExtractionStage, RunMetadata
from tests.extract.bagfiles import COORD, DemoRun, copy_run, write_ros1_bag


def events(text: str) -> list[ExtractionProgress]:
    return [ExtractionProgress.from_dict(json.loads(line)) for line in text.splitlines()]


def test_extracts_with_a_bad_bag_and_exits_0(
    demo_run: DemoRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(demo_run, tmp_path / "bags")
    (run.folder / "rosbag_2025-08-25-09-59-59_9.bag").write_text("junk")
    out = tmp_path / "out"
    code = main(["--bags-dir", str(run.folder), "--out", str(out), "--timestamp", COORD.timestamp])

    assert code == 0
    seen = events(capsys.readouterr().out)
    assert seen[-1].stage == ExtractionStage.DONE and seen[-1].bags_done == 4
    assert [e.bag for e in seen if e.stage == ExtractionStage.BAG_FAILED] == ["rosbag_2025-08-25-09-59-59_9"]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    metadata = RunMetadata.read(out)
    assert metadata.timestamp == COORD.timestamp and len(metadata.bags_ok) == 3


def test_topics_json_selects_the_topics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bags").mkdir()
    write_ros1_bag(tmp_path / "bags" / "rosbag_a_0.bag", 3, image_topic="/cam")
    out = tmp_path / "out"
    code = main(["--bags-dir", str(tmp_path / "bags"), "--out", str(out), "--timestamp", COORD.timestamp,
                 "--topics-json", '{"image": "/cam"}'])
    assert code == 0
    metadata = RunMetadata.read(out)
    assert metadata.topics["image"] == "/cam" and metadata.bags[0].frames == 3
    assert metadata.topics["tracks"] == "/multi_object_tracking/track_bboxes"  # the default for the rest


def test_nothing_extracted_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bags = tmp_path / "bags"
    bags.mkdir()
    assert main(["--bags-dir", str(bags), "--out", str(tmp_path / "o1"), "--timestamp", COORD.timestamp]) == 1
    captured = capsys.readouterr()
    assert events(captured.out)[-1].stage == ExtractionStage.ERROR
    assert "No bags in" in captured.err

    (bags / "rosbag_a_0.bag").write_text("junk")
    assert main(["--bags-dir", str(bags), "--out", str(tmp_path / "o2"), "--timestamp", COORD.timestamp]) == 1
    captured = capsys.readouterr()
    last = events(captured.out)[-1]
    assert last.stage == ExtractionStage.ERROR and "None of the 1 bags could be read" in (last.error or "")
    assert RunMetadata.read(tmp_path / "o2").bags[0].status == "failed"  # the reasons are still written


@pytest.mark.parametrize(
    "extra",
    [
        ["--timestamp", "yesterday"],
        ["--timestamp", COORD.timestamp, "--topics-json", "{not json"],
        ["--timestamp", COORD.timestamp, "--topics-json", '{"camera": "/x"}'],
        ["--timestamp", COORD.timestamp, "--topics-json", '["/x"]'],
        [],
    ],
    ids=["bad-timestamp", "bad-json", "unknown-topic-key", "not-an-object", "missing-timestamp"],
)
def test_bad_arguments_exit_2(demo_run: DemoRun, tmp_path: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--bags-dir", str(demo_run.folder), "--out", str(tmp_path / "out"), *extra])
    assert caught.value.code == 2
    assert not (tmp_path / "out").exists()


def test_a_missing_bags_dir_or_a_non_empty_out_exits_2(demo_run: DemoRun, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--bags-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--timestamp", COORD.timestamp])
    assert caught.value.code == 2
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as caught:
        main(["--bags-dir", str(demo_run.folder), "--out", str(tmp_path / "out"), "--timestamp", COORD.timestamp])
    assert caught.value.code == 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_runs_as_a_module_in_a_fresh_process(demo_run: DemoRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = subprocess.run(
        [sys.executable, "-m", "runtool.extract", "--bags-dir", str(demo_run.folder), "--out", str(out),
         "--timestamp", COORD.timestamp],
        capture_output=True, text=True, check=False,
    )
    assert child.returncode == 0, child.stderr
    assert events(child.stdout)[-1].stage == ExtractionStage.DONE
    assert len(RunMetadata.read(out).bags_ok) == 3
    bad = subprocess.run([sys.executable, "-m", "runtool.extract", "--out", str(out)], capture_output=True,
                         check=False)
    assert bad.returncode == 2
