"""The command line against bad input and faults: validation exits 2 with a sentence, OS errors and closed pipes
end without a traceback, hostile object names never reach the terminal raw, and a bad run spoils only itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.models import RunCoordinate
from runtool.storage import local_raw_dir, make_client, ml_file_key, raw_bag_key
from tests.conftest import write_toml

RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0001/2025_08_01T08:00:00Z")
RUN2 = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0002/2025_08_01T08:00:00Z")
BAG = "_2025-08-01-08-00-20_0"
RUNTOOL = Path(sys.executable).with_name("runtool")


@pytest.fixture
def toml(fresh_config: RuntoolConfig, tmp_path: Path) -> Path:
    """Two runs with bags; the first also has 6 labelled samples."""
    client = make_client(emulator_host=fresh_config.emulator_host)
    raw, ml = client.bucket(fresh_config.raw_bucket), client.bucket(fresh_config.ml_bucket)
    for i in range(2):
        raw.blob(raw_bag_key(RUN, f"_2025-08-01-08-00-2{i}_{i}.bag")).upload_from_string(b"0123456789")
    raw.blob(raw_bag_key(RUN2, "_2025-08-01-08-00-45_0.bag")).upload_from_string(b"01234")
    for n in range(6):
        ml.blob(ml_file_key(RUN, BAG, "frames", f"1754035220.{n:09d}.jpg")).upload_from_string(b"\xff\xd8" * 50)
        ml.blob(ml_file_key(RUN, BAG, "labels", f"1754035220.{n:09d}.txt")).upload_from_string(b"0 0.5 0.5 0.1 0.1\n")
    return write_toml(fresh_config, tmp_path / "runtool.toml")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*argv: str, shell_prefix: str = "", stdin: int | None = subprocess.DEVNULL,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed ``runtool`` in its own process (``shell_prefix``: shell commands to run before it)."""
    command = " ".join(["exec", str(RUNTOOL), *(f"'{a}'" for a in argv)])
    return subprocess.run(["bash", "-c", f"{shell_prefix}{command}"], capture_output=True, text=True,
                          timeout=timeout, stdin=stdin, env={**os.environ, "RUNTOOL_CONFIG": ""})


# -- validation: exit code 2 and a sentence naming the option -------------------------------------------------

@pytest.mark.parametrize(("argv", "named"), [
    (["coverage", "-E", "inf"], "-E/--expected-samples-per-bag"),
    (["coverage", "-E", "nan"], "-E/--expected-samples-per-bag"),
    (["runs", "-E", "-1"], "-E/--expected-samples-per-bag"),
    (["runs", "--under-labelled-pct", "-5"], "--under-labelled-pct"),
    (["coverage", "--under-labelled-pct", "nan"], "--under-labelled-pct"),
    (["coverage", "--under-labelled-pct", "100.5"], "--under-labelled-pct"),
    (["dataset", "fetch", "d", "--dry-run", "--min-coverage", "-5"], "--min-coverage"),
    (["dataset", "fetch", "d", "--dry-run", "--min-coverage", "nan"], "--min-coverage"),
    (["dataset", "fetch", "d", "--dry-run", "--min-coverage", "inf"], "--min-coverage"),
    (["dataset", "fetch", "d", "--dry-run", "--min-coverage", "101"], "--min-coverage"),
    (["dataset", "fetch", "d", "--dry-run", "--max-samples", "0"], "--max-samples"),
    (["dataset", "fetch", "d", "--dry-run", "--val-fraction", "1"], "--val-fraction"),
    (["dataset", "fetch", "d", "--dry-run", "--val-fraction", "nan"], "--val-fraction"),
    (["dataset", "fetch", "d", "--dry-run", "--val-fraction", "-0.1"], "--val-fraction"),
    (["dataset", "fetch", "d", "--dry-run", "--classes", ""], "--classes"),
    (["dataset", "fetch", "d", "--dry-run", "--classes", "0,,2"], "--classes"),
    (["dataset", "fetch", "d", "--dry-run", "--classes", "x"], "--classes"),
    (["dataset", "fetch", "x" * 300, "--dry-run"], "too long"),
    (["dataset", "fetch", ".hidden", "--dry-run"], "dataset name"),
    (["dataset", "fetch", "a/b", "--dry-run"], "dataset name"),
    (["dataset", "fetch", "bell\x07", "--dry-run"], "dataset name"),
    (["download", RUN.to_path_str(), "--bags", "999", "--dry-run"], "no bag index 999"),
    (["download", RUN.to_path_str(), "--bags", "_nope", "--dry-run"], "no bag named"),
    (["download", "--lbid", "LB_0001", "--bags", "0", "--dry-run"], "--bags"),
    (["ml", "download", RUN.to_path_str(), "--bags", "_nope", "--dry-run"], "no ML samples for"),
    (["raw", "upload", RUN.to_path_str(), "--dry-run"], "No local bags"),
])
def test_bad_values_exit_2_with_a_sentence(argv: list[str], named: str, toml: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--config", str(toml), *argv)
    assert code == 2, err
    assert err.splitlines()[-1].startswith("runtool: error: ") and named in err and "Traceback" not in err
    assert "\x07" not in err


@pytest.mark.parametrize("port", ["-1", "65536", "99999"])
def test_an_emulator_port_out_of_range_exits_2(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "emulator", "--memory", "--port", port)
    assert code == 2 and err == f"runtool: error: --port must be a port from 0 (any free one) to 65535, not {port}\n"


def test_the_edges_of_each_range_are_accepted(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "--config", str(toml), "coverage", "-E", "0.5", "--under-labelled-pct", "0")[0] == 0
    assert run_cli(capsys, "--config", str(toml), "runs", "--under-labelled-pct", "100")[0] == 0
    code, out, err = run_cli(capsys, "--config", str(toml), "dataset", "fetch", "d", "--dry-run", "--min-coverage",
                             "0", "--val-fraction", "0", "--max-samples", "1", "--classes", "0, 2")
    assert code == 0, err
    assert "1 samples" in out or "1 sample" in out


# -- control characters in object names ------------------------------------------------------------------------

def test_control_characters_in_keys_are_escaped_in_anomalies_and_previews(
        fresh_config: RuntoolConfig, toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    raw.blob("acme/\x1b[2J\x1b[31mred\nforged line").upload_from_string(b"x")
    raw.blob(raw_bag_key(RUN, "_2025-08-01-08-00-2\x1b[2J_7.bag")).upload_from_string(b"ab")
    raw.blob(raw_bag_key(RUN, "_2025-08-01-08-00-2\n=_8.bag")).upload_from_string(b"ab")
    code, out, _ = run_cli(capsys, "--config", str(toml), "inventory", "refresh")
    assert code == 0
    code, out, _ = run_cli(capsys, "--config", str(toml), "anomalies")
    assert code == 0
    assert "\x1b" not in out and r"acme/\x1b[2J\x1b[31mred\nforged line" in out
    assert not any(line.startswith("forged line") for line in out.splitlines())
    code, out, _ = run_cli(capsys, "--config", str(toml), "download", RUN.to_path_str(), "--dry-run")
    assert code == 0
    assert "\x1b" not in out and r"rosbag_2025-08-01-08-00-2\x1b[2J_7.bag" in out
    assert r"rosbag_2025-08-01-08-00-2\n=_8.bag" in out
    lines = out.splitlines()
    assert len(lines) == 1 + 4 and all(line.startswith(("Plan for", "  → ")) for line in lines)
    code, out, _ = run_cli(capsys, "--config", str(toml), "anomalies", "--json")
    assert "\x1b" not in out and "acme/\x1b[2J\x1b[31mred\nforged line" in {a["key"] for a in json.loads(out)}


# -- bulk planning: one run with an OS error is left out, the others go ahead ----------------------------------

def test_a_name_too_long_for_the_file_system_is_an_anomaly_and_its_run_downloads(
        fresh_config: RuntoolConfig, toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    long_key = raw_bag_key(RUN, f"_2025-08-01-08-00-2{'9' * 270}_5.bag")
    raw.blob(long_key).upload_from_string(b"long")
    assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    code, out, _ = run_cli(capsys, "--config", str(toml), "anomalies", "--json")
    assert {a["key"]: a["reason"] for a in json.loads(out)}[long_key].startswith("name too long for a local file")
    local_raw_dir(fresh_config.raw_root, RUN).mkdir(parents=True)  # the long name would now reach the file system
    code, out, err = run_cli(capsys, "--config", str(toml), "download", "--twid", "TW_1", "--yes")
    assert code == 0, err
    assert f"{RUN}: left out" not in out
    assert (local_raw_dir(fresh_config.raw_root, RUN2) / "rosbag_2025-08-01-08-00-45_0.bag").read_bytes() == b"01234"
    assert len(list(local_raw_dir(fresh_config.raw_root, RUN).iterdir())) == 2
    code, out, err = run_cli(capsys, "--config", str(toml), "download", RUN.to_path_str(), "--dry-run")
    assert code == 0 and "Traceback" not in err and "9999" not in out


# -- OS errors at the top: a sentence naming the path, exit code 1 ---------------------------------------------

@pytest.mark.parametrize("argv", [["inventory", "refresh"], ["dataset", "fetch", "d", "--dry-run"]])
def test_a_full_disk_is_a_sentence(argv: list[str], toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if argv[0] == "dataset":
        assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    # RLIMIT_FSIZE (ulimit -f, in 512-byte blocks) makes writes fail with EFBIG, as a full disk fails them.
    result = run_process("--config", str(toml), *argv, shell_prefix="ulimit -f 0; ")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("runtool: ") and ("disk space" in line or "File too large" in line)
    assert str(toml.parent) in line  # the cache, or the data folder, under tmp_path


def test_a_file_where_a_folder_should_be_is_a_sentence_naming_it(toml: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    with toml.open("a", encoding="utf-8") as handle:
        handle.write(f'ml_root = "{blocker / "ML"}"\n')  # under [paths], the last table of the file
    assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    code, _, err = run_cli(capsys, "--config", str(toml), "dataset", "fetch", "d", "--dry-run")
    assert code == 1 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("runtool: ") and str(blocker) in line and "Not a directory" in line


def test_an_error_with_details_prints_them_under_its_sentence(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both bags of RUN are ten bytes of text: the sentence names the first, the lines under it every one."""
    assert run_cli(capsys, "--config", str(toml), "download", RUN.to_path_str(), "--yes")[0] == 0
    code, _, err = run_cli(capsys, "--config", str(toml), "extract", RUN.to_path_str())
    assert code == 1 and "Traceback" not in err
    sentence, *details = err.splitlines()
    assert sentence.startswith(f"runtool: None of the 2 bags of {RUN} could be read") and sentence.endswith(" more.")
    assert [line.split(": ", 1)[0] for line in details] == ["  rosbag_2025-08-01-08-00-20_0",
                                                             "  rosbag_2025-08-01-08-00-21_1"]


def test_a_closed_pipe_is_a_quiet_exit(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    runtool = subprocess.Popen([str(RUNTOOL), "--config", str(toml), "runs"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "RUNTOOL_CONFIG": ""})
    assert runtool.stdout is not None and runtool.stderr is not None
    runtool.stdout.close()  # the reader is gone before the first line, as `runtool runs | head -0` would be
    err = runtool.stderr.read()
    assert runtool.wait(timeout=120) == 141
    assert err == b""


# -- transfer results survive a failed refresh afterwards; the stale-inventory message says what to do ---------

def test_upload_results_are_printed_when_the_refresh_after_them_fails(
        fresh_config: RuntoolConfig, toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = local_raw_dir(fresh_config.raw_root, RUN2)
    folder.mkdir(parents=True)
    (folder / "rosbag_2025-08-01-08-00-46_1.bag").write_bytes(b"b" * 100)
    assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    # The upload reads local files only; the inventory cache it writes afterwards is far beyond 4 KiB.
    result = run_process("--config", str(toml), "raw", "upload", RUN2.to_path_str(), "--yes",
                         shell_prefix="ulimit -f 8; ")
    assert result.returncode == 1, result.stderr
    assert "1 files, 100 B" in result.stdout and "0 failed" in result.stdout
    assert f"transferred, but the state of {RUN2} was not refreshed: " in result.stderr
    assert "File too large" in result.stderr or "disk space" in result.stderr
    assert "runtool inventory refresh" in result.stderr and "Traceback" not in result.stderr
    raw = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    assert raw.blob(raw_bag_key(RUN2, "_2025-08-01-08-00-46_1.bag")).download_as_bytes() == b"b" * 100


def test_a_changed_object_under_a_stale_inventory_says_to_refresh(
        fresh_config: RuntoolConfig, toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    ml = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)
    ml.blob(ml_file_key(RUN, BAG, "frames", "1754035220.000000003.jpg")).upload_from_string(b"\xff\xd8 new")
    code, _, err = run_cli(capsys, "--config", str(toml), "dataset", "fetch", "d", "--yes")
    assert code == 1
    assert "changed in the cloud since the preview; run `runtool inventory refresh`, then plan again" in err
    # Planning again from the same stale cache fails the same way; after the refresh it works, as the message says.
    assert run_cli(capsys, "--config", str(toml), "dataset", "fetch", "d", "--yes")[0] == 1
    assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    code, out, err = run_cli(capsys, "--config", str(toml), "dataset", "fetch", "d", "--yes")
    assert code == 0, err
    assert "0 failed" in out


def test_demo_seed_is_refused_in_read_only_mode(fresh_config: RuntoolConfig, toml: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Seeding writes both buckets and the data folder: read-only mode refuses it like every other write."""
    monkeypatch.setenv("RUNTOOL_READ_ONLY", "1")
    before = sorted(p.relative_to(fresh_config.data_dir) for p in fresh_config.data_dir.rglob("*"))
    code, _, err = run_cli(capsys, "--config", str(toml), "demo", "seed")
    assert code == 1 and err.startswith("runtool: ") and "read-only" in err
    assert sorted(p.relative_to(fresh_config.data_dir) for p in fresh_config.data_dir.rglob("*")) == before
    raw = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    assert len(list(raw.list_blobs())) == 3
