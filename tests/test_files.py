"""The atomic writers (a file at its final path is always complete; a failure leaves the old one) and the lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runtool.files import LockWaitStopped, exclusive_lock, replacing, write_atomic


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "cache.json"
    write_atomic(target, "first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cache.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_write_atomic_that_fails_leaves_no_temporary_file(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # the rename over a folder fails after the data was written
    with pytest.raises(OSError):
        write_atomic(target, b"data", durable=durable)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_threads_writing_one_file_at_once_leave_one_whole_copy(tmp_path: Path) -> None:
    target = tmp_path / "labels" / "a.txt"
    payloads = [bytes([65 + n]) * 300_000 for n in range(8)]
    threads = [threading.Thread(target=write_atomic, args=(target, data), kwargs={"durable": False})
               for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in payloads
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_a_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("good")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def stopped() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_lock_makes_a_second_holder_wait(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "run.raw.lock"
    entered = threading.Event()

    def second() -> None:
        with exclusive_lock(lock):
            entered.set()

    with exclusive_lock(lock):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not entered.wait(0.3), "the second holder got in while the first held the lock"
    assert entered.wait(10)
    waiter.join()


def test_lock_wait_stops_on_the_stop_event(tmp_path: Path) -> None:
    lock = tmp_path / "run.ml.lock"
    with exclusive_lock(lock), pytest.raises(LockWaitStopped), exclusive_lock(lock, stopped()):
        pytest.fail("entered a held lock")
    with exclusive_lock(lock, stopped()):
        pass  # free again: a set stop event only matters while waiting


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    lock = tmp_path / "run.raw.lock"
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom runtool.files import exclusive_lock\n"
        f"with exclusive_lock(Path({str(lock)!r})):\n    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockWaitStopped), exclusive_lock(lock, stopped()):
            pytest.fail("entered a lock another process holds")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exclusive_lock(lock, stopped()):
        pass


def test_lock_wait_gives_up_after_the_timeout(tmp_path: Path) -> None:
    lock = tmp_path / "dataset.lock"
    with (
        exclusive_lock(lock),
        pytest.raises(LockWaitStopped, match="gave up after 0.2 s"),
        exclusive_lock(lock, timeout=0.2),
    ):
        pytest.fail("entered a held lock")
    with exclusive_lock(lock, timeout=0):
        pass  # a free lock is taken even with no time to wait
