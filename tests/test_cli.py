"""The runtool command line, against a real emulator."""

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
from runtool.storage import make_client, ml_file_key, raw_bag_key
from tests.conftest import write_toml

RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0001/2025_08_01T08:00:00Z")
RUN2 = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0002/2025-08-01T08:00:21Z")


@pytest.fixture
def toml(fresh_config: RuntoolConfig, tmp_path: Path) -> Path:
    client = make_client(emulator_host=fresh_config.emulator_host)
    raw, ml = client.bucket(fresh_config.raw_bucket), client.bucket(fresh_config.ml_bucket)
    for i in range(4):
        raw.blob(raw_bag_key(RUN, f"_2025-08-01-08-00-2{i}_{i}.bag")).upload_from_string(b"0123456789")
    raw.blob(raw_bag_key(RUN2, "_2025-08-01-08-00-45_0.bag")).upload_from_string(b"01234")
    raw.blob("acme/readme.md").upload_from_string(b"stray")
    for n in range(34):
        for kind, suffix in (("frames", "jpg"), ("labels", "txt")):
            key = ml_file_key(RUN, "_2025-08-01-08-00-20_0", kind, f"1754035220.{n:09d}.{suffix}")  # type: ignore[arg-type]
            ml.blob(key).upload_from_string(b"j")
    return write_toml(fresh_config, tmp_path / "runtool.toml")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_json_lists_every_run_with_the_contract_fields(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "runs", "--json")
    assert code == 0
    runs = {r["lbid"]: r for r in json.loads(out)}
    assert set(runs) == {"LB_0001", "LB_0002"}
    required = {"cid", "regionid", "fieldid", "twid", "lbid", "timestamp", "raw_bags", "raw_bytes", "ml_frames",
                "ml_labels", "coverage_pct", "raw_sync", "ml_sync", "issues"}
    assert required <= set(runs["LB_0001"])
    # 34 labels over 4 bags with E = 17 -> 50 %.
    assert (runs["LB_0001"]["raw_bags"], runs["LB_0001"]["raw_bytes"]) == (4, 40)
    assert runs["LB_0001"]["coverage_pct"] == pytest.approx(50.0)
    assert runs["LB_0002"]["timestamp"] == "2025-08-01T08:00:21Z"
    assert runs["LB_0002"]["coverage_pct"] == 0.0 and runs["LB_0002"]["raw_sync"] == "cloud_only"


def test_runs_filters_and_expected_samples(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "runs", "--lbid", "LB_0001", "-E", "8.5", "--json")
    assert code == 0
    (only,) = json.loads(out)
    assert only["coverage_pct"] == pytest.approx(100.0)  # 34 / (4 * 8.5)


def test_coverage_json_and_text(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "coverage", "--twid", "TW_1", "--json")
    assert code == 0
    doc = json.loads(out)
    # 34 labels / (5 bags * 17) = 40 %.
    assert doc["statistics"]["overall_coverage_pct"] == pytest.approx(40.0)
    assert [b["lbid"] for b in doc["laser_boxes"]] == ["LB_0001", "LB_0002"]
    code, out, _ = run_cli(capsys, "--config", str(toml), "coverage")
    assert code == 0 and "Overall coverage 40.0 %" in out


def test_anomalies_and_inventory_info(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "anomalies", "--json")
    assert code == 0
    (anomaly,) = json.loads(out)
    assert anomaly["key"] == "acme/readme.md" and "wrong depth" in anomaly["reason"]
    code, out, _ = run_cli(capsys, "--config", str(toml), "inventory", "info", "--json")
    info = json.loads(out)
    assert (info["runs"], info["objects"], info["anomalies"]) == (2, 73, 1)


def test_inventory_info_of_an_unreadable_cache_says_so(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cache that could not be read was reported as "No inventory cache at PATH" while the file was there
    (hostile review)."""
    assert run_cli(capsys, "--config", str(toml), "inventory", "refresh")[0] == 0
    cache = Path(json.loads(run_cli(capsys, "--config", str(toml), "inventory", "info", "--json")[1])["path"])
    cache.write_bytes(b"PAR1 this is not parquet")
    code, out, err = run_cli(capsys, "--config", str(toml), "inventory", "info")
    assert code == 0 and "unreadable" in err
    assert out.strip() == (f"The inventory cache at {cache} cannot be used. Run `runtool inventory refresh` to build "
                           "it again.")


def test_bad_filter_exits_2(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--config", str(toml), "runs", "--cid", "../etc")
    assert code == 2 and "invalid filter" in err
    code, _, err = run_cli(capsys, "--config", str(toml), "coverage", "-E", "0")
    assert code == 2 and "--expected-samples-per-bag must be a finite number above 0" in err


def test_bad_config_exits_2_naming_the_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[buckets]\nraw = "Not A Bucket"\n')
    code, _, err = run_cli(capsys, "--config", str(bad), "runs")
    assert code == 2 and "raw_bucket" in err


def test_missing_bucket_exits_1_naming_it(fresh_config: RuntoolConfig, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    toml = write_toml(fresh_config.with_overrides(raw_bucket="absent-raw-bucket"), tmp_path / "r.toml")
    code, _, err = run_cli(capsys, "--config", str(toml), "inventory", "refresh")
    assert code == 1 and "absent-raw-bucket" in err and "not found" in err


def test_installed_entry_point_runs(toml: Path) -> None:
    """The console script itself (not just main()) works and prints JSON."""
    runtool = Path(sys.executable).with_name("runtool")
    result = subprocess.run([str(runtool), "--config", str(toml), "runs", "--json"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "RUNTOOL_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


def test_status_shows_the_sync_table(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "status", "--json")
    assert code == 0
    rows = {r["lbid"]: r for r in json.loads(out)}
    assert (rows["LB_0001"]["raw_sync"], rows["LB_0001"]["local_bags"], rows["LB_0001"]["raw_bags"]) == (
        "cloud_only", 0, 4)
    code, out, _ = run_cli(capsys, "--config", str(toml), "status", "--lbid", "LB_0002")
    assert code == 0 and "not downloaded" in out and "LB_0001" not in out


@pytest.mark.parametrize("command", [["download"], ["extract"], ["analyze"], ["report"], ["ml", "download"],
                                     ["ml", "upload"], ["raw", "upload"]])
def test_unknown_or_bad_coord_exits_2(command: list[str], toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = "acme/north/field_7/TW_1/LB_0042/2025_08_01T08:00:00Z"
    code, _, err = run_cli(capsys, "--config", str(toml), *command, unknown)
    assert code == 2 and "unknown run" in err
    code, _, err = run_cli(capsys, "--config", str(toml), *command, "acme/north/../TW_1/LB_0001/x")
    assert code == 2 and "error" in err
