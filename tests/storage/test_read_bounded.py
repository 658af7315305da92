"""read_bounded against a real fake-gcs-server: small objects whole, large ones cut one byte past the limit, the
generation precondition, and errors mapped as for every object read."""

from __future__ import annotations

import pytest
from google.cloud import storage

from runtool.storage import storage_errors
from runtool.storage.gcs import ObjectChangedError, ObjectNotFoundError, read_bounded

BUCKET = "read-bounded-test"



def put(client: storage.Client, key: str, data: bytes) -> int:
    blob = client.bucket(BUCKET).blob(key)
    blob.upload_from_string(data)
    return int(blob.generation or 0)


def test_a_small_object_is_read_whole_and_its_generation_pinned(client: storage.Client) -> None:
    generation = put(client, "label.txt", b"0 0.5 0.5 0.1 0.1\n")
    assert read_bounded(client, BUCKET, "label.txt", generation, 64) == b"0 0.5 0.5 0.1 0.1\n"
    assert read_bounded(client, BUCKET, "label.txt", 0, 64) == b"0 0.5 0.5 0.1 0.1\n"  # 0: whatever is live


@pytest.mark.parametrize("limit", [0, 1, 9, 10, 11, 4096])
def test_at_most_one_byte_past_the_limit_is_read(client: storage.Client, limit: int) -> None:
    data = bytes(range(10)) * 1000
    generation = put(client, f"big-{limit}.bin", data)
    assert read_bounded(client, BUCKET, f"big-{limit}.bin", generation, limit) == data[: limit + 1]


def test_an_empty_object_is_empty_bytes(client: storage.Client) -> None:
    generation = put(client, "empty.txt", b"")
    assert read_bounded(client, BUCKET, "empty.txt", generation, 64) == b""


def test_a_replaced_or_deleted_object_is_reported_or_read_live(client: storage.Client) -> None:
    old = put(client, "replaced.txt", b"old")
    new = put(client, "replaced.txt", b"new")
    try:
        with storage_errors(BUCKET, "reading", "replaced.txt", old, client):
            got = read_bounded(client, BUCKET, "replaced.txt", old, 64, retry_s=1)
    except ObjectChangedError:
        got = None  # GCS: the generation precondition failed
    # fake-gcs-server ignores the precondition on a media GET and serves the live object: the caller's CRC32C
    # check (the listing's) is what refuses it there. Never the old bytes, never a mix.
    assert got in (None, b"new")
    assert read_bounded(client, BUCKET, "replaced.txt", new, 64) == b"new"
    client.bucket(BUCKET).blob("replaced.txt").delete()
    with pytest.raises(ObjectNotFoundError), storage_errors(BUCKET, "reading", "replaced.txt", new, client):
        read_bounded(client, BUCKET, "replaced.txt", new, 64, retry_s=1)


def test_the_connection_is_reused_after_a_cut_read(client: storage.Client) -> None:
    """A read stopped at the limit leaves no unread bytes on a pooled connection for the next request."""
    data = b"x" * 100_000
    generation = put(client, "cut.bin", data)
    small = put(client, "small.txt", b"small")
    for _ in range(5):
        assert read_bounded(client, BUCKET, "cut.bin", generation, 10) == data[:11]
        assert read_bounded(client, BUCKET, "small.txt", small, 10) == b"small"
