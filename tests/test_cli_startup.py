"""Ctrl-C, and a reader that leaves, while the real ``runtool`` command starts (runtool/__main__.py).

Loading runtool.cli takes most of a second of CPU. A SIGINT sent to the process group (as a terminal sends
it) at points spread over that load ends the command as a Ctrl-C later does: "runtool: interrupted", code
130, no traceback. The points are taken in the process's own CPU time, read from /proc, rather than wall
time: on a busy machine a wall-clock delay can still fall inside the interpreter's own start-up (its `site`
module, the first ~50 ms of CPU), which prints CPython's "Fatal Python error" whatever runtool does.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtool import __main__ as entry
from runtool import __version__, cli

RUNTOOL = Path(sys.executable).with_name("runtool")
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def interrupted_after(command: list[str], cpu_seconds: float) -> subprocess.CompletedProcess[str]:
    """Start ``command`` as a terminal's foreground job; Ctrl-C it once it has used ``cpu_seconds`` of CPU."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               text=True, start_new_session=True, env={**os.environ, "RUNTOOL_CONFIG": ""})
    deadline = time.monotonic() + 60
    try:
        while process.poll() is None and cpu_s(process.pid) < cpu_seconds and time.monotonic() < deadline:
            time.sleep(0.002)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
    except (FileNotFoundError, ProcessLookupError):
        pass  # it ended meanwhile: the caller sees its output
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def load_cpu_s() -> float:
    """CPU seconds a whole `runtool --version` takes on this machine (CI machines load faster than ours)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(RUNTOOL), "--version"], capture_output=True, timeout=120, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


@pytest.mark.parametrize("share", [0.3, 0.45, 0.6])  # of the whole command's CPU; start-up is ~0.05 s
def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(share: float) -> None:
    cpu_seconds = max(0.08, share * min(load_cpu_s() for _ in range(2)))
    for _ in range(3):
        result = interrupted_after([str(RUNTOOL), "--version"], cpu_seconds)
        assert (result.returncode, result.stderr) == (130, "runtool: interrupted\n"), (cpu_seconds, result)
        assert result.stdout == ""  # the Ctrl-C came before the version was printed: during the loading


def test_python_m_runtool_is_the_same_command() -> None:
    result = subprocess.run([sys.executable, "-m", "runtool", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"runtool {__version__}\n", "")
    result = interrupted_after([sys.executable, "-m", "runtool", "--version"], 0.2)
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
