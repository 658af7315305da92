"""Ctrl-C, and a reader that leaves, while the real ``runtool`` command starts (runtool/__main__.py).

Loading runtool.cli takes most of a second of CPU. A SIGINT sent to the process group (as a terminal sends
it) at points spread over that load ends the command as a Ctrl-C later does: "runtool: interrupted", code
130, no traceback. The points are milestones of the load itself: the moment a given extension module is
mapped into the process (read from /proc/PID/maps). Neither wall time nor CPU time marks them reliably: on a
busy machine a wall-clock delay can fall inside the interpreter's own start-up (which prints CPython's "Fatal
Python error" whatever runtool does), and the CPU time of the same load varied twofold between runs on a
shared machine, so a point taken as a share of a measured load landed after the version was printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtool import __main__ as entry
from runtool import __version__, cli

RUNTOOL = Path(sys.executable).with_name("runtool")

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads a process's maps from /proc")

# Extension modules `runtool --version` maps in this order, at about 25 %, 45 % and 70 % of its load here.
MILESTONES = ("numpy/_core/_multiarray_umath", "pandas/_libs/tslibs/base", "pandas/_libs/internals")


def has_mapped(pid: int, name: str) -> bool:
    return name in Path(f"/proc/{pid}/maps").read_text()


def interrupted_after(command: list[str], milestone: str) -> tuple[bool, subprocess.CompletedProcess[str]]:
    """Start ``command`` as a terminal's foreground job; Ctrl-C it once it has mapped ``milestone``.

    Returns whether the Ctrl-C was sent before the command ended, and what the command did.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               text=True, start_new_session=True, env={**os.environ, "RUNTOOL_CONFIG": ""})
    deadline = time.monotonic() + 60
    sent = False
    try:
        while process.poll() is None and not has_mapped(process.pid, milestone) and time.monotonic() < deadline:
            time.sleep(0.001)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            sent = True
    except (FileNotFoundError, ProcessLookupError):
        pass  # it ended meanwhile: the caller sees its output
    out, err = process.communicate(timeout=60)
    return sent, subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.parametrize("milestone", MILESTONES)
def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(milestone: str) -> None:
    for _ in range(3):
        sent, result = interrupted_after([str(RUNTOOL), "--version"], milestone)
        assert sent, f"`runtool --version` ended without mapping {milestone}: pick another milestone ({result})"
        assert (result.returncode, result.stderr) == (130, "runtool: interrupted\n"), result
        assert result.stdout == ""  # the Ctrl-C came before the version was printed: during the loading


def test_python_m_runtool_is_the_same_command() -> None:
    result = subprocess.run([sys.executable, "-m", "runtool", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"runtool {__version__}\n", "")
    sent, result = interrupted_after([sys.executable, "-m", "runtool", "--version"], MILESTONES[1])
    assert sent, result
    # Under -m only, CPython may end the process by SIGINT after runtool exited 130 (a shell shows 130 for
    # both): a KeyboardInterrupt that passed through code a C extension ran with PyRun_String sets a flag the
    # interpreter checks at exit, even when Python code caught it.
    assert result.returncode in (130, -signal.SIGINT), result.stderr
    assert result.stderr == "runtool: interrupted\n"


def test_help_to_a_reader_that_left_is_quiet() -> None:
    """`runtool --help | head -0`: argparse itself ignores the failed write; nothing is printed on stderr."""
    process = subprocess.Popen([str(RUNTOOL), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before a byte is written
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) in (0, 141) and err == ""


@pytest.mark.parametrize(("raised", "code", "said"), [(KeyboardInterrupt, 130, "runtool: interrupted\n"),
                                                        (BrokenPipeError, 141, "")])
def test_the_entry_point_ends_what_escapes_the_cli_as_the_cli_does(
        raised: type[BaseException], code: int, said: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Both may come before runtool.cli.main's own handling starts (its parser runs outside it)."""
    def fails(argv: object) -> int:
        raise raised

    monkeypatch.setattr(cli, "main", fails)
    assert entry.main(["--version"]) == code
    assert capsys.readouterr() == ("", said)
