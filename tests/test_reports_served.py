"""Reports served by the app: the listing service, and ``runtool/reports/`` on a real `runtool serve`."""

from __future__ import annotations

import html
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtool.models import Filters, RunCoordinate
from runtool.serve.app import REPORT_CSP, _index_page
from runtool.services.reports import REPORT_DIR, find_report, list_reports, report_stem
from runtool.ui.query import read_selection, run_url
from tests.browser.conftest import ServeProcess

OLD = RunCoordinate("client_001", "region_a", "field_1", "TW_001", "LB_0001", "2025_08_25T08:59:38Z")
NEW = RunCoordinate("client_001", "region_a", "field_1", "TW_001", "LB_0002", "2025-09-01T10:00:00Z")
OTHER = RunCoordinate("client_002", "region_b", "field_2", "TW_001", "LB_0001", "2025_09_02T11:00:00Z")


def write_report(root: Path, coord: RunCoordinate, age_s: float = 0.0) -> Path:
    """A small report page for ``coord`` where `runtool report` writes it, rendered ``age_s`` seconds ago."""
    folder = root.joinpath(*coord.to_path_tuple(), REPORT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report_stem(coord)}.html"
    path.write_text(f"<!doctype html><html><head><title>Run report {coord}</title></head>"
                    f"<body><h1>Run report</h1><p>{coord}</p></body></html>", encoding="utf-8")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def relative(coord: RunCoordinate) -> str:
    return f"{coord.to_path_str()}/{REPORT_DIR}/{report_stem(coord)}.html"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with three runs' reports, a secret beside the processed root and traps inside it."""
    root = tmp_path_factory.mktemp("reports-served")
    processed = root / "processed"
    write_report(processed, OLD, age_s=3600)
    write_report(processed, NEW, age_s=60)
    write_report(processed, OTHER, age_s=7200)
    (root / "secret.html").write_text("<title>secret</title>", encoding="utf-8")
    folder = processed.joinpath(*NEW.to_path_tuple(), REPORT_DIR)
    (folder / "escape.html").symlink_to(root / "secret.html")
    (folder / "notes.txt").write_text("not a report", encoding="utf-8")
    (folder / f"{report_stem(NEW)}.ipynb").write_text("{}", encoding="utf-8")
    (folder / ".hidden.html").write_text("<title>hidden</title>", encoding="utf-8")
    outside = root / "elsewhere"
    outside.mkdir()
    (outside / "leak.html").write_text("<title>leak</title>", encoding="utf-8")
    linked = processed.joinpath(*OTHER.to_path_tuple()[:5], "2025_09_03T11:00:00Z")
    linked.mkdir(parents=True)
    (linked / REPORT_DIR).symlink_to(outside)
    return root


# -- the service -------------------------------------------------------------------------------------


def test_list_reports_newest_first_per_run_and_per_selection(data: Path) -> None:
    processed = data / "processed"
    everything = list_reports(processed)
    assert [r.coordinate for r in everything] == [NEW, OLD, OTHER]
    assert everything[0].relative == relative(NEW) and everything[0].path.name == f"{report_stem(NEW)}.html"
    assert everything[0].modified > everything[1].modified and everything[0].size > 0
    assert [r.coordinate for r in list_reports(processed, OLD)] == [OLD]
    assert [r.coordinate for r in list_reports(processed, Filters(cid="client_001"))] == [NEW, OLD]
    assert [r.coordinate for r in list_reports(processed, Filters(lbid="LB_0001"))] == [OLD, OTHER]
    assert list_reports(processed, Filters(cid="client_003")) == []
    assert list_reports(data / "missing") == []


def test_the_index_is_paged_and_its_page_links_keep_the_selection(server: ServeProcess, data: Path) -> None:
    status, _, _, body = fetch(f"{server.base}/team/runtool/reports/?page=9")  # past the last: the last
    assert status == 200 and len(re.findall(r"<code>[^<]+</code></a></td>", body)) == 3 and "Page " not in body
    for bad in ("abc", "0", "-1", "1e3", "%C2%B2", "%D9%A1"):  # also '²' and '١': digits to str, not to int
        status, _, _, body = fetch(f"{server.base}/team/runtool/reports/?page={bad}")
        assert status == 400 and "not a page number" in body, (bad, body)
    reports = list_reports(data / "processed", Filters())
    many = [reports[i % len(reports)] for i in range(7)]
    first, last = _index_page(Filters(cid="client_001"), many, 1, {"cid": "client_001"}, per_page=3), \
        _index_page(Filters(), many, 3, {}, per_page=3)
    assert first.count("<tr><td>") == 3 and "Page 1 of 3 (reports 1–3)" in first
    # Each run opens on its page (the pages at <base>voila/render/, this list at <base>runtool/reports/).
    assert f'<a href="../../voila/render/{html.escape(run_url(many[0].coordinate), quote=True)}"' in first
    assert '<a href="../../">' in first
    assert '<a href="?cid=client_001&amp;page=2">older →</a>' in first and "newer" not in first
    assert last.count("<tr><td>") == 1 and "Page 3 of 3 (reports 7–7)" in last and "older" not in last
    assert '<a href="?page=2">← newer</a>' in last


@pytest.mark.parametrize("path", [
    "", "/etc/passwd", "../secret.html", f"{OLD.to_path_str()}/{REPORT_DIR}/../../../../../../../secret.html",
    f"{NEW.to_path_str()}/{REPORT_DIR}/escape.html", f"{NEW.to_path_str()}/{REPORT_DIR}/notes.txt",
    f"{NEW.to_path_str()}/{REPORT_DIR}/{report_stem(NEW)}.ipynb", f"{NEW.to_path_str()}/{REPORT_DIR}/.hidden.html",
    "client_001/region_a/field_1/TW_001/LB_0001/not-a-time/report/x.html",
    f"{OTHER.to_path_str()[:-len(OTHER.timestamp)]}2025_09_03T11:00:00Z/{REPORT_DIR}/leak.html",
    relative(OLD).replace("/", "\\"), relative(OLD) + "\0", relative(OLD).replace("/report/", "//report/"),
])
def test_find_report_refuses_anything_but_a_report_inside_the_root(data: Path, path: str) -> None:
    assert find_report(data / "processed", path) is None


def test_find_report_finds_a_listed_report(data: Path) -> None:
    assert find_report(data / "processed", relative(OLD)) == (data / "processed" / relative(OLD)).resolve()


# -- the server --------------------------------------------------------------------------------------


def fetch(url: str) -> tuple[int, str, dict[str, str], str]:
    """Status, final URL, headers and body of a GET (redirects followed; an error status is returned)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status), response.url, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, url, dict(exc.headers), exc.read().decode(errors="replace")


def start(data: Path, *options: str, ip: str = "127.0.0.1") -> ServeProcess:
    return ServeProcess(None, "--no-preheat", *options, ip=ip, log=data / f"serve-{ip}-{len(options)}.log",
                        env={"RUNTOOL_DATA_DIR": str(data), "RUNTOOL_PROCESSED_ROOT": str(data / "processed")})


@pytest.fixture(scope="module")
def server(data: Path) -> Iterator[ServeProcess]:
    """A loopback server (no token) under a base URL."""
    process = start(data, "--base-url", "/team/")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def guarded(data: Path) -> Iterator[ServeProcess]:
    """A read-only server on a network address: it prints a token and requires it."""
    process = start(data, "--read-only", ip="127.0.0.2")
    yield process
    process.stop()


def test_the_index_lists_the_reports_newest_first_with_links_that_open(server: ServeProcess) -> None:
    status, _, headers, body = fetch(f"{server.base}/team/runtool/reports")
    assert status == 200 and headers["Content-Type"].startswith("text/html"), (status, body)
    assert headers["X-Content-Type-Options"] == "nosniff"
    coords = re.findall(r"<code>([^<]+)</code></a></td>", body)
    assert coords == [str(NEW), str(OLD), str(OTHER)], body
    assert "2025-08-25 08:59" in body and "3 reports" in body
    links = re.findall(r'<td><a href="([^"]+)">[^<]+</a></td>', body)  # the reports (a run's link holds <code>)
    assert len(links) == 3 and not any(link.startswith(("/", "http")) for link in links)
    status, url, headers, page = fetch(f"{server.base}/team/runtool/reports/{links[0]}")
    assert status == 200, (url, page)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == REPORT_CSP and headers["X-Content-Type-Options"] == "nosniff"
    assert f"<title>Run report {NEW}</title>" in page


def test_the_index_takes_the_pages_selection(server: ServeProcess) -> None:
    status, _, _, body = fetch(f"{server.base}/team/runtool/reports/?cid=client_001&lbid=LB_0001")
    assert status == 200 and re.findall(r"<code>([^<]+)</code></a></td>", body) == [str(OLD)]
    assert "1 report under client_001" in body
    # A part given twice: the first value wins, as on the pages (read_selection) and in the run search.
    twice = "cid=client_001&lbid=LB_0001&lbid=LB_0002"
    status, _, _, body = fetch(f"{server.base}/team/runtool/reports/?{twice}")
    assert status == 200 and re.findall(r"<code>([^<]+)</code></a></td>", body) == [str(OLD)]
    assert read_selection(twice).filters == Filters(cid="client_001", lbid="LB_0001")
    status, _, _, body = fetch(f"{server.base}/team/runtool/reports/?cid=..")
    assert status == 400 and "not a selection" in body and "all reports" in body, body  # a page, not a blank
    # A percent-escape that is not UTF-8 text is refused, as the pages refuse it (it was read as a laser box '�').
    status, _, _, body = fetch(f"{server.base}/team/runtool/reports/?cid=client_001&lbid=%ff")
    assert status == 400 and "not UTF-8 text" in body and "\ufffd" not in body, body


@pytest.mark.parametrize("path", [
    "..%2f..%2fsecret.html", "%2e%2e/%2e%2e/secret.html", "..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/etc/passwd", "%2Fetc%2Fpasswd", f"{NEW.to_path_str()}/{REPORT_DIR}/escape.html",
    f"{OTHER.to_path_str()[:-len(OTHER.timestamp)]}2025_09_03T11:00:00Z/{REPORT_DIR}/leak.html",
    f"{NEW.to_path_str()}/{REPORT_DIR}/{report_stem(NEW)}.ipynb",
    f"{OLD.to_path_str()}/{REPORT_DIR}/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fsecret.html",
])
def test_anything_but_a_report_is_not_found(server: ServeProcess, path: str) -> None:
    status, _, _, body = fetch(f"{server.base}/team/runtool/reports/{path}")
    assert status == 404 and "Not Found" in body, body
    assert "secret" not in body and "leak" not in body
    assert "Uncaught exception" not in server.log_text()  # no traceback in the log for a bad address


def test_a_token_server_requires_the_token_for_reports_and_a_read_only_one_serves_them(
    guarded: ServeProcess,
) -> None:
    assert guarded.token
    report = f"{guarded.base}/runtool/reports/{relative(OLD)}"
    status, landed, _, body = fetch(report)
    assert status in (401, 403) or "/login" in landed, (status, landed)
    assert "Run report" not in body
    status, landed, _, body = fetch(f"{guarded.base}/runtool/reports/?token=wrong")
    assert status in (401, 403) or "/login" in landed, (status, landed)
    status, _, _, body = fetch(f"{report}?token={guarded.token}")
    assert status == 200 and f"<title>Run report {OLD}</title>" in body
    status, _, _, body = fetch(f"{guarded.base}/runtool/reports/?token={guarded.token}")
    assert status == 200 and str(OLD) in body
