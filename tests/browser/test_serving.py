"""The served app in a real chromium: kernels stop when viewers leave, the cap, dead kernels, preheated pages.

Each test starts its own ``runtool serve`` (options of its own: short culling, one preheated kernel per page or
none) on the demo fleet, and counts the kernels as Voila's ipykernel child processes. Every browser context
comes from the ``contexts`` fixture, so any request that leaves 127.0.0.1 fails the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import psutil
import pytest
from google.cloud import storage
from playwright.sync_api import expect

from runtool.formatting import format_time
from runtool.models import LEVELS, Filters
from runtool.serve import PAGES
from runtool.services import ServiceContainer
from runtool.ui.query import selection_query
from tests.browser.conftest import RUNTOOL, Contexts, ServeProcess, VoilaServer, offsite, poll, screenshot
from tests.conftest import SeededFleet, write_toml
from tests.ui.test_per_run_page import pick_run

pytestmark = pytest.mark.browser

COVERAGE, PER_RUN, DOWNLOAD_MANAGER = PAGES[:3]
BUSY_TEXT = "This runtool server is busy"
WAIT_S = 90.0
"""How long a page or a kernel change may take on the shared, loaded machine (a bound, not a speed)."""


@pytest.fixture
def serve(config_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Starts ``runtool serve OPTIONS`` on the module's config; stops every server, failing if one leaked."""
    started: list[ServeProcess] = []

    def make(*options: str, config: Path = config_path) -> ServeProcess:
        started.append(VoilaServer(config, False, *options))
        return started[-1]

    yield make
    survivors = [process for server in started for process in server.stop()]
    assert not survivors, f"runtool serve left processes behind: {survivors}"


def open_page(tab: Any, server: ServeProcess, page: str = COVERAGE, query: str = "") -> str:
    """Opens ``page`` in ``tab`` and waits for its content; returns the page's kernel id."""
    tab.goto(server.url(page, query))
    css = {COVERAGE: ".rt-page-coverage", PER_RUN: ".rt-page-per-run"}.get(page, ".rt-page")
    tab.wait_for_selector(css, state="visible", timeout=WAIT_S * 1000)
    return kernel_in(tab.content())


def kernel_in(document: str) -> str:
    """The id of the kernel a page's HTML names (its ``jupyter-config-data``)."""
    match = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', document)
    assert match, "no kernelId in the page"
    return match.group(1)


def gone(kernel: str) -> Callable[[dict[str, psutil.Process]], bool]:
    return lambda kernels: kernel not in kernels


def rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=180) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def waiting_pool(server: ServeProcess, size: int) -> dict[str, psutil.Process]:
    """The preheated kernels once ``size`` of them wait for a viewer (each holds its request-info socket)."""

    def waiting(kernels: dict[str, psutil.Process]) -> bool:
        def connected(kernel: psutil.Process) -> bool:
            try:
                return any(c.raddr and c.raddr.port == server.port for c in kernel.net_connections("tcp"))
            except psutil.NoSuchProcess:
                return False

        return len(kernels) == size and all(connected(k) for k in kernels.values())

    return server.wait_kernels(waiting, 240, f"{size} preheated kernels waiting for their viewers")


# -- 1. a page's kernel stops when its viewer leaves -----------------------------------------------------


@pytest.mark.parametrize(
    ("how", "cycles", "cull"),
    [("tab closed", 5, "600"), ("browser gone", 2, "10")],
    ids=["tab-closed-beacon", "browser-gone-culled"],
)
def test_opening_and_closing_pages_leaves_no_kernel(contexts: Contexts, serve: Callable[..., ServeProcess],
                                                    record_property: Any, how: str, cycles: int, cull: str) -> None:
    """Tab closed: the page's leave beacon shuts the kernel down (culling is 10 min away, so only the beacon
    can pass this). Browser gone: no beacon; the disconnected kernel is culled (--cull-idle 10)."""
    server = serve("--no-preheat", "--cull-idle", cull)
    rss = [rss_mb(server.voila)]
    for cycle in range(cycles):
        context = contexts.new()
        tab = context.new_page()
        kernel = open_page(tab, server)
        assert kernel in server.kernels()
        if how == "tab closed":
            tab.close(run_before_unload=True)
        else:
            context.close()
        server.wait_kernels(gone(kernel), 30 if how == "tab closed" else WAIT_S,
                            f"cycle {cycle}: the kernel of a page whose {how} stopped")
        rss.append(rss_mb(server.voila))
    assert server.kernels() == {}
    log = server.log_text()
    assert "'_xsrf' argument missing" not in log
    # A tab closed as its page draws: Jupyter interrupted the kernel before stopping it, and ipykernel logged an
    # ERROR for it (19 of 40 such closes in a hostile review).
    assert "KeyboardInterrupt caught in kernel" not in log and "ERROR" not in log, log[-3000:]
    if how == "tab closed":
        assert "Culling" not in log.split("Culling kernels with idle durations")[-1], "culled, not shut down"
    report = f"{how}: Voila RSS {' → '.join(f'{mb:.0f}' for mb in rss)} MB over {cycles} pages"
    print(report)
    record_property("voila_rss_mb", report)


def test_a_closed_tab_stops_its_preheated_kernel_and_the_pool_refills(
    contexts: Contexts, serve: Callable[..., ServeProcess]
) -> None:
    """With preheating (the default), closing the tab stops the page's kernel by the leave beacon, not by the
    culling (10 min away); the pool has a new kernel for the next viewer. Counting kernels alone would hide a
    leak here: the refill replaces the taken kernel, so the kernel's own id is followed."""
    server = serve("--pool-size", "1", "--cull-idle", "600")
    waiting_pool(server, len(PAGES))
    for page in (COVERAGE, PAGES[3]):
        tab = contexts.new_page()
        kernel = open_page(tab, server, page)
        tab.close(run_before_unload=True)
        server.wait_kernels(gone(kernel), 30, f"the preheated kernel of a closed {page} tab stopped")
        assert f"Kernel shutdown: {kernel}" in server.log_text()
    waiting_pool(server, len(PAGES))


# -- 4. the kernel cap -----------------------------------------------------------------------------------------


def test_past_the_cap_a_viewer_gets_busy_and_after_a_tab_closes_a_page(
    contexts: Contexts, serve: Callable[..., ServeProcess]
) -> None:
    server = serve("--no-preheat", "--max-kernels", "2", "--cull-idle", "600")
    tabs = [contexts.new_page() for _ in range(2)]
    held = {open_page(tab, server) for tab in tabs}
    assert set(server.kernels()) == held

    status, body = http_status(server.url(COVERAGE))
    assert status == 503 and BUSY_TEXT in body
    third = contexts.new_page()
    third.goto(server.url(COVERAGE))
    expect(third.locator("h1")).to_have_text(BUSY_TEXT)
    expect(third.locator("body")).to_contain_text("2 pages are open")
    assert set(server.kernels()) == held, "a viewer turned away started a kernel"
    screenshot(third, "serve-busy")

    tabs[0].close(run_before_unload=True)  # a viewer leaves: its kernel stops, so a place is free
    poll(lambda: len(server.kernels()) < 2, WAIT_S, what="the leaving viewer's kernel stopped")
    # Its place is free as soon as its kernel is on the way out (the busy page's "Try again").
    third.goto(server.url(COVERAGE))
    third.wait_for_selector(".rt-page-coverage", state="visible", timeout=WAIT_S * 1000)
    expect(third.locator(".rt-kpi").first).to_be_visible(timeout=WAIT_S * 1000)
    assert len(server.kernels()) == 2


# -- 5. a kernel that dies -------------------------------------------------------------------------------------


def test_a_killed_page_kernel_shows_the_session_notice(contexts: Contexts, serve: Callable[..., ServeProcess]) -> None:
    server = serve("--no-preheat", "--cull-idle", "600")
    tab = contexts.new_page()
    kernel = open_page(tab, server)
    expect(tab.locator(".rt-kpi").first).to_be_visible(timeout=WAIT_S * 1000)
    expect(tab.locator("#rt-session-notice")).to_have_count(0)
    server.kernels()[kernel].kill()  # SIGKILL: the kernel dies without a word
    notice = tab.locator("#rt-session-notice")
    expect(notice).to_be_visible(timeout=WAIT_S * 1000)
    expect(notice).to_contain_text("Reload the page")
    screenshot(tab, "serve-kernel-died")
    # Above the header, not over it (it was drawn fixed over the page's title and links).
    box, header = notice.bounding_box(), tab.locator(".rt-header").first.bounding_box()
    assert box is not None and header is not None and box["y"] + box["height"] <= header["y"] + 0.5, (box, header)
    # Not restarted (an empty kernel would hold a place under the cap until the idle culling): dropped at once.
    poll(lambda: kernel not in server.kernels(), WAIT_S, what="the dead viewer's kernel stopped, not restarted")
    log = server.log_text()
    assert "it is not restarted" in log
    assert "restarting kernel" not in log, log[-3000:]
    # Its connection file and sockets went with it.
    assert not list(Path(tempfile.gettempdir()).glob(f"*/kernel-{kernel}*"))


def test_a_killed_preheated_kernel_is_replaced_and_its_page_still_opens(
    contexts: Contexts, serve: Callable[..., ServeProcess]
) -> None:
    server = serve("--pool-size", "1", "--cull-idle", "600")
    waiting_pool(server, len(PAGES))
    # Taking the coverage page's preheated kernel tells which kernel refills its pool: the one started next.
    first = contexts.new_page()
    taken = open_page(first, server)
    first.close(run_before_unload=True)
    pool = server.wait_kernels(lambda k: taken not in k and len(k) == len(PAGES), WAIT_S, "the pool refilled")
    log = server.log_text()
    assert f"Using pre-heated kernel: {taken}" in log
    started = re.search(r"Kernel started: ([0-9a-f-]{36})", log.split(f"Using pre-heated kernel: {taken}", 1)[1])
    assert started and started.group(1) in pool, log[-3000:]
    refill = [started.group(1)]
    victim = pool[refill[0]]
    waiting_pool(server, len(PAGES))

    victim.kill()
    # Back to one waiting kernel per page, and not the killed process (a restarted kernel of the same id
    # would be a new process with no page in it).
    replaced = waiting_pool(server, len(PAGES))
    assert victim.pid not in {p.pid for p in replaced.values()}
    tab = contexts.new_page()
    kernel = open_page(tab, server)
    expect(tab.locator(".rt-kpi").first).to_be_visible(timeout=WAIT_S * 1000)
    assert f"Using pre-heated kernel: {kernel} for {COVERAGE}" in server.log_text()
    assert kernel != refill[0], "the page was served by the killed kernel's id"
    assert "restarting kernel" not in server.log_text(), "Jupyter restarted the dead kernel: start-up wasted"


# -- 7. preheated pages open the selection of their link, with a current inventory -------------------------


def test_a_preheated_page_opens_the_selection_of_its_query(
    contexts: Contexts, serve: Callable[..., ServeProcess], services: ServiceContainer
) -> None:
    coord = pick_run(services, bags=2)
    runs = services.data_state.all_runs()
    start = runs[runs["timestamp"] == coord.timestamp]["start_time"].iloc[0].to_pydatetime()
    server = serve("--pool-size", "1", "--cull-idle", "600")
    waiting_pool(server, len(PAGES))

    tab = contexts.new_page()
    query = selection_query(Filters(cid=coord.cid, regionid=coord.regionid))
    kernel = open_page(tab, server, COVERAGE, query)
    expect(tab.locator(".rt-filter-cid select")).to_have_value(coord.cid, timeout=WAIT_S * 1000)
    expect(tab.locator(".rt-filter-regionid select")).to_have_value(coord.regionid)
    expect(tab.locator(".rt-filter-fieldid select")).to_have_value("All")
    expect(tab.locator(".rt-kpi").first).to_be_visible()
    assert f"Using pre-heated kernel: {kernel} for {COVERAGE}" in server.log_text()

    tab = contexts.new_page()
    kernel = open_page(tab, server, PER_RUN, selection_query(coord.to_filters()))
    expect(tab.locator(".rt-view-run")).to_be_visible(timeout=WAIT_S * 1000)
    for level in LEVELS:
        expect(tab.locator(f".rt-filter-{level} select")).to_have_value(getattr(coord, level))
    expect(tab.locator(".rt-run-picker select option:checked")).to_have_text(format_time(start))
    assert f"Using pre-heated kernel: {kernel} for {PER_RUN}" in server.log_text()
    screenshot(tab, "serve-preheated-per-run-link")


@pytest.fixture
def own_buckets(demo_fleet: SeededFleet, tmp_path: Path) -> tuple[Path, storage.Client, str, str]:
    """A config on two new buckets holding one demo run (copied), inventory scanned; and the run's raw prefix."""
    client = demo_fleet.client
    suffix = tmp_path.name.replace("_", "-").lower()[-20:]
    raw = client.create_bucket(f"serving-raw-{suffix}")
    client.create_bucket(f"serving-ml-{suffix}")
    source = client.bucket(demo_fleet.config.raw_bucket)
    first = next(iter(client.list_blobs(source, max_results=1)))
    prefix = "/".join(first.name.split("/")[:6]) + "/"
    for blob in client.list_blobs(source, prefix=prefix):
        source.copy_blob(blob, raw, blob.name)
    config = demo_fleet.config.with_overrides(raw_bucket=raw.name, ml_bucket=f"serving-ml-{suffix}",
                                              data_dir=tmp_path / "data")
    path = write_toml(config, tmp_path / "runtool.toml")
    ServiceContainer.from_environment(path).inventory.refresh()
    return path, client, raw.name, prefix


def test_a_preheated_page_shows_a_refresh_made_while_it_waited(
    contexts: Contexts, serve: Callable[..., ServeProcess], own_buckets: tuple[Path, storage.Client, str, str]
) -> None:
    config, client, raw_name, prefix = own_buckets
    cid = prefix.split("/")[0]
    server = serve("--pool-size", "1", "--cull-idle", "600", config=config)
    waiting_pool(server, len(PAGES))  # the coverage page's kernel has read the inventory and waits

    # Meanwhile a new client's run lands in the bucket and the CLI refreshes the inventory.
    raw = client.bucket(raw_name)
    for blob in client.list_blobs(raw, prefix=prefix):
        raw.copy_blob(blob, raw, "zz_new_client/" + blob.name.split("/", 1)[1])
    refresh = subprocess.run([RUNTOOL, "--config", str(config), "inventory", "refresh"], capture_output=True,
                             text=True, timeout=300)
    assert refresh.returncode == 0, refresh

    tab = contexts.new_page()
    kernel = open_page(tab, server)
    assert f"Using pre-heated kernel: {kernel} for {COVERAGE}" in server.log_text()
    expect(tab.locator(".rt-filter-cid select option")).to_have_text(["All", cid, "zz_new_client"],
                                                                      timeout=WAIT_S * 1000)


# -- 8. no request leaves the host ---------------------------------------------------------------------------


def test_the_request_guard_sees_a_request_off_the_host(browser: Any, voila: VoilaServer) -> None:
    """The ``contexts`` fixture's recording works: a page's fetch to another host is caught, and a page itself
    asks for nothing outside 127.0.0.1."""
    assert [offsite(u) for u in ("http://127.0.0.1:8866/x", "ws://127.0.0.1:1/api", "data:image/png;base64,",
                                 "blob:http://127.0.0.1/1", "about:blank")] == [False] * 5
    assert all(offsite(u) for u in ("https://cdn.jsdelivr.net/x.css", "http://localhost:8866/", "ws://10.0.0.1/"))
    guard = Contexts(browser)
    try:
        tab = guard.new_page()
        open_page(tab, voila)
        expect(tab.locator(".rt-kpi").first).to_be_visible(timeout=WAIT_S * 1000)
        assert guard.requested and not guard.offsite, guard.offsite
        assert any(url.startswith("ws://127.0.0.1") for url in guard.requested), "websockets are recorded too"
        tab.evaluate("() => fetch('http://offsite.invalid/probe').catch(() => null)")
        poll(lambda: guard.offsite, 30, what="the offsite fetch recorded")
        assert guard.offsite == ["http://offsite.invalid/probe"]
    finally:
        guard.close()


# -- 8. progressive pages: the browser's own message brings the charts ---------------------------------------


def test_the_browser_tells_a_page_it_has_drawn_and_the_charts_follow(contexts: Contexts, config_path: Path) -> None:
    """With the fallback clock out of reach, only the page's DrawnSignal view can bring the heavy parts."""
    server = VoilaServer(config_path, False, "--pool-size", "1", env={"RUNTOOL_DRAWN_FALLBACK_S": "3600"})
    try:
        for page, heavy in ((COVERAGE, ".rt-view-aggregated .bqplot"), (DOWNLOAD_MANAGER, ".rt-inventory-grid")):
            tab = contexts.new_page()
            open_page(tab, server, page)
            expect(tab.locator(".rt-kpi-value").first).to_be_visible(timeout=WAIT_S * 1000)
            expect(tab.locator(heavy).first).to_be_visible(timeout=WAIT_S * 1000)
            expect(tab.locator(".rt-drawing")).to_have_count(0)
            tab.close()
    finally:
        survivors = server.stop()
    assert not survivors, f"runtool serve left processes behind: {survivors}"


def test_a_page_left_before_it_loaded_frees_its_kernel_long_before_the_culling(
    contexts: Contexts, serve: Callable[..., ServeProcess]
) -> None:
    """A viewer who closes the tab (or reloads) while the page is still coming sends no leave beacon. Such a
    kernel, never connected to, goes after half of --cull-idle idle (45 s here), not after the culling (90 s; the
    page's drawing fallback keeps it busy for its first 10 s or so)."""
    server = serve("--no-preheat", "--cull-idle", "90")
    tab = contexts.new_page()
    kept = open_page(tab, server)  # a viewer who stays: connected, so never stopped by this rule
    with urllib.request.urlopen(server.url(COVERAGE), timeout=WAIT_S) as response:  # the page, but no browser
        assert response.status == 200
        left = kernel_in(response.read().decode("utf-8"))
    assert left in server.kernels()
    server.wait_kernels(gone(left), 85, "the kernel of a page no browser opened")
    assert "never opened in a browser" in server.log_text()
    assert kept in server.kernels()


# -- 9. a page's first screen comes as static HTML; the live widgets take its place ------------------------


CELL_OUTPUT = re.compile(r'<script type="application/vnd.voila.cell-output\+json">(.*?)</script>', re.DOTALL)


def test_a_page_whose_kernel_died_before_voila_connected_shows_the_session_notice(
    contexts: Contexts, serve: Callable[..., ServeProcess]
) -> None:
    """The kernel dies while the static first screen shows and Voila's scripts still load: Voila asks for the
    kernel (404) and opens no channel, so only the disabled copy stayed, with no word that the page is dead."""
    server = serve("--no-preheat", "--cull-idle", "600")
    tab = contexts.new_page()
    held: list[Any] = []
    # Voila's scripts wait until the kernel is gone.
    tab.route("**/voila/static/voila.js", lambda route: held.append(route))
    tab.goto(server.url(COVERAGE), wait_until="commit")
    expect(tab.locator(".rts-snapshot .rts-kpi-value").first).to_be_visible(timeout=WAIT_S * 1000)
    poll(lambda: held, WAIT_S, what="the page asked for Voila's scripts")
    kernel = kernel_in(tab.content())
    server.kernels()[kernel].kill()  # SIGKILL: the kernel dies without a word
    poll(lambda: f"the kernel {kernel} of a viewer stopped" in server.log_text(), WAIT_S,
         what="the server dropped the dead viewer's kernel")
    held[0].continue_()
    notice = tab.locator("#rt-session-notice")
    # At once: not a minute later, when a channel opened to the dead kernel times out.
    expect(notice).to_be_visible(timeout=20_000)
    expect(notice).to_contain_text("Reload the page")


@pytest.mark.parametrize(
    ("leave", "options"),
    [("header link", ("--pool-size", "1")), ("tab closed", ("--no-preheat",))],
    ids=["header-link-preheated", "tab-closed"],
)
def test_a_page_left_before_voilas_scripts_loaded_stops_its_kernel_at_once(
    contexts: Contexts, serve: Callable[..., ServeProcess], leave: str, options: tuple[str, ...]
) -> None:
    """The first screen shows, and its header links work, a second or more before Voila's scripts set their leave
    beacon: a viewer clicking through those links left a kernel behind per page, and filled the cap (hostile
    review). Culling and the never-opened rule are minutes away here, so only the page's own beacon passes."""
    server = serve(*options, "--cull-idle", "600")
    if "--pool-size" in options:
        waiting_pool(server, len(PAGES))
    tab = contexts.new_page()
    tab.route("**/voila/static/voila.js", lambda route: route.abort())  # Voila's scripts never load
    tab.goto(server.url(COVERAGE))
    expect(tab.locator(".rts-snapshot .rts-kpi-value").first).to_be_visible(timeout=WAIT_S * 1000)
    kernel = kernel_in(tab.content())
    assert kernel in server.kernels()
    if leave == "header link":
        tab.locator(".rts-snapshot .rts-nav a", has_text="Download manager").click()
        tab.wait_for_url(re.compile(re.escape(DOWNLOAD_MANAGER)), timeout=WAIT_S * 1000)
    else:
        tab.close(run_before_unload=True)
    server.wait_kernels(gone(kernel), 30, f"the kernel of a page left by its {leave} before Voila's scripts loaded")
    assert "Culling" not in server.log_text().split("Culling kernels with idle durations")[-1], "culled"


def test_a_page_left_as_voila_gets_its_kernel_stops_it_at_once(
    contexts: Contexts, serve: Callable[..., ServeProcess]
) -> None:
    """A header link clicked before Voila has the kernel's model fires "beforeunload" at once, but the page runs on
    until the next page arrives (seconds when that page's pool is empty): Voila got the model and set its beacon
    meanwhile, after the only "beforeunload" it would see, and runtool's page took Voila's beacon as set. Neither
    went, and the kernel held a place under the cap until it was found never opened (hostile review)."""
    server = serve("--pool-size", "1", "--cull-idle", "600")
    waiting_pool(server, len(PAGES))
    tab = contexts.new_page()
    models: list[Any] = []
    arriving: list[Any] = []
    # Held: Voila waits for the kernel's model, the next page is slow to come.
    tab.route(re.compile(r".*/api/kernels/[0-9a-f-]{36}(\?.*)?$"), lambda route: models.append(route))
    tab.route(re.compile(re.escape(DOWNLOAD_MANAGER)), lambda route: arriving.append(route))
    tab.goto(server.url(COVERAGE))
    link = tab.locator(".rts-snapshot .rts-nav a", has_text="Download manager")
    expect(link).to_be_visible(timeout=WAIT_S * 1000)
    kernel = kernel_in(tab.content())
    # Playwright hands over the held requests only while it runs: the probes wait in the page, not in time.sleep.
    poll(lambda: tab.wait_for_timeout(50) or models, WAIT_S, what="Voila's scripts asking for the kernel's model")
    link.click(no_wait_after=True)
    poll(lambda: tab.wait_for_timeout(50) or arriving, WAIT_S, what="the next page asked for")
    with tab.expect_event("websocket", timeout=WAIT_S * 1000):  # Voila has the model, and has set its beacon
        models[0].continue_()
    arriving[0].continue_()
    tab.wait_for_url(re.compile(re.escape(DOWNLOAD_MANAGER)), timeout=WAIT_S * 1000)
    server.wait_kernels(gone(kernel), 30, "the kernel of a page left as Voila got its kernel")


_COUNT_BEACONS = """(() => {
    const send = navigator.sendBeacon.bind(navigator);
    navigator.sendBeacon = (url, data) => {
        localStorage.setItem("beacons", JSON.stringify([...JSON.parse(localStorage.getItem("beacons") || "[]"), url]));
        return send(url, data);
    };
})()"""
"""Keeps every beacon's address in the origin's storage: Playwright does not see a leaving page's beacons."""


def test_a_page_left_after_voila_connected_asks_once_to_stop_its_kernel(
    contexts: Contexts, serve: Callable[..., ServeProcess]
) -> None:
    """Once Voila's scripts have the kernel, Voila's own beacon stops it, and runtool's page sends none."""
    server = serve("--no-preheat", "--cull-idle", "600")
    tab = contexts.new_page()
    tab.add_init_script(_COUNT_BEACONS)
    kernel = open_page(tab, server)
    tab.goto(f"{server.base}/voila/static/voila.js")  # leaves for a page of the same origin, with its storage
    server.wait_kernels(gone(kernel), 30, "the kernel of a page left")
    beacons = json.loads(tab.evaluate("localStorage.getItem('beacons')"))
    assert [url.split("/voila/")[-1] for url in beacons] == [f"api/shutdown/{kernel}"]
    assert "api/shutdown" not in server.log_text()


def cell_outputs(document: str) -> list[dict[str, Any]]:
    """The outputs of the page's cell that Voila puts into the page for its script to draw, in order."""
    return [json.loads(text)["data"] for text in CELL_OUTPUT.findall(document)]


@pytest.mark.parametrize("options", [("--pool-size", "1"), ("--no-preheat",)], ids=["preheated", "no-preheat"])
def test_a_page_shows_its_first_screen_before_voilas_scripts_and_the_live_page_replaces_it(
    contexts: Contexts, serve: Callable[..., ServeProcess], options: tuple[str, ...]
) -> None:
    server = serve(*options)
    if "--pool-size" in options:
        waiting_pool(server, len(PAGES))
    copies = {}
    for page in (COVERAGE, DOWNLOAD_MANAGER):
        tab = contexts.new_page()
        # Voila's scripts never load: the browser shows what the page's HTML holds, and no widget.
        tab.route("**/voila/static/voila.js", lambda route: route.abort())
        response = tab.goto(server.url(page))
        copy = tab.locator(".rts-snapshot .rts-kpi-value")
        expect(copy.first).to_be_visible(timeout=WAIT_S * 1000)
        copies[page] = copy.all_inner_texts()
        assert copies[page] and all(value.strip() for value in copies[page]), copies
        # Voila's script would draw one output only, the live page's widget: the copy is not sent twice.
        (live_output,) = cell_outputs(response.text())
        assert "application/vnd.jupyter.widget-view+json" in live_output
        tab.close()
    for page, copied in copies.items():
        tab = contexts.new_page()
        tab.goto(server.url(page))
        # The live page shows the same KPI values once the copy is gone: one page, never two.
        live = tab.locator(".rt-kpi-value")
        expect(live.first).to_be_visible(timeout=WAIT_S * 1000)
        expect(tab.locator(".rts-snapshot, .rts-early")).to_have_count(0)
        expect(live).to_have_text(copied)
        tab.close()


def test_the_first_screen_shows_which_toggle_button_is_picked(page: Any) -> None:
    """The copy marks the picked toggle button (mod-active) as the live page does: a link to the download manager's
    ML samples, or its "Not uploaded" filter, showed every button alike until the widgets came."""
    from runtool.ui.snapshot import snapshot_html

    toggle = widgets.ToggleButtons(options=["Raw bags", "ML samples"], value="ML samples")
    page.set_content(f"<html><body>{snapshot_html(widgets.VBox([toggle]))}</body></html>")
    picked, other = (page.locator(".rts-snapshot button", has_text=text) for text in ("ML samples", "Raw bags"))
    expect(picked).to_have_class(re.compile(r"\bmod-active\b"))
    look = "el => { const s = getComputedStyle(el); return [s.backgroundColor, s.boxShadow, s.fontWeight]; }"
    assert picked.evaluate(look) != other.evaluate(look), "the picked button looks like the others"
