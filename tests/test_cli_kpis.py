"""`runtool kpis` and the selection form of `runtool analyze`, on extraction outputs written here and empty buckets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.models import RunCoordinate
from runtool.storage import processed_dir
from tests.conftest import write_toml
from tests.services.test_analytics import write_extraction

BOX = "acme/north/field_7/TW_1/LB_0001"
RUNS = [RunCoordinate.parse(f"{BOX}/2025_08_{day}T08:00:00Z") for day in (25, 26, 27)]


@pytest.fixture
def toml(fresh_config: RuntoolConfig, tmp_path: Path) -> Path:
    for coord in RUNS:
        write_extraction(processed_dir(fresh_config.processed_root, coord))
    return write_toml(fresh_config, tmp_path / "runtool.toml")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_kpis_json_rows_carry_the_kpis_of_analyze_json(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", str(RUNS[0]), "--json")
    assert code == 1  # the extraction reports a failed bag, so analyze says so by its exit code
    analysed = json.loads(out)

    code, out, err = run_cli(capsys, "--config", str(toml), "kpis", "--lbid", "LB_0001", "--json")

    assert code == 0
    (row,) = json.loads(out)
    assert [row[level] for level in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp")] == \
        RUNS[0].to_path_str().split("/")
    assert {name: row[name] for name in analysed["kpis"]} == analysed["kpis"]
    assert row["regressed"] is False and row["regressions"] == []
    assert err.strip().splitlines()[-1] == \
        "2 runs not analysed yet; run `runtool analyze --lbid LB_0001 --yes`"


def test_kpis_human_table_and_an_empty_selection(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "kpis", "--until", "2025-08-24")
    assert code == 0 and out.splitlines() == ["No analysed runs in the selection."]

    run_cli(capsys, "--config", str(toml), "analyze", str(RUNS[1]))
    code, out, _ = run_cli(capsys, "--config", str(toml), "kpis", "--since", "2025-08-26")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["LB", "run", "det"]
    assert lines[2].split()[:2] == ["LB_0001", RUNS[1].timestamp]
    assert lines[-1] == "1 run not analysed yet; run `runtool analyze --since 2025-08-26 --yes`"


def test_the_hint_without_filters_is_a_command_analyze_takes(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(capsys, "--config", str(toml), "analyze", str(RUNS[0]))
    code, out, _ = run_cli(capsys, "--config", str(toml), "kpis")
    assert code == 0
    hint = out.splitlines()[-1]
    assert hint == "2 runs not analysed yet; run `runtool analyze --since 2025-08-26 --yes`"
    command = hint.split("`")[1].split()[1:]
    code, out, _ = run_cli(capsys, "--config", str(toml), *command[:-1], "--dry-run")
    assert code == 0 and out.splitlines()[0] == "Bring 2 runs up to date (2 to analyze)"
    code, out, err = run_cli(capsys, "--config", str(toml), *command)
    assert code == 0, err
    code, out, err = run_cli(capsys, "--config", str(toml), "kpis", "--json")
    assert len(json.loads(out)) == 3 and "not analysed" not in err


@pytest.mark.parametrize("bad", ['"abc"', "[1, 2]", "Infinity", "NaN"])
def test_a_cache_with_a_kpi_that_is_not_a_number_is_not_analysed_and_analyze_repairs_it(
    toml: Path, fresh_config: RuntoolConfig, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    bad: str,
) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", "--lbid", "LB_0001", "--yes")
    assert code == 0
    marker = processed_dir(fresh_config.processed_root, RUNS[1]) / "analysis" / "kpis.json"
    document = json.loads(marker.read_text(encoding="utf-8"))
    good = json.dumps(document["kpis"]["detection_latency_p95_ms"])
    text = marker.read_text(encoding="utf-8")
    marker.write_text(text.replace(f'"detection_latency_p95_ms": {good}', f'"detection_latency_p95_ms": {bad}'),
                      encoding="utf-8")

    for argv in (["kpis"], ["kpis", "--json"]):
        code, out, err = run_cli(capsys, "--config", str(toml), *argv)
        assert code == 0, err
        assert "Traceback" not in out + err and "Infinity" not in out and "NaN" not in out
        assert "1 run not analysed yet; run `runtool analyze --since 2025-08-26 --yes`" in out + err
    rows = json.loads(out)
    assert [row["timestamp"] for row in rows] == [RUNS[0].timestamp, RUNS[2].timestamp]
    assert f"The analysis cache of run {RUNS[1]} is unreadable (" in caplog.text + err

    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", "--lbid", "LB_0001", "--yes")
    assert code == 0 and f"  {RUNS[1]}: analyze" in out.splitlines()
    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", str(RUNS[1]))
    assert out.splitlines()[0] == f"Analysis of {RUNS[1]} (cached)"
    code, out, err = run_cli(capsys, "--config", str(toml), "kpis", "--json")
    assert len(json.loads(out)) == 3 and "not analysed" not in err


def test_analyze_a_selection_brings_each_run_up_to_date(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", "--lbid", "LB_0001", "--dry-run")
    assert code == 0 and out.splitlines()[0] == "Bring 3 runs up to date (3 to analyze)"

    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", "--lbid", "LB_0001", "--yes", "--json")

    assert code == 0
    result = json.loads(out)
    assert [o["status"] for o in result["outcomes"]] == ["ok", "ok", "ok"]
    assert [o["update"]["steps"] for o in result["outcomes"]] == [["analyze"]] * 3
    code, out, err = run_cli(capsys, "--config", str(toml), "kpis", "--json")
    assert len(json.loads(out)) == 3 and "not analysed" not in err
    # Analysed: the preview counts no work, and running it again runs nothing (--force analyses again).
    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", "--lbid", "LB_0001", "--dry-run")
    assert code == 0 and out.splitlines() == ["Nothing to do; 3 runs up to date already"]
    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", "--lbid", "LB_0001", "--yes", "--json")
    assert code == 0 and json.loads(out)["outcomes"] == []
    code, out, _ = run_cli(capsys, "--config", str(toml), "analyze", "--lbid", "LB_0001", "--dry-run", "--force")
    assert code == 0 and out.splitlines()[0] == "Bring 3 runs up to date (3 to analyze)"


def test_analyze_without_a_selection_or_with_an_empty_date_range_is_bad_input(
    toml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "--config", str(toml), "analyze", "--yes")[0] == 2
    code, _, err = run_cli(capsys, "--config", str(toml), "kpis", "--since", "2025-08-27", "--until", "2025-08-26")
    assert code == 2 and "--since 2025-08-27 is after --until 2025-08-26" in err
