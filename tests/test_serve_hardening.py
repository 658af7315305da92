"""`runtool serve` against bad input and faults, no browser: real Voila, real kernels, real processes.

Each test starts its own ``runtool serve`` (pages on an empty data folder: a page then says there is no
inventory, which is all the server's guards need) and stops it in teardown, killing whatever survives.
Waits poll with generous deadlines (the machine is shared); assertions are about bounds, never speed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import websocket

from runtool.serve import PAGES, stop
from runtool.serve.app import V1_PROTOCOL
from tests.browser.conftest import RUNTOOL, ServeProcess, poll, running

COVERAGE = PAGES[0]
BUSY_TEXT = "This runtool server is busy"


def start(tmp_path: Path, *options: str, ip: str = "127.0.0.1") -> ServeProcess:
    """``runtool serve OPTIONS`` on an empty data folder under ``tmp_path``."""
    data = tmp_path / f"data-{len(list(tmp_path.glob('data-*')))}"
    data.mkdir()
    return ServeProcess(None, *options, ip=ip, log=data / "serve.log",
                        env={"RUNTOOL_DATA_DIR": str(data), "IPYTHONDIR": str(data / "ipython")})


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Starts ``runtool serve OPTIONS`` servers; stops them all in teardown, failing if one left a process."""
    started: list[ServeProcess] = []

    def make(*options: str, ip: str = "127.0.0.1") -> ServeProcess:
        started.append(start(tmp_path, *options, ip=ip))
        return started[-1]

    yield make
    survivors = [process for server in started for process in server.stop()]
    assert not survivors, f"runtool serve left processes behind: {survivors}"


def http(url: str, host: str | None = None, timeout: float = 180.0, **headers: str) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of a GET (redirects followed); ``host`` overrides the Host header."""
    request = urllib.request.Request(url, headers={**({"Host": host} if host else {}), **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(response.headers), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode("utf-8", "replace")


def kernel_id_of(html: str) -> str:
    """The page's kernel, from Voila's page config (``"kernelId": "…"``)."""
    match = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', html)
    assert match, "no kernelId in the page"
    return match.group(1)


def open_page(server: ServeProcess, page: str = COVERAGE) -> str:
    """GET a page (its kernel runs the notebook meanwhile) and return the page's kernel id."""
    status, _, html = http(server.url(page))
    assert status == 200, html[:500]
    return kernel_id_of(html)


def channel_url(server: ServeProcess, kernel_id: str) -> str:
    return f"ws://{server.ip}:{server.port}/api/kernels/{kernel_id}/channels"


def connect(server: ServeProcess, kernel_id: str, **options: Any) -> websocket.WebSocket:
    """A v1 kernel websocket to ``kernel_id``, as the page's own JavaScript opens it."""
    return websocket.create_connection(channel_url(server, kernel_id), timeout=30,
                                       subprotocols=[V1_PROTOCOL], **options)


# -- a viewer who vanishes -------------------------------------------------------------------------------


def test_a_viewer_that_never_connects_is_culled(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--no-preheat", "--cull-idle", "10")
    kernel = open_page(server)  # a plain GET: no websocket, no leave beacon, ever
    server.wait_kernels(lambda kernels: kernel not in kernels, 90,
                        "the silent viewer's kernel culled (--cull-idle 10)")
    # Two rules stop it after 10 s idle here, whichever checks first: the culling, and the stop of a page no
    # browser opened (half of --cull-idle, at least 10 s; tests/browser/test_serving.py tells them apart).
    assert re.search(rf"[Cc]ull\w* .*{kernel}|stopping kernel {kernel}: its page was never opened",
                     server.log_text()), "Voila's log should say why it stopped the kernel"


def test_a_channel_closed_as_it_is_set_up_logs_no_traceback(serve: Callable[..., ServeProcess]) -> None:
    """A page left as Voila connects closes its kernel channel mid-handshake: jupyter_server went on to pick the
    subprotocol on the closed channel, and logged "Uncaught exception" and a 500 with a traceback (hostile review)."""
    server = serve("--no-preheat")
    kernel = open_page(server)
    for _ in range(3):
        with socket.create_connection((server.ip, server.port), timeout=30) as raw:
            key = base64.b64encode(os.urandom(16)).decode()
            raw.sendall("\r\n".join([
                f"GET /api/kernels/{kernel}/channels?session_id=s HTTP/1.1", f"Host: {server.ip}:{server.port}",
                "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                f"Sec-WebSocket-Protocol: {V1_PROTOCOL}", "", ""]).encode())
        time.sleep(0.5)
    connect(server, kernel).close()  # the kernel still takes its viewer
    log = server.log_text()
    assert "Traceback" not in log and "Uncaught exception" not in log, log


def test_a_viewer_closing_the_tab_mid_render_leaves_no_kernel(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--no-preheat", "--cull-idle", "10")
    before = set(server.kernels())
    path = server.url(COVERAGE).removeprefix(server.base)
    with socket.create_connection((server.ip, server.port), timeout=120) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {server.ip}:{server.port}\r\n\r\n".encode())
        first = sock.recv(64)  # the first bytes of the page: Voila is rendering it now
        assert first.startswith(b"HTTP/1.1 200"), first
        started = server.wait_kernels(lambda kernels: bool(set(kernels) - before), 60, "the page's kernel started")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # drop: RST
    new = set(started) - before
    server.wait_kernels(lambda kernels: not new & set(kernels), 120,
                        "the kernel of the page dropped mid-render stopped (culled or shut down)")
    status, _, _ = http(f"{server.base}/voila/static/voila.js", timeout=60)
    assert status == 200, "the server answers after the dropped viewer"


# -- Host and Origin (DNS rebinding) ---------------------------------------------------------------------


def test_only_the_served_address_and_allowed_names_are_answered(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--no-preheat", "--allowed-host", "myname")
    port = server.port
    static = f"{server.base}/voila/static/voila.js"
    page = server.url(COVERAGE)
    for url in (page, static, f"{server.base}/"):
        status, _, body = http(url, host="evil.example")
        assert status == 403 and "does not answer to that host name" in body, (url, status, body[:200])
        status, _, _ = http(url, host=f"evil.example:{port}")
        assert status == 403, (url, status)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"myname:{port}", f"MyName:{port}"):
        status, _, _ = http(static, host=host)
        assert status == 200, (host, status)
    status, _, html = http(page, host=f"myname:{port}")
    assert status == 200 and kernel_id_of(html)

    kernel = kernel_id_of(html)
    url = channel_url(server, kernel)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=30, subprotocols=[V1_PROTOCOL], host=f"evil.example:{port}",
                                    origin=f"http://evil.example:{port}")
    assert refused.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        # The right Host, but a page of another site opened the socket.
        websocket.create_connection(url, timeout=30, subprotocols=[V1_PROTOCOL], origin="http://evil.example")
    assert refused.value.status_code in (400, 403)
    accepted = connect(server, kernel, origin=f"http://127.0.0.1:{port}")
    assert accepted.subprotocol == V1_PROTOCOL
    accepted.close()


# -- a network address: token, Host ------------------------------------------------------------------------


def test_a_network_server_takes_its_token_from_the_environment_not_argv(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--pool-size", "1", ip="127.0.0.2")
    token = server.token
    assert token and len(token) >= 20, server.log_text()
    kernels = server.wait_kernels(lambda kernels: len(kernels) == len(PAGES), 180, "one preheated kernel per page")
    holders = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if token in " ".join(process.info["cmdline"] or []):
            holders.append(process.info)
    assert not holders, f"the token is on a command line: {holders}"
    for kernel in kernels.values():
        assert token not in json.dumps(kernel.environ()), "a page's kernel inherited the token"

    port = server.port
    page = f"{server.base}/voila/render/{COVERAGE}"
    status, _, body = http(page, host=f"127.0.0.2:{port}")
    assert status in (401, 403) or "login" in body.lower(), (status, body[:300])
    status, _, body = http(f"{page}?token=wrong", host=f"127.0.0.2:{port}")
    assert status in (401, 403) or "login" in body.lower(), (status, body[:300])
    status, _, body = http(f"{page}?token={token}", host=f"127.0.0.2:{port}")
    assert status == 200 and kernel_id_of(body), (status, body[:300])
    status, _, _ = http(f"{server.base}/voila/static/voila.js", host="evil.example")
    assert status == 403


# -- the kernel cap without a browser --------------------------------------------------------------------------


def test_past_the_kernel_cap_a_viewer_gets_the_busy_page_and_no_kernel(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--no-preheat", "--max-kernels", "2", "--cull-idle", "600")
    first, second = open_page(server), open_page(server)
    sockets = [connect(server, kernel) for kernel in (first, second)]  # both pages open in a browser
    assert set(server.kernels()) == {first, second}
    status, headers, body = http(server.url(COVERAGE))
    assert status == 503 and BUSY_TEXT in body and "2 pages are open" in body, (status, body[:300])
    assert headers.get("Retry-After")
    time.sleep(2)  # a kernel start would show up as a process within this time on an idle machine
    assert set(server.kernels()) == {first, second}, "the busy answer started a kernel"
    for sock in sockets:
        sock.close()


def test_viewers_arriving_together_cannot_pass_the_cap(serve: Callable[..., ServeProcess]) -> None:
    """Without preheated kernels every viewer's kernel is started during its request: six requests at the same
    moment all passed the check before any of their kernels was listed, and six kernels started under a cap of 2."""
    server = serve("--no-preheat", "--max-kernels", "2", "--cull-idle", "600")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: http(server.url(COVERAGE))[0], range(6)))
    assert sorted(answers) == [200, 200, 503, 503, 503, 503], answers
    assert len(server.kernels()) == 2


def test_viewers_arriving_together_at_preheated_pages_cannot_pass_the_cap(serve: Callable[..., ServeProcess]) -> None:
    """The first viewer takes the page's preheated kernel and Voila queues its refill; the next was handed that refill
    while it started, counted nowhere, and 8 requests at once under a cap of 2 let 3 viewers in (hostile review)."""
    server = serve("--pool-size", "1", "--max-kernels", "2", "--cull-idle", "600")
    server.wait_kernels(lambda kernels: len(kernels) == len(PAGES), 180, "one preheated kernel per page")
    time.sleep(5)  # their pages rendered up to the wait for a viewer
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http(server.url(COVERAGE))[0], range(8)))
    assert sorted(answers) == [200, 200, *[503] * 6], answers
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]


def test_a_preheated_kernel_that_just_died_is_not_handed_to_a_viewer(serve: Callable[..., ServeProcess]) -> None:
    """Jupyter notices a killed kernel at its next poll, up to 3 s later; a viewer arriving in between was handed the
    dead kernel, and its page only said the session had ended (hostile review)."""
    server = serve("--pool-size", "1", "--cull-idle", "600")
    pooled = server.wait_kernels(lambda kernels: len(kernels) == len(PAGES), 180, "one preheated kernel per page")
    time.sleep(10)  # their pages rendered up to the wait for a viewer
    for process in pooled.values():
        process.kill()
    time.sleep(0.3)  # dead, and Jupyter's next poll most likely still to come
    status, _, html = http(server.url(COVERAGE))
    assert status == 200, html[:300]
    assert kernel_id_of(html) not in pooled, "the page was handed a kernel that had just died"


NOISE = ("Traceback", "DeadKernelError", "restart failed", "Error at server while executing cell",
         "Kernel died while waiting", "died, removing from map", "never retrieved", "Could not destroy zmq context",
         "restarted failed")
"""What Jupyter and Voila logged for a page kernel that died, beside the server's own line about it."""


def test_killed_preheated_kernels_are_one_log_line_each_also_as_the_server_stops(
    serve: Callable[..., ServeProcess],
) -> None:
    """Each killed preheated kernel logged nbclient's and Voila's errors, the whole cell, a DeadKernelError traceback
    and the restarter's "restart failed": an operator saw a crash where the server had coped."""
    server = serve("--pool-size", "1", "--cull-idle", "600")
    pooled = server.wait_kernels(lambda kernels: len(kernels) == len(PAGES), 180, "one preheated kernel per page")
    time.sleep(10)  # their pages rendered up to the wait for a viewer: a kernel killed now dies mid-cell
    first, process = next(iter(pooled.items()))
    process.kill()
    page = poll(lambda: (m := re.search(rf"preheated kernel {first} of (\S+) stopped \(1 in a row\); replacing it\n",
                                        server.log_text())) and m.group(1), 60, what="the server noticing the kill")
    refill = server.wait_kernels(lambda k: len(k) == len(PAGES) and first not in k, 180, f"the refill of {page}")
    log = server.log_text()
    assert not [line for line in NOISE if line in log], log[-3000:]
    # Every kernel killed at once, the pools refilling, the server stopped meanwhile.
    for process in refill.values():
        process.kill()
    poll(lambda: server.log_text().count("preheated kernel") >= 1 + len(PAGES), 60, what="the kills noticed")
    assert not server.stop(signal.SIGINT)
    log = server.log_text()
    assert not [line for line in NOISE if line in log], log[-3000:]


def test_at_the_cap_a_page_no_browser_opened_makes_room_for_a_new_viewer(
    serve: Callable[..., ServeProcess],
) -> None:
    """One viewer reloading a page while it loads leaves kernels no browser will ever open; at the cap the oldest
    such kernel idle for a minute gives its place to the next viewer, not after the 3 minutes of the usual stop."""
    server = serve("--no-preheat", "--max-kernels", "1", "--cull-idle", "600")
    abandoned = open_page(server)  # rendered, never opened in a browser

    def let_in() -> str | None:
        status, _, html = http(server.url(COVERAGE))
        return kernel_id_of(html) if status == 200 else None

    kept = poll(let_in, 150, interval=5, what="a new viewer let in once the abandoned page's kernel idled 60 s")
    assert abandoned not in server.kernels() and kept in server.kernels()
    assert f"stopping kernel {abandoned}: its page was never opened" in server.log_text()


def test_a_link_cannot_pick_the_pages_theme_or_template(serve: Callable[..., ServeProcess]) -> None:
    """Voila printed ``?theme=`` into the page unescaped (a link's script ran as the viewer), and ``?template=reveal``
    reset Voila's SIGTERM handling and loaded scripts from CDNs (hostile review). Both are now ignored: the
    page is runtool's, from the preheated kernel."""
    server = serve("--pool-size", "1", "--cull-idle", "600")
    server.wait_pools_filled(PAGES)
    script = "<script>document.title='XSS'</script>"
    status, _, html = http(server.url(COVERAGE, "theme=" + urllib.parse.quote(f'">{script}')))
    assert status == 200 and script not in html, html[:500]
    assert f"Using pre-heated kernel: {kernel_id_of(html)}" in server.log_text()
    status, _, html = http(server.url(PAGES[1], "template=reveal"))
    assert status == 200 and "reveal" not in html.lower(), html[:500]
    assert f"Using pre-heated kernel: {kernel_id_of(html)}" in server.log_text()
    _, _, plain = http(server.url(PAGES[1]))
    assert re.findall(r'src="([^"]+)"', html) == re.findall(r'src="([^"]+)"', plain)  # the same scripts


def test_a_kernel_that_dies_while_its_page_is_drawn_tells_the_viewer_to_reload(
    serve: Callable[..., ServeProcess],
) -> None:
    """The page said "Please run Voilà with --show_tracebacks=True …": advice for whoever runs the server, not for
    the viewer (hostile review)."""
    server = serve("--no-preheat", "--cull-idle", "600")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(http, server.url(COVERAGE))
        kernels = server.wait_kernels(lambda k: len(k) == 1, 120, "the viewer's kernel")
        time.sleep(1)  # running the page's cell: importing runtool
        next(iter(kernels.values())).kill()
        status, _, html = answer.result()
    assert status == 200
    assert "Reload the page" in html and "show_tracebacks" not in html, html[-2000:]


def test_odd_urls_get_short_errors_and_no_traceback_in_the_log(serve: Callable[..., ServeProcess]) -> None:
    """Anyone could fill the log with tracebacks: a URL that is not UTF-8 (Jupyter's error page raised), an unknown
    theme's CSS, a template static path that is not one (an error 500) (hostile review)."""
    server = serve("--no-preheat")
    for path in ("/voila/render/%ff.ipynb", "/voila/api/themes/x/index.css", "/voila/templates/t/static/../../x",
                 "/voila/templates/runtool/a/b", "/voila/render/nope.ipynb"):
        status, _, _ = http(server.base + path)
        assert 400 <= status < 500, (path, status)
    status, _, _ = http(f"{server.base}/voila/templates/runtool/static/../../../../etc/passwd")
    assert status in (403, 404)
    log = server.log_text()
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-3000:]


def test_logout_is_a_redirect_not_a_traceback(serve: Callable[..., ServeProcess]) -> None:
    """GET /logout (anyone may ask, logged in or not) answered an error 500 with a traceback in the log: Jupyter's
    logout page needs settings Voila does not have (hostile review). It clears the login and sends the viewer on."""
    for server in (serve("--no-preheat"), serve("--no-preheat", ip="127.0.0.2")):
        request = urllib.request.Request(f"{server.base}/logout")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            opener.open(request, timeout=60)
            raise AssertionError("no redirect")
        except urllib.error.HTTPError as exc:
            status, location = exc.code, exc.headers.get("Location", "")
        assert status == 302, (status, server.log_text()[-2000:])
        assert location.endswith("/login" if server.token else "/"), location
        log = server.log_text()
        assert "Traceback" not in log and "Uncaught exception" not in log, log[-3000:]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_a_token_server_under_a_base_url_has_its_login_page_there(serve: Callable[..., ServeProcess]) -> None:
    """Behind a reverse proxy (--base-url /rt/), a page opened without the token sends the viewer to /rt/login: that
    was not found (the login form was at /login, outside the prefix, and posted to /rt/login), so only a link with
    the token could open a page (hostile review). The form is at /rt/login and the token typed into it logs in."""
    server = serve("--no-preheat", "--base-url", "/rt/", ip="127.0.0.2")
    assert server.token
    jar = http_cookiejar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{server.base}/rt/runtool/reports/", timeout=60) as response:  # redirected to the login form
        assert urllib.parse.urlsplit(response.url).path == "/rt/login", response.url
        form = response.read().decode()
    assert 'name="password"' in form
    xsrf = next(cookie.value for cookie in jar if cookie.name == "_xsrf")
    data = urllib.parse.urlencode({"password": server.token, "_xsrf": xsrf}).encode()
    with opener.open(f"{server.base}/rt/login?next=%2Frt%2Fruntool%2Freports%2F", data=data, timeout=60) as response:
        assert response.status == 200 and urllib.parse.urlsplit(response.url).path == "/rt/runtool/reports/"
        assert "Run reports" in response.read().decode()
    status, _, _ = http(f"{server.base}/login")
    assert status == 404  # nothing outside the prefix


def test_the_login_form_says_how_to_log_in_and_sets_no_password(serve: Callable[..., ServeProcess],
                                                                tmp_path: Path) -> None:
    """Jupyter's login form told a viewer to run ``jupyter server list`` and offered to "set up a password" with the
    token: that form's POST was an error 500 with a traceback (Voila has no config folder), and where it worked it
    would have written a password that outlasts the token."""
    server = serve("--no-preheat", ip="127.0.0.2")
    jar = http_cookiejar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{server.base}/login", timeout=60) as response:
        form = response.read().decode()
    assert "runtool" in form and "token=" in form and "jupyter server list" not in form
    assert "new_password" not in form
    xsrf = next(cookie.value for cookie in jar if cookie.name == "_xsrf")
    wrong = urllib.parse.urlencode({"password": "not-the-token", "_xsrf": xsrf}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"{server.base}/login", data=wrong, timeout=60)
    assert refused.value.code == 401 and "not this server" in refused.value.read().decode()
    data = urllib.parse.urlencode({"password": server.token, "new_password": "hunter2", "_xsrf": xsrf}).encode()
    with opener.open(f"{server.base}/login?next=%2Fruntool%2Freports%2F", data=data, timeout=60) as response:
        assert response.status == 200 and urllib.parse.urlsplit(response.url).path == "/runtool/reports/"
    password_only = urllib.parse.urlencode({"password": "hunter2", "_xsrf": xsrf}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http_cookiejar())).open(
            urllib.request.Request(f"{server.base}/login", data=password_only,
                                   headers={"Cookie": f"_xsrf={xsrf}"}), timeout=60)
    assert refused.value.code == 401
    assert not [*tmp_path.rglob("jupyter_server_config.json"), *Path.cwd().glob("jupyter_server_config.json")]
    assert "Traceback" not in server.log_text()


def http_cookiejar() -> Any:
    import http.cookiejar

    return http.cookiejar.CookieJar()


@pytest.mark.parametrize("how", ["hangup", "kill -9 of runtool serve", "kill -9 as the kernels start"])
def test_a_closed_terminal_or_a_killed_runtool_serve_stops_voila_and_its_kernels_cleanly(
    tmp_path: Path, how: str
) -> None:
    """A closed terminal (SIGHUP to runtool serve and Voila) killed Voila on the spot, and a runtool serve killed
    outright left Voila serving the port as an orphan; either way the kernels' connection files (their keys) and
    sockets stayed in /tmp (hostile review). The same while the preheated kernels are still starting."""
    server = start(tmp_path, "--pool-size", "1")
    try:
        if how == "kill -9 as the kernels start":
            kernels = server.wait_kernels(lambda k: len(k) >= 1, 180, "a preheated kernel starting")
        else:
            kernels = server.wait_kernels(lambda k: len(k) == len(PAGES), 180, "one preheated kernel per page")
        folder = Path(next(part for part in next(iter(kernels.values())).cmdline() if part.endswith(".json"))).parent
        voila = server.voila
        recorded = [voila, *kernels.values()]
        if how == "hangup":
            server.process.send_signal(signal.SIGHUP)
            voila.send_signal(signal.SIGHUP)
        else:
            server.process.kill()
        _, alive = psutil.wait_procs(recorded, timeout=60)
        assert not alive, f"left running: {alive}"
    finally:
        survivors = server.stop()
    assert not survivors
    assert not list(folder.glob("kernel-*")), sorted(p.name for p in folder.glob("kernel-*"))
    # Nor a kernel started after the ones recorded (one still starting lived on, orphaned: hostile review).
    poll(lambda: not kernels_of(folder), 30, interval=0.5, what=f"no kernel process of {folder} left")


@pytest.mark.parametrize("when", ["as the kernels start", "with the pools full"])
def test_a_killed_voila_leaves_no_connection_folder_and_no_kernel(tmp_path: Path, when: str) -> None:
    """Voila killed outright (kill -9, the OOM killer) cannot clean up after itself: its connection folder, with every
    kernel's connection file (their keys) and sockets, stayed in the temporary folder for good (hostile review).
    runtool serve, still running, removes it and stops what Voila left, then exits with Voila's code."""
    # A short temporary folder: a kernel's socket path must fit the 107 bytes of a Unix socket address.
    temp = Path(tempfile.mkdtemp(prefix="rtk"))
    data = tmp_path / "data"
    data.mkdir()
    server = ServeProcess(None, "--pool-size", "1", log=data / "serve.log",
                          env={"RUNTOOL_DATA_DIR": str(data), "IPYTHONDIR": str(data / "ipython"), "TMPDIR": str(temp)})
    try:
        enough = (lambda k: len(k) >= 1) if when == "as the kernels start" else (lambda k: len(k) == len(PAGES))
        kernels = server.wait_kernels(enough, 180, f"preheated kernels ({when})")
        recorded = [server.voila, *kernels.values()]
        server.voila.kill()
        assert server.process.wait(timeout=60) != 0
        _, alive = psutil.wait_procs(recorded, timeout=30)
        assert not alive, f"left running: {alive}"
    finally:
        survivors = server.stop()
        left = sorted(str(p.relative_to(temp)) for p in temp.rglob("*"))
        shutil.rmtree(temp, ignore_errors=True)
    assert not survivors
    assert not left, left[:10]
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]


def kernels_of(folder: Path) -> list[psutil.Process]:
    """The processes whose command line names a connection file in ``folder``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(part.startswith(f"{folder}/") for part in process.info["cmdline"] or []):
            found.append(process)
    return found


# -- the kernel websocket: protocol and fuzz --------------------------------------------------------------


def v1_frame(parts: list[bytes]) -> bytes:
    """A v1 kernel websocket message: offset count, offsets (each part's start, then the end of the last), then the
    parts (channel, header, parent, …), as jupyter_server's ``serialize_msg_to_ws_v1`` writes it."""
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + b"".join(parts)


def request_state(msg_id: str) -> dict[str, Any]:
    """A ``comm_msg`` asking the widgets for their state: a message Voila lets through."""
    return {
        "header": {"msg_id": msg_id, "msg_type": "comm_msg", "username": "", "session": "fuzz",
                   "date": "2026-01-01T00:00:00Z", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"comm_id": "0" * 32, "data": {"method": "request_state"}},
    }


def legacy_binary(message: dict[str, Any], count: int | None = None) -> bytes:
    """A pre-v1 binary message (Jupyter's old ``serialize_binary_message``): a 4-byte count, 4-byte offsets."""
    body = json.dumps(message).encode()
    buffers = [b"x" * 16]
    n = len(buffers) + 1 if count is None else count
    offsets = [4 * (len(buffers) + 2)]
    offsets.append(offsets[0] + len(body))
    return n.to_bytes(4, "big") + b"".join(o.to_bytes(4, "big") for o in offsets) + body + buffers[0]


def fuzz_frames(rng: random.Random, count: int) -> Iterator[tuple[str, bytes | str]]:
    """``count`` hostile frames of both protocols, each with a label."""
    legit = request_state("fuzz")
    kinds = ["random", "huge-count", "beyond", "text", "legacy", "legacy-huge", "garbage-json", "unsorted",
             "legit-v1", "empty", "count-only", "no-msg-id"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if kind == "random":
            yield kind, rng.randbytes(rng.randint(1, 4096))
        elif kind == "huge-count":
            yield kind, rng.choice([2**63 - 1, 2**64 - 1, 2**40, 10**9]).to_bytes(8, "little") + rng.randbytes(64)
        elif kind == "beyond":
            frame = bytearray(v1_frame([b"shell", b"{}", b"{}", b"{}", b"{}"]))
            frame[8 * rng.randint(1, 5):8 * rng.randint(1, 5) + 8] = rng.randint(10**6, 2**62).to_bytes(8, "little")
            yield kind, bytes(frame)
        elif kind == "text":
            yield kind, rng.choice([json.dumps(legit), "{", "x" * rng.randint(0, 2000), json.dumps([1, 2])])
        elif kind == "legacy":
            yield kind, legacy_binary(legit)
        elif kind == "legacy-huge":
            yield kind, legacy_binary(legit, count=rng.choice([2**31, 2**32 - 1, 10**6]))
        elif kind == "garbage-json":
            parts = [b"shell", rng.randbytes(rng.randint(0, 200)), b"{", b"[]", rng.randbytes(30)]
            yield kind, v1_frame(parts)
        elif kind == "unsorted":
            frame = bytearray(v1_frame([b"shell", b"{}", b"{}", b"{}", b"{}"]))
            frame[16:24], frame[24:32] = frame[24:32], frame[16:24]
            yield kind, bytes(frame)
        elif kind == "legit-v1":
            message = request_state(f"fuzz-{i}")
            parts = [b"shell", *(json.dumps(message[k]).encode() for k in ("header", "parent_header", "metadata",
                                                                           "content"))]
            yield kind, v1_frame(parts)
        elif kind == "empty":
            yield kind, b""
        elif kind == "no-msg-id":  # JSON objects throughout, but a header the kernel cannot take
            yield kind, v1_frame([b"shell", b'{"msg_type": "kernel_info_request"}', b"{}", b"{}", b"{}"])
        else:
            yield kind, (2).to_bytes(8, "little")


def after_frame(sock: websocket.WebSocket) -> str:
    """"closed" when the server closed the channel after the frames sent so far, else "open" (a ping answered).

    The server handles a socket's frames in order, so the pong (or the close) answers the frame just sent.
    """
    sock.ping(b"probe")
    while True:
        try:
            opcode, frame = sock.recv_data_frame(control_frame=True)
        except (websocket.WebSocketException, OSError):
            return "closed"
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return "closed"
        if opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"probe":
            return "open"


def rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


def test_kernel_websocket_fuzz_neither_hangs_nor_bloats_the_server(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--no-preheat", "--cull-idle", "600")
    kernel = open_page(server)
    voila = server.voila
    url = channel_url(server, kernel)

    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=30)  # no subprotocol: Jupyter's legacy protocol
    assert refused.value.status_code == 400 and V1_PROTOCOL in (refused.value.resp_body or b"").decode()

    rss_before = rss_mb(voila)
    rng = random.Random(20261205)
    socket_ = connect(server, kernel)
    outcomes: dict[str, Counter[str]] = {}
    for kind, frame in fuzz_frames(rng, 400):
        try:
            if isinstance(frame, str):
                socket_.send(frame)
            else:
                socket_.send_binary(frame)
            outcome = after_frame(socket_)
        except (websocket.WebSocketException, OSError):
            outcome = "closed"
        outcomes.setdefault(kind, Counter())[outcome] += 1
        if outcome == "closed":
            socket_.close()
            socket_ = connect(server, kernel)
    socket_.close()
    print(f"fuzz outcomes: {outcomes}")
    assert sum(sum(c.values()) for c in outcomes.values()) == 400
    # Anything that is not a well-formed v1 message ends the channel; a well-formed message does not.
    for kind, counts in outcomes.items():
        if kind != "legit-v1":
            assert counts == Counter(closed=counts.total()), (kind, counts)
    assert outcomes["legit-v1"] == Counter(open=outcomes["legit-v1"].total())

    # Bounds, not timings: the server still serves, memory grew by less than 200 MB, CPU is back to idle.
    status, _, _ = http(f"{server.base}/voila/static/voila.js", timeout=60)
    assert status == 200
    assert open_page(server) != kernel
    grown = rss_mb(voila) - rss_before
    print(f"Voila RSS {rss_before:.0f} MB before the fuzz, grew by {grown:.0f} MB")
    assert grown < 200, f"Voila's memory grew by {grown:.0f} MB under the fuzz"

    def idle() -> float | None:
        busy = voila.cpu_percent(interval=3)
        return busy if busy < 30 else None

    poll(idle, 120, interval=0, what="Voila's CPU back under 30 % after the fuzz")
    log = server.log_text()
    assert "not a v1 kernel message" in log
    assert "websocket_ping_timeout" not in log  # Tornado reading jupyter_server's ping settings (ms) as seconds
    assert "Got events for closed stream" not in log  # pyzmq, a kernel's late message for a closed channel
    # One line per refused frame: no traceback, no kernel refusing what was passed on, no blank warning.
    assert "Traceback" not in log and "Invalid message" not in log, log[-3000:]
    assert not re.search(r"WARNING \| *$", log, re.MULTILINE), log[-3000:]


# -- stopping -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_with_viewers_connected_leaves_no_voila_and_no_kernel(tmp_path: Path, signum: int) -> None:
    server = start(tmp_path, "--pool-size", "1")
    try:
        viewers = [open_page(server, page) for page in PAGES[:2]]
        sockets = [connect(server, kernel) for kernel in viewers]
        kernels = server.wait_kernels(lambda k: set(viewers) <= set(k) and len(k) >= 4, 180,
                                      "two viewers' kernels and the refilled pools")
        recorded = [server.voila, *kernels.values()]
        assert all(p.ppid() == server.voila.pid for p in kernels.values())
    except BaseException:
        server.stop()
        raise
    survivors = server.stop(signum)
    for sock in sockets:
        sock.close()
    assert server.process.returncode == 0, server.log_text()[-2000:]
    left = [p for p in recorded if running(p)]
    assert not left and not survivors, f"left running after {signal.Signals(signum).name}: {left or survivors}"
    # The preheated kernels wait mid-cell for a viewer: asked to shut down, each printed a ZMQ traceback.
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]
    # Nor a line per page view or kernel start that tells an operator nothing: kernels use Unix sockets (no
    # plain-text TCP warning), and Voila never shows a notebook's saved outputs (no trust warning).
    assert "without encryption" not in log and "is not trusted" not in log, log[-3000:]
    # Page kernels keep no IPython history (many kernels on one history database lock it; the error showed on pages).
    assert not list((tmp_path / "data-0" / "ipython").rglob("history.sqlite"))


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace(capsys: pytest.CaptureFixture[str]) -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"  # SIGTERM is ignored now
        stop(child, grace_s=2)
        assert child.returncode == -signal.SIGKILL
        assert "did not stop within 2 s; killing it" in capsys.readouterr().err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_stop_lets_a_child_that_exits_on_sigterm_exit_by_itself() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    stop(child, grace_s=60)
    assert child.returncode == -signal.SIGTERM


# -- the port ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path, port: str) -> None:
    result = subprocess.run([RUNTOOL, "serve", "--port", port], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**os.environ, "RUNTOOL_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2, result
    assert f"--port {port} is not a TCP port (1..65535)" in result.stderr
    assert "Traceback" not in result.stderr and "Serving" not in result.stdout


def test_a_busy_port_is_a_clear_error_and_no_url(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([RUNTOOL, "serve", "--port", str(port), "--no-preheat"], capture_output=True,
                                text=True, timeout=180, cwd=tmp_path,
                                env={**os.environ, "RUNTOOL_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1, result
    assert f"port {port}" in result.stderr and "in use" in result.stderr, result.stderr
    assert "http://" not in result.stdout, "a URL was printed for a server that never listened"
    assert "Traceback" not in result.stderr
