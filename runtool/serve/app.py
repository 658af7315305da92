"""The Voila application `runtool serve` runs: Voila with the guards a shared, long-running server needs.

Run as ``python -m runtool.serve.app NOTEBOOKS [traitlets options]`` by :func:`runtool.serve.serve`. On top of
Voila 0.5 it:

- sets the ``_xsrf`` cookie on every page, so the page's "shut my kernel down" beacon on leave is accepted
  (Voila's own page sends the cookie's value, but Voila never sets the cookie: every beacon was refused);
- refuses a new page with a "server busy" page once ``max_kernels`` viewers' kernels are alive or starting, after
  making room by stopping a page no browser opened within ``ABANDONED_S`` (a tab reloaded while loading);
- accepts a kernel websocket only with the v1 subprotocol, and reads v1 message headers with bounded offsets
  (Voila reads the first 8 bytes of *any* binary message as an offset count: a legacy-protocol message made it
  allocate without bound);
- serves only the page notebooks (the report notebook and the package's code are not pages);
- answers only requests whose ``Host`` is the served address or a configured name (DNS rebinding), and lets
  only this machine read the request info a preheated kernel waits for;
- takes the token from the environment (``RUNTOOL_SERVE_TOKEN``), never from its command line;
- replaces a preheated kernel that died or was restarted before a viewer took it (a kernel restarted by Jupyter's
  restarter keeps its id but not its page: Voila would hand it to the next viewer, who got an empty page), and
  stops a viewer's kernel that died instead of letting the restarter bring it back empty;
- stops a viewer's kernel no browser ever connected to once it has been idle ``unclaimed_s`` (a tab closed or
  reloaded before its page loaded sends no leave beacon: such kernels held places under the cap for minutes);
- serves the rendered run reports (:class:`ReportsHandler`): ``runtool/reports/`` lists them, newest first (the
  pages' query, ``?cid=…&lbid=…``, narrows the list), ``runtool/reports/<cid>/…/<timestamp>/report/<name>.html``
  is one report. Behind the pages' authentication, read-only servers too (reading a report writes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

import psutil
from jupyter_core.utils import ensure_async, run_sync
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.logout import LogoutHandler as JupyterLogoutHandler
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager, ServerKernelManager
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.escape import url_escape
from tornado.ioloop import IOLoop, PeriodicCallback
from traitlets import Int, TraitError, Unicode, default
from voila.app import Voila
from voila.request_info_handler import RequestInfoSocketHandler
from voila.static_file_handler import TemplateStaticFileHandler
from voila.tornado.handler import TornadoVoilaHandler
from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler
from voila.tornado.treehandler import TornadoVoilaTreeHandler
from voila.voila_identity_provider import VoilaLoginHandler

if TYPE_CHECKING:
    from jupyter_client import KernelManager

    from runtool.models import Filters
    from runtool.services.reports import ReportFile

__all__ = [
    "REPORTS_PATH", "TOKEN_VARIABLE", "V1_PROTOCOL", "ReportsHandler", "RuntoolVoila", "allowed_host", "main",
    "v1_client_message", "v1_header", "v1_offsets",
]

TOKEN_VARIABLE = "RUNTOOL_SERVE_TOKEN"
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
BUSY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>runtool: server busy</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;color:#1f2933}}</style></head>
<body><h1>This runtool server is busy</h1>
<p>{open} pages are open, the most this server runs at once. Try again in a minute, or close a runtool tab you
no longer need.</p><p><a href="">Try again</a></p></body></html>
"""
LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>runtool: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#1f2933}}
input,button{{font:inherit;padding:.3em .6em}}.error{{color:#b42318;font-weight:600}}.note{{color:#52606d}}</style>
</head><body><h1>runtool</h1>
<p>This runtool server asks for its token. Open the link you were given again (it carries the token), or paste the
token, the part of that link after <code>token=</code>, here:</p>{error}
<form action="{action}" method="post">{xsrf}<label>Token <input type="password" name="password" autofocus
autocomplete="current-password"></label> <button type="submit">Log in</button></form>
<p class="note">Whoever runs the server has the link: <code>runtool serve</code> prints it as it starts.</p>
</body></html>
"""
REPORTS_PATH = "runtool/reports/"
"""Where the reports are served, under the base URL."""
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox")
"""A report is a static page (inline CSS, embedded images): no script runs, nothing loads from elsewhere, and the
sandbox gives it no access to this server's cookies."""
INDEX_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>runtool: reports</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;color:#1f2933}}
table{{border-collapse:collapse;display:block;max-width:100%;overflow-x:auto}}
td,th{{padding:.25em .8em;text-align:left;border-bottom:1px solid #d9e2ec;white-space:nowrap}}
code{{font-size:.9em}}.note{{color:#52606d}}</style></head>
<body><p><a href="../../">← runtool pages</a></p><h1>Run reports</h1><p class="note">{summary}</p>{body}
</body></html>
"""
_MAX_V1_PARTS = 4096
"""More parts than any kernel message has (header, parent, metadata, content and a few buffers)."""


def allowed_host(host_header: str, served_ip: str, names: frozenset[str]) -> bool:
    """Whether a request's ``Host`` header names this server.

    An IP address is allowed when it is loopback or the served address (a DNS-rebinding page reaches the
    server under the attacker's *name*, never under an address); on a server listening on every interface,
    any address is. A name must be ``localhost`` or one of ``names``.
    """
    match = re.fullmatch(r"\[?([^\]]*?)\]?(?::\d+)?", host_header.strip().lower())
    host = match.group(1) if match else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host in names
    if address.is_loopback or host == served_ip:
        return True
    return served_ip in ("0.0.0.0", "::", "")


def v1_offsets(message: bytes) -> list[int] | None:
    """The part offsets of a v1 kernel websocket message, or None when the bytes are not one.

    The offset count comes from the message itself, so it is checked against the message's length (and the
    offsets against each other) before anything is read: jupyter_server and Voila trust it.
    """
    if len(message) < 8:
        return None
    count = int.from_bytes(message[:8], "little")
    if not 2 <= count <= min(_MAX_V1_PARTS, len(message) // 8 - 1):
        return None
    offsets = [int.from_bytes(message[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    if offsets[0] != 8 * (count + 1) or offsets != sorted(offsets) or offsets[-1] > len(message):
        return None
    return offsets


def v1_header(message: bytes) -> dict[str, Any] | None:
    """The header of a v1 kernel websocket message, or None when the bytes are not one."""
    offsets = v1_offsets(message)
    if offsets is None or len(offsets) < 3:
        return None
    try:
        header = json.loads(message[offsets[1] : offsets[2]].decode("utf-8"))
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


_CLIENT_CHANNELS = (b"shell", b"control", b"stdin")
"""The channels a browser writes to (iopub only ever carries the kernel's messages)."""


def v1_client_message(message: bytes) -> bool:
    """Whether ``message`` is a kernel message a browser may send: a v1 frame whose channel is one a client writes
    to, then a header naming the message's id and type, a parent header, metadata and content, each a JSON object (any
    further parts are buffers).

    jupyter_server passes the parts to the kernel unread: a frame with fewer parts raised a TypeError with a
    traceback in the server's log, and parts that were not JSON objects made the kernel log "Invalid message".
    """
    offsets = v1_offsets(message)
    if offsets is None or len(offsets) < 6 or message[offsets[0]:offsets[1]] not in _CLIENT_CHANNELS:
        return False
    try:
        header, *others = (json.loads(message[start:end]) for start, end in itertools.pairwise(offsets[1:6]))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser's depth
        return False
    return (isinstance(header, dict) and all(isinstance(header.get(key), str) for key in ("msg_id", "msg_type"))
            and all(isinstance(part, dict) for part in others))


class _HostCheck:
    """Refuses (403) a request whose ``Host`` does not name this server; mixed into every handler."""

    request: Any
    settings: dict[str, Any]
    set_status: Any
    finish: Any

    def prepare(self) -> Awaitable[None] | None:
        policy = self.settings["runtool_hosts"]
        if not allowed_host(self.request.host or "", *policy):
            # Answered here, not raised: Jupyter's error page needs a user, and no user is known yet.
            self.set_status(403)
            self.finish("This server does not answer to that host name.")
            return None
        return super().prepare()  # type: ignore[misc]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Jupyter's error page, or a short one where that cannot be drawn: a request refused before its user is
        known (a URL that is not UTF-8, say) made Jupyter's page raise, and each such request logged a traceback."""
        try:
            super().write_error(status_code, **kwargs)  # type: ignore[misc]
        except Exception:
            if not self._finished:  # type: ignore[attr-defined]
                self.clear()  # type: ignore[attr-defined]
                self.set_status(status_code)
                self.finish(f"{status_code}: {html.escape(self._reason)}")  # type: ignore[attr-defined]


class PageHandler(TornadoVoilaHandler):
    """A page: "server busy" past the kernel cap; the ``_xsrf`` cookie the leave beacon needs."""

    @web.authenticated
    async def get(self, path: str | None = None) -> None:
        app: RuntoolVoila = self.settings["runtool_app"]
        if path not in app.page_names:
            raise web.HTTPError(404)
        open_ = app.open_viewers()
        if open_ >= app.max_kernels and await app.make_room():
            open_ = app.open_viewers()
        if open_ >= app.max_kernels:
            self.log.warning("server busy: %d viewer kernels, the cap is %d", open_, app.max_kernels)
            self.set_status(503)
            self.set_header("Retry-After", "30")
            self.set_header("Cache-Control", "no-store")
            self.finish(BUSY_PAGE.format(open=open_))
            return
        self.xsrf_token  # noqa: B018 - sets the _xsrf cookie before the first byte of the page is sent
        self.runtool_page = path
        self.runtool_starts_kernel = False
        app.seats.append(self)  # counted under the cap until its kernel is
        try:
            await super().get(path)
        finally:
            app.release_seat(self)

    def should_use_rendered_notebook(self, notebook_data: dict[str, Any], pool_size: int, template_name: str,
                                     theme: str, request_args: dict[str, Any]) -> bool:
        """Only a preheated kernel that is ready is handed to the viewer. Voila would hand over a refill still
        starting (or one whose pool is backing off): the viewer waited for it, and its kernel counted nowhere.
        The query's ``template`` and ``theme`` are not compared: a viewer cannot pick either (see initialize), but
        Voila compared them anyway, and any value made the viewer wait for a kernel of their own."""
        app: RuntoolVoila = self.settings["runtool_app"]
        kernel_id = app.ready_pool_kernel(self.runtool_page)
        if kernel_id is None or not super().should_use_rendered_notebook(
                notebook_data, pool_size, None, None, request_args):
            self.runtool_starts_kernel = True
            return False
        app.hand_over(kernel_id, self)
        return True


class KernelWebsocketHandler(VoilaKernelWebsocketHandler):
    """The kernel channel: v1 subprotocol only; a frame that is not a well-formed v1 message closes it."""

    async def get(self, kernel_id: str) -> None:
        offered = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if V1_PROTOCOL not in offered:
            self.set_status(400)
            self.finish(f"This server speaks only the {V1_PROTOCOL} kernel protocol.")
            return
        await super().get(kernel_id)

    async def pre_get(self) -> None:
        await super().pre_get()
        if self.connection is None:
            # The browser closed the channel while it was set up (its page left as Voila connected): jupyter_server
            # went on to pick a subprotocol on the closed channel and logged a 500 with a traceback.
            raise web.Finish()

    async def open(self, kernel_id: str) -> None:
        """The channel is open (the browser authenticated and loaded the page): the kernel is claimed."""
        self.settings["runtool_app"].kernel_claimed(kernel_id)
        await super().open(kernel_id)

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) or not v1_client_message(message):
            self.log.warning("closing kernel websocket %s: a frame that is not a v1 kernel message", self.kernel_id)
            self.close(code=1003, reason="not a v1 kernel message")
            return
        super().on_message(message)

    def write_message(self, message: bytes | str | dict[str, Any], binary: bool = False) -> Any:
        if self.ws_connection is None:
            # The channel closed: jupyter_server then takes the kernel's next messages for its legacy protocol,
            # fails to send them and logs the empty error of each as a blank WARNING line.
            return None
        header = v1_header(message) if isinstance(message, bytes) else None
        if header is not None and header.get("msg_type") == "execute_input":
            return None  # Voila does not show the page's code
        return super(VoilaKernelWebsocketHandler, self).write_message(message, binary)


class RequestInfoHandler(RequestInfoSocketHandler):
    """The request info a preheated kernel waits for: only this machine may read it, and it is kept once."""

    settings: dict[str, Any]

    def prepare(self) -> None:
        remote = self.request.remote_ip or ""
        if not (_is_loopback(remote) or remote == self.settings["runtool_hosts"][0]):
            raise web.HTTPError(403, "local kernels only")

    def open(self, kernel_id: str) -> None:
        super().open(kernel_id)
        # Voila keeps every request's info forever; a server that runs for weeks must not.
        RequestInfoSocketHandler._cache.pop(kernel_id, None)

    def on_close(self) -> None:
        # Voila's own on_close removes the last waiter when this one is not found.
        for kernel_id, waiter in list(RequestInfoSocketHandler._waiters.items()):
            if waiter is self:
                del RequestInfoSocketHandler._waiters[kernel_id]


class TemplateStaticHandler(TemplateStaticFileHandler):
    """A template's static files: a path that is not ``<template>/static/<file>`` is not found (Voila's own handler
    failed on it with an error 500 and a traceback in the log)."""

    def parse_url_path(self, url_path: str) -> str:
        parts, normal = url_path.split("/", 2), os.path.normpath(url_path).split(os.path.sep, 2)
        if len(parts) != 3 or parts[1] != "static" or normal[:2] != parts[:2]:
            raise web.HTTPError(404)
        return str(super().parse_url_path(url_path))


class FirstPageHandler(web.RequestHandler):
    """The server's root and folder listing: straight to the first page (the folder holds code, not pages)."""

    settings: dict[str, Any]

    def initialize(self, **_: Any) -> None:
        """Takes (and ignores) the options Voila gives the folder listing it replaces."""

    def get(self, path: str = "") -> None:
        app: RuntoolVoila = self.settings["runtool_app"]
        self.redirect(f"{app.base_url}voila/render/{app.page_names[0]}")


class LoginHandler(VoilaLoginHandler):
    """The login form of a token server, in runtool's words (Jupyter's told a viewer to run ``jupyter server list``
    and offered to set a password, which failed with an error 500)."""

    def _render(self, message: dict[str, str] | None = None) -> None:
        error = '<p class="error">That is not this server\'s token: check that you copied all of it.</p>'
        action = f"{self.base_url}login?next={url_escape(self.get_argument('next', default=self.base_url))}"
        self.finish(LOGIN_PAGE.format(action=html.escape(action, quote=True), xsrf=self.xsrf_form_html(),
                                      error=error if message else ""))


class LogoutHandler(JupyterLogoutHandler):
    """``/logout``: the login cookie cleared, then on to the login form (a token server) or the first page. Jupyter's
    logout page needs settings Voila does not have: every GET of it was an error 500 and a traceback in the log."""

    @allow_unauthenticated
    def get(self) -> None:
        self.identity_provider.clear_login_cookie(self)
        self.redirect(url_path_join(self.base_url, "login") if self.login_available else self.base_url)


class ReportsHandler(JupyterHandler):
    """The rendered reports: an index (``path`` empty) or one report page, read from the processed folder.

    Authenticated as the pages are (a token-protected server protects its reports). Only what
    :func:`runtool.services.reports.find_report` accepts is served: a ``.html`` file in a run's report folder,
    inside the processed root after symlinks; anything else is not found.
    """

    @property
    def content_security_policy(self) -> str:
        return REPORT_CSP

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-cache")  # a report rendered again keeps its name
        self.set_header("Referrer-Policy", "same-origin")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A short page saying what went wrong (Jupyter's error template needs settings Voila does not have)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f"<!doctype html><title>{status_code}</title><p>{html.escape(str(reason))} "
                    f'(<a href="{html.escape(self.base_url, quote=True)}{REPORTS_PATH}">all reports</a>)</p>')

    @web.authenticated
    async def get(self, path: str = "") -> None:
        from runtool.config import ConfigError, load_config
        from runtool.models import CoordinateError
        from runtool.services.reports import find_report, list_reports
        from runtool.ui.query import query_parameters, strict_selection

        try:
            root = load_config().processed_root
        except ConfigError as exc:
            self.log.error("reports: %s", exc)
            raise web.HTTPError(500, "runtool's configuration cannot be read") from exc
        loop = IOLoop.current()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        if not path:
            # Read as the pages read their links: a parameter given twice keeps its first value.
            try:
                selection = strict_selection(self.request.query)
            except CoordinateError as exc:
                raise web.HTTPError(400, f"not a selection: {exc}") from exc
            page = query_parameters(self.request.query).get("page", "1")
            if not (page.isascii() and page.isdigit()) or not 0 < int(page) < 1_000_000:  # not '²', '١'
                raise web.HTTPError(400, f"not a page number: {page[:20]!r}")
            # Off the server's loop: the listing walks every run folder the selection matches.
            reports = await loop.run_in_executor(None, list_reports, root, selection)
            self.finish(_index_page(selection, reports, int(page), selection.to_dict()))
            return
        report = await loop.run_in_executor(None, find_report, root, path)
        if report is None:
            raise web.HTTPError(404)
        try:
            content = await loop.run_in_executor(None, report.read_bytes)
        except OSError as exc:
            raise web.HTTPError(404) from exc
        self.finish(content)


REPORTS_PER_PAGE = 200
"""Reports listed on one page of the index (a fleet's reports run to thousands)."""


def _index_page(selection: Filters, reports: list[ReportFile], page: int = 1, query: dict[str, str] | None = None,
                per_page: int = REPORTS_PER_PAGE) -> str:
    """One page of the reports list (``page`` past the last shows the last): run (a link to its page), run start,
    rendered (UTC) and a link relative to ``runtool/reports/``; links to the pages before and after keep the
    selection ``query``."""
    from runtool.ui.query import run_url

    pages = max(1, -(-len(reports) // per_page))
    page = min(page, pages)
    shown = reports[(page - 1) * per_page: page * per_page]
    rows = "".join(
        # The run opens on its page: the pages are at <base>voila/render/, this list at <base>runtool/reports/.
        f'<tr><td><a href="../../voila/render/{escape(run_url(report.coordinate), quote=True)}" '
        f'title="Open the run on the per-run page"><code>{escape(str(report.coordinate))}</code></a></td>'
        f"<td>{report.coordinate.start_time:%Y-%m-%d %H:%M}</td>"
        f"<td>{report.modified:%Y-%m-%d %H:%M}</td>"
        f'<td><a href="{escape(urllib.parse.quote(report.relative), quote=True)}">{escape(report.path.name)}</a>'
        "</td></tr>"
        for report in shown
    )
    where = f" under {escape(selection.describe())}" if not selection.is_empty() else ""
    noun = "report" if len(reports) == 1 else "reports"
    summary = f"{len(reports):,} {noun}{where}, newest first; times in UTC."
    if pages > 1:
        def link(number: int, text: str) -> str:
            target = urllib.parse.urlencode({**(query or {}), "page": number})
            return f'<a href="?{escape(target, quote=True)}">{text}</a>'

        around = [link(page - 1, "← newer")] if page > 1 else []
        around += [link(page + 1, "older →")] if page < pages else []
        first = (page - 1) * per_page + 1
        summary += (f" Page {page:,} of {pages:,} (reports {first:,}–{first + len(shown) - 1:,}) "
                    + " · ".join(around))
    body = (
        "<table><thead><tr><th>Run</th><th>Run start</th><th>Rendered</th><th>Report</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if reports else "<p>No reports yet: render one with the Report button on a run's page, or with "
                        "<code>runtool report COORD</code>.</p>"
    )
    return INDEX_PAGE.format(summary=summary, body=body)


class _ExpectedNoise(logging.Filter):
    """Drops the lines Jupyter and Voila log for what this server expects and reports in one line of its own.

    - "Notebook … is not trusted", on every page view: trust is about showing a notebook's saved outputs, and
      Voila shows only the outputs it computes itself;
    - a page kernel that died: nbclient's "Kernel died while waiting for execute reply", Voila's "Error at server
      while executing cell" with the whole cell and a DeadKernelError traceback, the restarter's "restart failed"
      and the kernel channel's "restarted failed!" (this server never restarts a page kernel), "Kernel … died,
      removing from map" and, for one that died as it started, "Error occurred while starting new kernel client
      … Kernel died before replying" (:meth:`RuntoolVoila.kernel_lost` says which kernel, whose, and what next);
    - "Could not destroy zmq context", from the client of a kernel that is gone, and pyzmq's "Got events for
      closed stream" (on ``tornado.general``), a kernel's late message for a channel closed as its viewer left;
    - Tornado's "The websocket_ping_timeout (90000) cannot be longer than the websocket_ping_interval (30000)" on
      the first kernel channel: jupyter_server gives Tornado its own ping settings, which are milliseconds, where
      Tornado reads seconds; jupyter_server does the pinging itself, so the line is about a ping never sent;
    - Voila's "Voilà is running at: …", whose address is the machine's name on a served address (refused by the
      host check; ``runtool serve`` prints the address to open). "The port … is already in use, trying another
      port." loses its end: ``runtool serve`` tries no other port.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(("Notebook %s is not trusted", "Kernel died while waiting for execute reply",
                               "Kernel %s died, removing from map", "Could not destroy zmq context",
                               "The websocket_ping_timeout", "Got events for closed stream",
                               "Voilà is running at:")):
            return False
        if message.endswith(" is already in use, trying another port."):
            record.msg = message.removesuffix(", trying another port.") + "."
        if message.endswith("KernelRestarter: restart failed") or message == "kernel %s restarted failed!" or (
                message.startswith("Error occurred while starting new kernel client") and "Kernel died" in message):
            return False
        error = type(record.exc_info[1]).__name__ if record.exc_info else ""
        return not (message.startswith("Error at server while executing cell") and error == "DeadKernelError")


def _retrieve_error(task: asyncio.Future[Any]) -> None:
    """Marks a finished task's error as seen (asyncio would log "Task exception was never retrieved" for it)."""
    if not task.cancelled():
        task.exception()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class PageKernelManager(ServerKernelManager):
    """One page's kernel: stopped without being interrupted first. Jupyter interrupts a kernel before it stops it,
    and a page kernel between two messages then logged "ERROR | KeyboardInterrupt caught in kernel." (a viewer
    closing the tab as the page drew: 19 of 40 closes); the stop itself ends whatever the kernel was doing."""

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
        """Killed at once, not asked to shut down (unless restarting): asked, a kernel culled or left by its viewer
        sometimes published its last status on a socket it had just closed, and logged "ERROR … Uncaught exception in
        ZMQStream callback" with a ZMQError traceback (the culling browser test, once in a clean-clone run). A page's
        kernel holds nothing to save, as :meth:`RuntoolKernelManager.shutdown_all` says."""
        await super().shutdown_kernel(now or not restart, restart)


class RuntoolKernelManager(AsyncMappingKernelManager):
    """Jupyter's kernel manager, telling the app when a preheated kernel restarts or dies (Voila does not look),
    and which kernels are on their way out (a viewer who left frees a place at once, not seconds later)."""

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return f"{PageKernelManager.__module__}.{PageKernelManager.__qualname__}"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopping: set[str] = set()
        self.closing = False
        self.viewers_starting: set[str] = set()
        """Viewers' kernels being started: requests at the same moment must count them."""
        self.pool_started: set[str] = set()
        """Preheated kernels not handed to a viewer yet (starting, rendering or waiting): not viewers'."""

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if kernel_id not in self or kernel_id in self.stopping:  # a viewer who just left: gone already
            return
        kernel: Any = self.get_kernel(kernel_id)
        try:
            kernel.last_activity  # noqa: B018 (read to see whether it is set)
        except TraitError:  # listed, but Jupyter has not finished starting it: it logged a traceback
            return
        await super().cull_kernel_if_idle(kernel_id)

    async def shutdown_all(self, now: bool = True) -> None:  # type: ignore[override]
        """Stop every kernel as the server stops: killed, by default. A preheated kernel is mid-cell (waiting for its
        viewer), and asked to shut down it dies with a ZMQ traceback per kernel in the server's log; a page's
        kernel holds nothing to save (its downloads keep their temporary files out of the final paths)."""
        self.closing = now
        for pool in getattr(self, "_pools", {}).values():
            for task in pool:
                if task.done() and not task.cancelled() and task.exception() is None:
                    # The page being rendered in the kernel fails as the kernel stops: expected, not logged.
                    task.result()["task"].add_done_callback(_retrieve_error)
        await ensure_async(super().shutdown_all(now=now))

    async def shutdown_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.closing:  # the pools' kernels still starting are stopped after shutdown_all, one by one
            if kernel_id not in self:
                return  # stopped meanwhile (a viewer left as the server stopped)
            kwargs["now"] = True
            args = ()
        self.stopping.add(kernel_id)
        try:
            await ensure_async(super().shutdown_kernel(kernel_id, *args, **kwargs))
        finally:
            self.stopping.discard(kernel_id)
            self.pool_started.discard(kernel_id)

    async def _async_shutdown_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> None:
        # shutdown_all stops the kernels it listed through this, past shutdown_kernel: one that died meanwhile
        # raised a 404 there, which ended the stop before the pools were cleaned up. One still starting is
        # stopped once started (skipped, it wrote its connection file after the server had gone).
        if self.closing and kernel_id not in self and kernel_id not in self._pending_kernels:
            return
        try:
            await super()._async_shutdown_kernel(kernel_id, *args, **kwargs)
        except (KeyError, web.HTTPError):
            if not self.closing:
                raise

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        # A page kernel keeps no IPython history: dozens of kernels writing one history database lock it, and each
        # then printed "The history saving thread hit an unexpected error (database is locked)" onto its page.
        kwargs["extra_arguments"] = [*kwargs.get("extra_arguments", []), "--HistoryManager.enabled=False"]
        viewer = (kwargs.get("env") or {}).get("VOILA_PREHEAT") == "False"  # Voila's mark of a viewer's own kernel
        # The id is chosen here so the kernel is counted as what it is from its first moment (Jupyter lists it
        # before it has started).
        kernel_id: str = kwargs.setdefault("kernel_id", str(uuid.uuid4()))
        if self.closing:  # a pool's refill as the server stops: it would outlive the server
            raise RuntimeError("the server is stopping")
        app = self.parent
        if viewer:
            self.viewers_starting.add(kernel_id)
            if isinstance(app, RuntoolVoila):
                app.seat_becomes_kernel()
        else:
            self.pool_started.add(kernel_id)
        try:
            kernel_id = await super().start_kernel(*args, **kwargs)
        except BaseException:
            self.pool_started.discard(kernel_id)
            raise
        finally:
            self.viewers_starting.discard(kernel_id)
        if isinstance(app, RuntoolVoila):
            kernel = self.get_kernel(kernel_id)
            kernel.add_restart_callback(lambda: app.kernel_lost(kernel_id), "restart")
            kernel.add_restart_callback(lambda: app.kernel_lost(kernel_id, kernel), "dead")
        return kernel_id


def _alive(manager: Any, kernel_id: str) -> bool:
    """Whether the kernel's process still runs: Jupyter notices a dead one only at its next poll, seconds later."""
    process = getattr(getattr(manager.get_kernel(kernel_id), "provisioner", None), "process", None)
    return process is None or process.poll() is None


def refill_delay(failures: int) -> float:
    """Seconds before a pool replaces a page's preheated kernel after ``failures`` stopped in a row: at once for
    one (a kernel killed or lost), then doubling from 10 s up to 5 minutes. A page that fails as it loads (a broken
    install, a bad notebook) would otherwise start a kernel every few seconds for as long as the server runs."""
    return 0.0 if failures <= 1 else float(min(300, 10 * 2 ** (failures - 2)))


HEALTHY_S = 60
"""A page whose preheated kernel has waited this long for a viewer preheats fine: its pool's back-off resets."""


class PoolBackoff:
    """Per page, how many preheated kernels stopped in a row, and so how long its pool waits before a refill.

    The count resets only once one of the page's kernels has waited ``healthy_s`` for a viewer: a kernel that
    reaches its wait and dies soon after (a page that fails later, a kernel killed again and again) keeps counting.
    """

    def __init__(self, healthy_s: float = HEALTHY_S) -> None:
        self.healthy_s = healthy_s
        self.failures: dict[str, int] = {}
        self.ready_since: dict[str, float] = {}
        """When each waiting preheated kernel was first seen ready."""

    def waiting(self, page: str, kernel_id: str, now: float) -> None:
        """``page``'s preheated kernel ``kernel_id`` is seen waiting for a viewer at ``now`` (seconds)."""
        if now - self.ready_since.setdefault(kernel_id, now) >= self.healthy_s:
            self.failures.pop(page, None)

    def stopped(self, page: str) -> tuple[int, float]:
        """A preheated kernel of ``page`` stopped before a viewer took it: (stopped in a row, refill delay in s)."""
        failures = self.failures[page] = self.failures.get(page, 0) + 1
        return failures, refill_delay(failures)

    def keep_only(self, waiting: set[str]) -> None:
        """Forget the kernels no longer waiting (taken by a viewer, or stopped)."""
        for kernel_id in set(self.ready_since) - waiting:
            del self.ready_since[kernel_id]


ABANDONED_S = 60
"""At the kernel cap, a page kernel no browser connected to is stopped for a new viewer once idle this long. Not
shorter: on a busy server a browser still loading its page can take most of a minute to connect."""

_REPLACED: dict[type, type] = {
    TornadoVoilaHandler: PageHandler,
    TornadoVoilaTreeHandler: FirstPageHandler,
    VoilaKernelWebsocketHandler: KernelWebsocketHandler,
    RequestInfoSocketHandler: RequestInfoHandler,
    TemplateStaticFileHandler: TemplateStaticHandler,
    VoilaLoginHandler: LoginHandler,
    JupyterLogoutHandler: LogoutHandler,
}


class RuntoolVoila(Voila):
    """Voila plus the guards in the module docstring; options are traitlets (``--RuntoolVoila.max_kernels=8``)."""

    max_kernels = Int(8, config=True, help="Most viewers' kernels alive at once; past it a page says busy.")
    allowed_hosts = Unicode("", config=True, help="Host names (besides localhost) this server answers to, by commas.")
    pages = Unicode("", config=True, help="The notebooks served as pages, by commas; any other file is not found.")
    pool_size = Int(1, config=True, help="Preheated kernels kept ready per page.")
    pool_check_s = Int(10, config=True, help="How often dead preheated kernels are looked for, in seconds.")
    unclaimed_s = Int(180, config=True, help="A viewer's kernel no browser ever connected to is stopped once idle "
                                            "this long (the viewer left before the page loaded).")

    def initialize(self, argv: list[str] | None = None) -> None:
        token = os.environ.pop(TOKEN_VARIABLE, None)
        super().initialize(argv)
        self.log.addFilter(_ExpectedNoise())
        logging.getLogger("tornado.general").addFilter(_ExpectedNoise())
        if token is not None:
            self.token = token
        # Jupyter's login form let whoever had the token set a password, written into a config file: with Voila's
        # settings that was an error 500 (no config folder), and it would outlast the server's token.
        self.config.PasswordIdentityProvider.allow_password_change = False
        self.page_names = [name for name in self.pages.split(",") if name]
        served_ip = self.ip or ""
        names = frozenset(name.strip().lower() for name in self.allowed_hosts.split(",") if name.strip())
        settings: dict[str, Any] = dict(self.tornado_settings)  # type: ignore[has-type]
        self.tornado_settings = {**settings, "runtool_app": self, "runtool_hosts": (served_ip, names)}
        # Only the pages get preheated kernels (the folder also holds the report notebook).
        self.config.VoilaKernelManager.kernel_pools_config = {
            "default": {"pool_size": 0},
            **{name: {"pool_size": self.pool_size} for name in self.page_names},
        }
        self.voila_configuration.file_allowlist = []
        # What a page says when its kernel stopped while the page was drawn (Voila's words told the viewer to run
        # Voila with --show_tracebacks).
        self.config.VoilaExecutor.cell_error_instruction = (
            "The page stopped while it was being drawn (its session ended, or the server is stopping). Reload the "
            "page; if this happens again, the server's log says why.")
        # A viewer's URL cannot pick another theme or template: Voila printed ``?theme=`` into the page unescaped (a
        # link ran its script on this server as the viewer), and ``?template=reveal`` ran the page through a path
        # that reset Voila's SIGTERM handling and loaded scripts from CDNs.
        self.voila_configuration.allow_theme_override = "NO"
        self.voila_configuration.allow_template_override = "NO"
        # A closed terminal or a dropped SSH session (SIGHUP) stops the server as SIGTERM does: kernels stopped,
        # their connection files removed (by default it killed Voila on the spot and left them).
        signal.signal(signal.SIGHUP, self._handle_signal_stop)
        # A page kernel that dies is not restarted: a restarted one is empty (its page gone), so Jupyter reports it
        # dead at once and drops it; a viewer's page says the session ended, a pool refills (see kernel_lost).
        self.config.KernelRestarter.restart_limit = 0
        # Kernels talk to the server over Unix sockets in Voila's private connection folder, not loopback TCP ports
        # any local user can reach (each kernel also logged a plain-text TCP warning as it started).
        self.config.KernelManager.transport = "ipc"
        self.voila_configuration.multi_kernel_manager_class = RuntoolKernelManager
        self.lost_pool_kernels: set[str] = set()
        self.backoff = PoolBackoff()
        """Per page, its preheated kernels that stopped in a row (a page that fails as it loads backs off)."""
        self.claimed_kernels: set[str] = set()
        """Kernels a browser has connected to (their page loaded)."""
        self.unpooled_kernels: set[str] = set()
        """Kernels still to be stopped: preheated ones replaced in their pool, viewers' ones that died."""
        self.seats: list[PageHandler] = []
        """Page requests let in under the cap whose kernel is not counted yet."""
        # A preheated kernel fetches its request's info from this server: at an address the server listens on.
        os.environ["VOILA_APP_IP"] = "127.0.0.1" if served_ip in ("0.0.0.0", "::", "") else served_ip

    def init_handlers(self) -> list[Any]:
        handlers = []
        reports: list[Any] = [
            (url_path_join(self.server_url, REPORTS_PATH.rstrip("/")), web.RedirectHandler,
             {"url": url_path_join(self.server_url, REPORTS_PATH)}),
            (url_path_join(self.server_url, REPORTS_PATH), ReportsHandler),
            (url_path_join(self.server_url, REPORTS_PATH, "(.+)"), ReportsHandler),
        ]
        for pattern, handler, *kwargs in [*reports, *super().init_handlers()]:
            if pattern in ("/login", "/logout"):
                # Jupyter mounts them at the root, outside --base-url: behind a proxy that forwards only the prefix
                # they were out of reach, and the login form (which posts to <base>/login) was not found.
                pattern = url_path_join(self.server_url, pattern)
            guarded = type(handler.__name__, (_HostCheck, _REPLACED.get(handler, handler)), {})
            handlers.append((pattern, guarded, *kwargs))
        return handlers

    def start(self) -> None:
        connections = os.environ.get("RUNTOOL_SERVE_CONNECTIONS")
        if connections:  # runtool serve's folder for the connection folder (it removes it once Voila has exited)
            os.mkdir(connections, 0o700)  # an error if the name was taken
            self.connection_dir_root = connections
        PeriodicCallback(self._replace_dead_pool_kernels, self.pool_check_s * 1000).start()
        PeriodicCallback(self._stop_unclaimed_kernels, max(1, min(10, self.unclaimed_s // 3)) * 1000).start()
        super().start()

    def listen(self) -> None:
        try:
            super().listen()
        except SystemExit:  # no port: Voila exits, and left its new connection folder behind
            self._remove_connection_dir()
            raise

    def stop(self) -> None:
        """Stop every kernel, then remove the connection folder.

        Voila removed the folder first: a kernel still booting then wrote its connection file (its key) into a new
        folder of that name, or failed to bind its sockets and lived on. A kernel still starting is not among those
        Jupyter stops, so every process this server started and still has is killed before the folder goes.
        """
        run_sync(self.kernel_manager.shutdown_all)()
        left = psutil.Process().children(recursive=True)
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(left, timeout=10)
        self._remove_connection_dir()

    def _remove_connection_dir(self) -> None:
        """Remove the connection folder, and the folder `runtool serve` made for it (its own name) once empty: a
        runtool serve killed outright cannot.
        (``RUNTOOL_SERVE_CONNECTIONS``, :data:`runtool.serve.CONNECTIONS_VARIABLE`)."""
        shutil.rmtree(self.connection_dir, ignore_errors=True)
        root = os.path.dirname(self.connection_dir)
        if root == os.environ.get("RUNTOOL_SERVE_CONNECTIONS"):
            with contextlib.suppress(OSError):
                os.rmdir(root)

    def kernel_claimed(self, kernel_id: str) -> None:
        """A browser opened the kernel's channel: the page loaded, so the leave beacon or culling ends it."""
        self.claimed_kernels.add(kernel_id)

    async def _stop_unclaimed_kernels(self) -> None:
        """Stop viewers' kernels no browser connected to, idle for ``unclaimed_s`` since their page was rendered.

        A tab closed (or reloaded) before its page loaded never sends the leave beacon; without this its kernel
        would hold a place under the cap until the idle culling, minutes later.
        """
        self.claimed_kernels &= set(self.kernel_manager.list_kernel_ids())
        for idle_s, kernel_id in self._unclaimed_idle(self.unclaimed_s):
            await self._stop_unclaimed(kernel_id, f"its page was never opened in a browser (idle {idle_s:.0f} s)")

    async def make_room(self) -> bool:
        """At the cap, stop the kernel of the oldest page no browser has opened for ``ABANDONED_S`` idle (a tab
        reloaded or closed while loading: one viewer pressing F5 held every place for minutes); whether one went.

        A page still loading in a slow browser is younger than that, or the server is not at its cap.
        """
        idle = self._unclaimed_idle(ABANDONED_S)
        if not idle:
            return False
        idle_s, kernel_id = max(idle)
        await self._stop_unclaimed(kernel_id, f"its page was never opened in a browser (idle {idle_s:.0f} s); "
                                              "a new viewer needs its place")
        return True

    def _unclaimed_idle(self, at_least_s: float) -> list[tuple[float, str]]:
        """(seconds idle, id) of the viewers' kernels no browser connected to, idle at least ``at_least_s``."""
        manager = self.kernel_manager
        now = datetime.now(UTC)
        idle = []
        for kernel_id in self.viewer_kernels() - self.claimed_kernels:
            try:
                kernel = manager.get_kernel(kernel_id)
            except KeyError:  # stopped meanwhile (its viewer left, the culling, a shutdown)
                continue
            try:
                idle_s = (now - kernel.last_activity).total_seconds()
            except TraitError:  # listed, but Jupyter has not finished starting it
                continue
            if kernel.execution_state == "idle" and idle_s >= at_least_s:
                idle.append((idle_s, kernel_id))
        return idle

    async def _stop_unclaimed(self, kernel_id: str, why: str) -> None:
        self.log.info("stopping kernel %s: %s", kernel_id, why)
        try:
            await ensure_async(self.kernel_manager.shutdown_kernel(kernel_id, now=True))
        except KeyError:
            pass  # another path stopped it first: gone either way
        except Exception:  # retried at the next check
            self.log.warning("could not stop the unclaimed kernel %s yet", kernel_id, exc_info=True)

    def ready_pool_kernel(self, page: str) -> str | None:
        """The id of a preheated kernel of ``page`` ready for a viewer, its pool entry moved first (Voila takes the
        first); None if none is ready."""
        manager = self.kernel_manager
        pool = getattr(manager, "_pools", {}).get(page, [])
        for task in pool:
            if task.done() and not task.cancelled() and task.exception() is None:
                kernel_id: str = task.result()["kernel_id"]
                # Still waiting for its viewer: its page's render not ended (the page failed, or the kernel died
                # and Jupyter has not noticed yet), its process running.
                waiting = not task.result()["task"].done()
                if (waiting and kernel_id in manager and kernel_id not in self.lost_pool_kernels
                        and _alive(manager, kernel_id)):
                    pool.remove(task)
                    pool.insert(0, task)
                    return kernel_id
        return None

    def hand_over(self, kernel_id: str, request: PageHandler) -> None:
        """A preheated kernel becomes ``request``'s viewer's: counted as a viewer's from now on, in its seat's place."""
        getattr(self.kernel_manager, "pool_started", set()).discard(kernel_id)
        self.release_seat(request)

    def seat_becomes_kernel(self) -> None:
        """A viewer's kernel starts: it takes the place of the oldest request that is starting one."""
        for request in self.seats:
            if getattr(request, "runtool_starts_kernel", False):
                self.seats.remove(request)
                return

    def release_seat(self, request: PageHandler) -> None:
        if request in self.seats:
            self.seats.remove(request)

    def pooled_kernels(self) -> set[str]:
        """The preheated kernels waiting for a viewer."""
        ids = set()
        for pool in getattr(self.kernel_manager, "_pools", {}).values():
            for task in pool:
                if task.done() and not task.cancelled() and task.exception() is None:
                    ids.add(task.result()["kernel_id"])
        return ids

    def viewer_kernels(self) -> set[str]:
        """The kernels viewers hold (every listed kernel but the preheated ones and those being shut down)."""
        manager = self.kernel_manager
        not_viewers = getattr(manager, "stopping", set()) | getattr(manager, "pool_started", set())
        return set(manager.list_kernel_ids()) - not_viewers - self.pooled_kernels()

    def open_viewers(self) -> int:
        """What the cap counts: viewers' kernels alive or being started, and requests let in still without one."""
        starting: set[str] = getattr(self.kernel_manager, "viewers_starting", set())
        return len(self.viewer_kernels() | starting) + len(self.seats)

    def kernel_lost(self, kernel_id: str, dead: KernelManager | None = None) -> None:
        """Called when a kernel died (or restarted, had Jupyter been allowed to). A preheated one no viewer has yet is
        replaced at once. A viewer's is stopped: the viewer's page already says the session ended (a restarted one
        is empty and would hold a place under the cap until the idle culling). A dead one's connection file and
        sockets are removed (Jupyter drops it from its list without)."""
        if dead is not None:
            dead.cleanup_connection_file()
            dead.cleanup_ipc_files()
        pool_started: set[str] = getattr(self.kernel_manager, "pool_started", set())
        if kernel_id in pool_started or kernel_id in self.pooled_kernels():
            self.lost_pool_kernels.add(kernel_id)
            if dead is not None:
                pool_started.discard(kernel_id)
        else:
            self.log.warning("the kernel %s of a viewer stopped; it is not restarted", kernel_id)
            self.unpooled_kernels.add(kernel_id)
        IOLoop.current().add_callback(self._replace_dead_pool_kernels)
        # Had Jupyter restarted it (a user's own KernelRestarter settings), it can be stopped once that is over.
        IOLoop.current().call_later(5, self._replace_dead_pool_kernels)

    async def _replace_dead_pool_kernels(self) -> None:
        """Drop a preheated kernel whose page stopped or was lost before a viewer came, and refill its pool; stop
        the kernels marked to be stopped."""
        manager = self.kernel_manager
        stopped = []
        for notebook, pool in list(getattr(manager, "_pools", {}).items()):
            for task in list(pool):
                if not task.done() or task not in pool:  # (this runs both periodically and on a restart)
                    continue
                content = None if task.cancelled() or task.exception() else task.result()
                kernel_id = content["kernel_id"] if content else None
                if content is not None and not content["task"].done() and kernel_id not in self.lost_pool_kernels:
                    self.backoff.waiting(notebook, content["kernel_id"], time.monotonic())
                    continue
                pool.remove(task)
                failures, delay = self.backoff.stopped(notebook)
                self.log.warning("preheated kernel %s of %s stopped (%d in a row); replacing it%s", kernel_id,
                                 notebook, failures, f" in {delay:.0f} s" if delay else "")
                if content is not None:  # its page was being rendered by a kernel that is gone
                    render = content["task"]
                    render.add_done_callback(_retrieve_error)
                    render.cancel()
                manager.fill_if_needed(delay=delay, notebook_name=notebook)
                if kernel_id is not None:
                    stopped.append(kernel_id)
        # A lost kernel a viewer had already taken is the viewer's (the page says the session ended).
        self.lost_pool_kernels &= self.pooled_kernels()
        self.backoff.keep_only(self.pooled_kernels())
        self.unpooled_kernels.update(stopped)
        for kernel_id in list(self.unpooled_kernels):
            await self._shut_down(kernel_id)

    async def _shut_down(self, kernel_id: str) -> None:
        """Stops a replaced preheated kernel; one Jupyter is restarting is stopped once the restart is over."""
        manager = self.kernel_manager
        if kernel_id not in manager:
            self.unpooled_kernels.discard(kernel_id)
            return
        if not manager.get_kernel(kernel_id).ready.done():
            return  # jupyter_client cannot shut a kernel down mid-restart; the next check does it
        try:
            await ensure_async(manager.shutdown_kernel(kernel_id, now=True))
        except Exception:  # a kernel in an odd state must not stop the checks; retried next time
            self.log.warning("could not stop the replaced preheated kernel %s yet", kernel_id, exc_info=True)
        else:
            self.unpooled_kernels.discard(kernel_id)


def main(argv: list[str] | None = None) -> None:
    RuntoolVoila.launch_instance(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
