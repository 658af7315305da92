"""Decompression bombs (issue 12): a ROS1 chunk's size is checked before anything is decompressed.

The bombs are real bags whose one chunk is compressed from zeros: declaring 4 GiB, or declaring the few
hundred bytes of a real chunk while its data decompresses to 2 GiB. Memory is measured on a fresh process
running ``python -m runtool.extract``, so a limit that failed would show up as gigabytes there.
"""

from __future__ import annotations

import bz2
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from runtool.config import DEFAULT_MAX_CHUNK_BYTES, DEFAULT_TOPICS
from runtool.extract.outputs import RunMetadata, extract_bags
from runtool.extract.reader import TABLE_SCHEMAS, BagReader, BagReadError
from tests.extract.bagfiles import (
    COORD,
    DemoRun,
    copy_run,
    write_bomb,
    write_image_bag,
    zeros_bz2,
    zeros_lz4,
)

BOMB_BYTES = 2 << 30
"""What a bomb's chunk decompresses to: gigabytes over :data:`RSS_BOUND` if a limit did not hold."""
RSS_BOUND = 500 * 1024 * 1024
"""Generous: the extractor of a demo run peaks at about 170 MiB, interpreter and imports included."""
COMPRESSIONS = ("bz2", "lz4")
DECLARED_HUGE = (1 << 32) - 1


@pytest.fixture(scope="module")
def bomb_data() -> dict[str, bytes]:
    """Per compression, chunk data decompressing to :data:`BOMB_BYTES` zeros (a few MB at most)."""
    return {"bz2": zeros_bz2(BOMB_BYTES), "lz4": zeros_lz4(BOMB_BYTES)}


def read_frames(path: Path, max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES) -> pa.Table:
    batches = []
    with BagReader(path, DEFAULT_TOPICS, max_chunk_bytes=max_chunk_bytes) as reader:
        for tick in reader.ticks():
            if tick.batches is not None:
                batches.append(tick.batches["frames"])
    return pa.Table.from_batches(batches, TABLE_SCHEMAS["frames"])


def extract_in_child(bags_dir: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """``python -m runtool.extract`` in a grandchild; returns its result and its peak RSS in bytes.

    The child in between runs nothing but the extractor, so its ``RUSAGE_CHILDREN`` peak is the extractor's
    alone (this test process's own children, earlier tests' included, do not count).
    """
    measure = (
        "import resource, subprocess, sys\n"
        "child = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(child.returncode)\n"
        "sys.stderr.write(child.stdout + child.stderr)\n"
    )
    command = [sys.executable, "-m", "runtool.extract", "--bags-dir", str(bags_dir), "--out", str(out),
               "--timestamp", COORD.timestamp, *extra]
    wrapper = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True,
                             check=True, timeout=600)
    peak_kib, code = (int(line) for line in wrapper.stdout.split())
    return subprocess.CompletedProcess(command, code, "", wrapper.stderr), peak_kib * 1024


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_chunk_declaring_too_much_refuses_the_bag_when_it_opens(
    compression: str, bomb_data: dict[str, bytes], tmp_path: Path
) -> None:
    bag = write_bomb(tmp_path / f"bomb_{compression}.bag", compression, bomb_data[compression], DECLARED_HUGE)
    reader = BagReader(bag, DEFAULT_TOPICS)
    with pytest.raises(BagReadError) as raised, reader:
        pytest.fail("a bag declaring a 4 GiB chunk opened")
    message = str(raised.value)
    assert message.startswith(f"{bag.name}: the chunk at byte ")
    assert "declares 4,294,967,295 bytes uncompressed" in message
    assert f"max_chunk_bytes = {DEFAULT_MAX_CHUNK_BYTES:,}" in message and "RUNTOOL_MAX_CHUNK_BYTES" in message


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_chunk_holding_more_than_it_declares_stops_at_the_declared_size(
    compression: str, bomb_data: dict[str, bytes], tmp_path: Path
) -> None:
    bag = write_bomb(tmp_path / f"understated_{compression}.bag", compression, bomb_data[compression])
    with pytest.raises(BagReadError, match=r"Reading stopped after 0 messages: understated_\w+\.bag: the chunk at "
                                           r"byte [\d,]+ decompresses to more than the [\d,]+ bytes it declares"):
        read_frames(bag)


def test_bombs_fail_alone_and_memory_stays_bounded(
    demo_run: DemoRun, bomb_data: dict[str, bytes], tmp_path: Path
) -> None:
    run = copy_run(demo_run, tmp_path / "bags")
    bombs = {}
    for compression in COMPRESSIONS:
        bombs[f"bomb_{compression}"] = write_bomb(run.folder / f"bomb_{compression}.bag", compression,
                                                  bomb_data[compression], DECLARED_HUGE)
        bombs[f"understated_{compression}"] = write_bomb(run.folder / f"understated_{compression}.bag",
                                                         compression, bomb_data[compression])
    assert max(path.stat().st_size for path in bombs.values()) < 20 << 20  # small files, huge contents

    child, peak = extract_in_child(run.folder, tmp_path / "out")

    assert child.returncode == 0, child.stderr
    assert peak < RSS_BOUND, f"peak RSS {peak / 2**20:,.0f} MiB"
    metadata = RunMetadata.read(tmp_path / "out")
    failed = {bag.name: bag.error or "" for bag in metadata.bags_failed}
    assert sorted(failed) == sorted(bombs)
    for name in ("bomb_bz2", "bomb_lz4"):
        assert "declares 4,294,967,295 bytes uncompressed, more than max_chunk_bytes" in failed[name]
    for name in ("understated_bz2", "understated_lz4"):
        assert "decompresses to more than the" in failed[name]
    ok = {bag.name: bag.frames for bag in metadata.bags_ok}
    assert ok == {summary.path.stem: summary.frames for summary in run.summaries}


def test_the_limit_is_the_callers(tmp_path: Path) -> None:
    """A genuine 2 MiB chunk: refused under a 1 MiB limit, read under the default one, by every path."""
    bag = tmp_path / "bags" / "big_frame.bag"
    bag.parent.mkdir()
    write_image_bag(bag, [os.urandom(2 << 20)], "lz4")
    assert read_frames(bag).num_rows == 1

    with pytest.raises(BagReadError, match=r"big_frame\.bag: the chunk at byte [\d,]+ declares 2,097,[\d,]+ bytes "
                                           r"uncompressed, more than max_chunk_bytes = 1,048,576"):
        read_frames(bag, max_chunk_bytes=1 << 20)

    metadata = extract_bags([bag], tmp_path / "out", COORD.timestamp, DEFAULT_TOPICS, max_chunk_bytes=1 << 20)
    assert [b.name for b in metadata.bags_failed] == ["big_frame"]
    assert "max_chunk_bytes = 1,048,576" in (metadata.bags_failed[0].error or "")

    child, _ = extract_in_child(bag.parent, tmp_path / "cli-out", "--max-chunk-bytes", str(1 << 20))
    assert child.returncode == 1  # its only bag failed
    assert "max_chunk_bytes = 1,048,576" in (RunMetadata.read(tmp_path / "cli-out").bags_failed[0].error or "")


@pytest.mark.parametrize("compression", [*COMPRESSIONS, None])
def test_compressed_chunks_read_the_same_rows(compression: str | None, tmp_path: Path) -> None:
    """Many chunks of incompressible frames: the bounded decompression returns every byte of every chunk."""
    payloads = [os.urandom(size) for size in (300_000, 500_000, 700_000, 1_200_000, 90_000, 2_000_000)]
    (tmp_path / "plain").mkdir()
    (tmp_path / "packed").mkdir()
    write_image_bag(tmp_path / "plain" / "frames.bag", payloads)
    write_image_bag(tmp_path / "packed" / "frames.bag", payloads, compression)
    packed = read_frames(tmp_path / "packed" / "frames.bag")
    assert packed.num_rows == len(payloads)
    assert packed.equals(read_frames(tmp_path / "plain" / "frames.bag"))


def test_a_chunk_of_several_bz2_streams_reads_like_rosbags(tmp_path: Path) -> None:
    """rosbags reads a bz2 chunk with bz2.decompress, which joins concatenated streams; so does the limit."""

    def two_streams(data: bytes) -> bytes:
        return bz2.compress(data[:1000]) + bz2.compress(data[1000:])

    payloads = [os.urandom(800) for _ in range(5)]
    write_image_bag(tmp_path / "one.bag", payloads, "bz2")
    write_image_bag(tmp_path / "two.bag", payloads, "bz2", compressor=two_streams)
    two = read_frames(tmp_path / "two.bag")
    assert two.num_rows == 5
    assert two.drop_columns("bag_file").equals(read_frames(tmp_path / "one.bag").drop_columns("bag_file"))


def test_bad_limit_on_the_command_line_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bags").mkdir()
    write_image_bag(tmp_path / "bags" / "a.bag", [b"x"])
    child, _ = extract_in_child(tmp_path / "bags", tmp_path / "out", "--max-chunk-bytes", "0")
    assert child.returncode == 2 and "--max-chunk-bytes must be a positive number of bytes" in child.stderr
