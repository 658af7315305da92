"""`runtool serve`: loopback without a token by default; any other address requires the printed token."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
from tornado import web

from runtool.config import load_config
from runtool.demo.emulator import free_port
from runtool.errors import RuntoolError, UsageError
from runtool.serve import ServeOptions, serve_command, server_token
from runtool.serve.app import HEALTHY_S, PoolBackoff, RuntoolKernelManager, refill_delay
from tests.conftest import SeededFleet, write_toml


def test_the_voila_command_line_hides_tracebacks_and_holds_no_token() -> None:
    command = serve_command(ServeOptions(ip="0.0.0.0"))
    assert "--show_tracebacks=False" in command and "--Voila.ip=0.0.0.0" in command
    assert not any("token" in part for part in command)


def test_a_page_that_keeps_failing_as_it_preheats_is_retried_less_and_less_often() -> None:
    """One lost kernel is replaced at once; a page failing every time backs off to one try in 5 minutes."""
    delays = [refill_delay(n) for n in range(1, 10)]
    assert delays[0] == 0
    assert delays == sorted(delays)
    assert 0 < delays[1] <= 10 and delays[-1] == 300


def test_the_back_off_resets_only_once_a_preheated_kernel_has_waited_healthy() -> None:
    """Kernels that reach their wait and die soon after keep counting (a kill every few seconds was retried at once
    each time, since the count reset whenever a kernel had come up); one that waited HEALTHY_S resets it."""
    backoff = PoolBackoff()
    assert backoff.stopped("page") == (1, 0.0)
    backoff.waiting("page", "k2", now=100.0)
    backoff.waiting("page", "k2", now=100.0 + HEALTHY_S - 1)
    assert backoff.stopped("page") == (2, refill_delay(2))
    backoff.waiting("page", "k3", now=200.0)
    backoff.waiting("other", "k9", now=200.0 + HEALTHY_S)  # another page's kernel is healthy: not this page's
    backoff.keep_only({"k3"})
    assert backoff.stopped("page")[0] == 3
    backoff.waiting("page", "k4", now=300.0)
    backoff.waiting("page", "k4", now=300.0 + HEALTHY_S)
    assert backoff.stopped("page") == (1, 0.0)
    backoff.keep_only(set())
    assert not backoff.ready_since


def test_stopping_the_server_skips_a_kernel_that_is_already_gone() -> None:
    """shutdown_all stops the kernels it listed one by one; one that died meanwhile raised there (404) and ended the
    stop before the preheated pools were cleaned up."""
    manager = RuntoolKernelManager()

    def stop_gone_kernel() -> None:  # on a thread of its own: another test may leave this thread's loop running
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, manager._async_shutdown_kernel("0f0e5a39-gone")).result()

    manager.closing = True
    stop_gone_kernel()  # no error: nothing to stop
    manager.closing = False
    with pytest.raises(web.HTTPError, match="404"):
        stop_gone_kernel()


def test_the_idle_culling_passes_over_a_kernel_still_starting(caplog: pytest.LogCaptureFixture) -> None:
    """A kernel Jupyter lists but has not finished starting has no last activity yet: the culler logged an ERROR
    and a traceback for it (hostile review, 70 views with --cull-idle 10)."""
    manager = RuntoolKernelManager()
    manager._kernels["starting"] = ServerKernelManager()  # as Jupyter lists it before its start is over

    def cull() -> None:  # on a thread of its own, as above
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, manager.cull_kernel_if_idle("starting")).result()

    with caplog.at_level(logging.ERROR):
        cull()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "starting" in manager._kernels


@pytest.mark.parametrize("base_url", ["/a#b/", "/a?x=1/", "/a b/", "/%2e%2e/", "/../", "/a/./", "runtool/", "/a//b/"])
def test_a_base_url_that_is_not_a_plain_path_prefix_is_refused(base_url: str) -> None:
    with pytest.raises(UsageError, match="--base-url"):
        ServeOptions(base_url=base_url).validated()


@pytest.mark.parametrize("name", ["a b", "a,b", "", "host/path", "ü.example"])
def test_an_allowed_host_that_is_no_host_name_is_refused(name: str) -> None:
    """'--allowed-host "a b"' was taken without a word, and named a host no request has (hostile review)."""
    with pytest.raises(UsageError, match="--allowed-host"):
        ServeOptions(allowed_hosts=(name,)).validated()
    ServeOptions(allowed_hosts=("dashboards.example.org", "10.0.0.7", "[::1]")).validated()


@pytest.mark.parametrize("base_url", ["/", "/runtool/", "/team-a/runtool_1.2/"])
def test_a_plain_base_url_is_taken(base_url: str) -> None:
    assert ServeOptions(base_url=base_url).validated().base_url == base_url


def test_the_printed_url_is_one_the_server_answers_to() -> None:
    assert ServeOptions(ip="::1").url_host == "[::1]"  # not 127.0.0.1: another server may listen there
    assert ServeOptions(ip="localhost").url_host == "127.0.0.1"
    # On every interface: the first allowed host name, else an address (the host check takes any IP address,
    # but not this machine's name unless it is allowed).
    assert ServeOptions(ip="0.0.0.0", allowed_hosts=("runtool.example.org",)).url_host == "runtool.example.org"
    ipaddress.ip_address(ServeOptions(ip="0.0.0.0").url_host)
    ipaddress.ip_address(ServeOptions(ip="::").url_host.strip("[]"))


def get(url: str, wait_s: float = 60.0) -> tuple[int, str]:
    """The HTTP status and final URL (after redirects) of a GET, retrying while the server is not up yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), str(response.url)
        except urllib.error.HTTPError as exc:
            return exc.code, url
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def token_server(tmp_path: Path, *options: str) -> Iterator[tuple[str, str]]:
    """``runtool serve --ip 127.0.0.2 OPTIONS`` (127.0.0.2 is still this machine, but not the loopback default:
    runtool treats it as a network address): its first page's URL without the token, and the printed token."""
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).with_name("runtool")), "serve", "--ip", "127.0.0.2",
                                "--port", str(port), *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, cwd=tmp_path, env={**os.environ, "RUNTOOL_DATA_DIR": str(tmp_path)})
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"\?token=([\w-]+)", first)
        assert match, first
        yield f"http://127.0.0.2:{port}/voila/render/01_temporal_coverage.ipynb", match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_network_address_requires_the_printed_token(tmp_path: Path) -> None:
    with token_server(tmp_path) as (page, token):
        status, landed = get(f"{page}?token=wrong")
        assert status in (401, 403) or "/login" in landed, (status, landed)
        status, landed = get(f"{page}?token={token}")
        assert status == 200 and "/login" not in landed, (status, landed)


def test_a_token_file_keeps_a_servers_links_over_a_restart(tmp_path: Path) -> None:
    """Each start made a new token, so a restarted server (a reboot, a service unit's restart) broke every link its
    team had been given. ``--token-file`` keeps the token; the file is made owner-only the first time."""
    token_file = tmp_path / "token"
    tokens = []
    for _ in range(2):
        with token_server(tmp_path, "--no-preheat", "--token-file", str(token_file)) as (page, token):
            tokens.append(token)
            status, landed = get(f"{page}?token={token}")
            assert status == 200 and "/login" not in landed, (status, landed)
    assert tokens[0] == tokens[1] == token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600


def test_a_token_file_others_may_read_or_that_holds_no_token_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.write_text("a" * 32)
    shared.chmod(0o644)
    with pytest.raises(RuntoolError, match=f"may be read by others than its owner: run chmod 600 {shared}"):
        server_token(shared)
    for text in ("", "short", "has a space in it, not a token", "x" * 300):
        bad = tmp_path / "bad"
        bad.write_text(text)
        bad.chmod(0o600)
        with pytest.raises(RuntoolError, match="does not hold one token"):
            server_token(bad)
    with pytest.raises(RuntoolError, match="cannot be made: No such file or directory"):
        server_token(tmp_path / "missing" / "token")
    with pytest.raises(RuntoolError, match="cannot be read"):
        server_token(tmp_path)
    assert server_token(None) != server_token(None)


def test_the_token_file_comes_from_the_config_too(tmp_path: Path) -> None:
    config = tmp_path / "runtool.toml"
    config.write_text('[serve]\ntoken_file = "~/runtool-token"\n', encoding="utf-8")
    options = ServeOptions.from_config(load_config(config, environ={}))
    assert options.token_file == Path.home() / "runtool-token"
    overridden = ServeOptions.from_config(load_config(config, environ={}), token_file=tmp_path / "t")
    assert overridden.token_file == tmp_path / "t"
    from_env = load_config(config, environ={"RUNTOOL_SERVE_TOKEN_FILE": "/srv/runtool/token"})
    assert ServeOptions.from_config(from_env).token_file == Path("/srv/runtool/token")


def test_sigterm_right_after_start_leaves_no_voila_behind(tmp_path: Path) -> None:
    port = free_port()
    runtool = str(Path(sys.executable).with_name("runtool"))
    process = subprocess.Popen([runtool, "serve", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
                               env={**os.environ, "RUNTOOL_DATA_DIR": str(tmp_path)})
    deadline = time.monotonic() + 60
    while not voilas(port) and time.monotonic() < deadline:  # Voila is starting (not listening yet)
        time.sleep(0.05)
    started = bool(voilas(port))
    process.terminate()
    process.wait(timeout=30)
    assert started, "Voila never started"
    deadline = time.monotonic() + 20
    while voilas(port) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not voilas(port), f"voila still running: {voilas(port)}"


def voilas(port: int) -> list[int]:
    """The Voila processes serving ``port``."""
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if "voila" in " ".join(p.info["cmdline"] or []).lower() and f"--port={port}" in (p.info["cmdline"] or [])]


def test_of_two_servers_started_at_once_on_one_port_only_the_one_listening_says_serving(tmp_path: Path) -> None:
    port = free_port()
    runtool = str(Path(sys.executable).with_name("runtool"))
    # Each server's own temporary folder (Voila's connection folder goes there), short enough for the kernels' sockets.
    temps = [Path(tempfile.mkdtemp(prefix=f"rt2s{i}")) for i in range(2)]
    both = [subprocess.Popen([runtool, "serve", "--port", str(port), "--no-preheat"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**os.environ, "RUNTOOL_DATA_DIR": str(tmp_path), "TMPDIR": str(temp)})
            for temp in temps]
    try:
        # Both pass the port check; one Voila gets the port, the other exits with an error.
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in both) and time.monotonic() < deadline:
            time.sleep(0.2)
        (loser,) = [p for p in both if p.poll() is not None]
        (winner,) = [p for p in both if p is not loser]
        out, err = loser.communicate(timeout=30)
        assert loser.returncode != 0 and "Serving" not in out and "in use" in err, (out, err)
        # Voila's "trying another port" is not said (none is tried), nor its empty connection folder left.
        assert "trying another port" not in err, err
        assert not list(temps[both.index(loser)].iterdir())
        assert winner.stdout is not None and "Serving runtool at" in winner.stdout.readline()
    finally:
        for process in both:
            process.terminate()
            process.wait(timeout=30)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


def test_the_pages_load_the_configuration_the_serve_command_was_given(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    """`runtool --config FILE serve` from any folder: the page kernels (started in the notebooks' folder) read FILE."""
    from runtool.services import ServiceContainer
    from runtool.ui import CoveragePage

    config = write_toml(demo_fleet.config.with_overrides(data_dir=tmp_path / "data"), tmp_path / "elsewhere.toml")
    services = ServiceContainer.from_environment(config)
    services.inventory.refresh()
    expected = list(CoveragePage(services=services).kpis.values())
    port = free_port()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTOOL_")}
    process = subprocess.Popen([str(Path(sys.executable).with_name("runtool")), "--config", str(config), "serve",
                                "--port", str(port), "--no-preheat"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=elsewhere, env=env)
    try:
        get(f"http://127.0.0.1:{port}/voila/static/", 120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/render/01_temporal_coverage.ipynb",
                                    timeout=180) as response:
            document = response.read().decode()
        # The page's static first screen (runtool.ui.snapshot), which the page carries as HTML.
        assert re.findall(r'rts-kpi-value"><div class="widget-html-content">([^<]*)<', document) == expected
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_temporary_folder_too_long_for_the_kernels_sockets_is_a_clear_error(tmp_path: Path) -> None:
    """With a long TMPDIR every page kernel failed to bind its sockets ('File name too long', a traceback each) while
    runtool serve said it was serving, and no page ever loaded (hostile review)."""
    temp = tmp_path / ("t" * 60)
    temp.mkdir()
    runtool = str(Path(sys.executable).with_name("runtool"))
    done = subprocess.run([runtool, "serve", "--port", str(free_port()), "--no-preheat"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "RUNTOOL_DATA_DIR": str(tmp_path),
                                                       "TMPDIR": str(temp)})
    assert done.returncode == 1 and "TMPDIR" in done.stderr and "Serving" not in done.stdout, (done.stdout,
                                                                                               done.stderr)
    assert not list(temp.iterdir())
