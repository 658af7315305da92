"""The atomic writers: a file at its final path is always complete; a failure leaves the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtool.files import replacing, write_atomic


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "cache.json"
    write_atomic(target, "first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cache.json"]


def test_a_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("good")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
