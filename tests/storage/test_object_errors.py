"""Object-level errors against a real fake-gcs-server: missing object, missing bucket, replaced object, each its own.

The emulator answers a bare "Not Found" for all three 404s (as GCS does for media downloads), so these also
check the look at the bucket that tells them apart.
"""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.cloud import storage

from runtool.storage import BucketAccessError, BucketNotFoundError, StorageError, iter_objects
from runtool.storage.gcs import (
    ObjectChangedError,
    ObjectNotFoundError,
    storage_error,
    storage_errors,
    stream_object,
)

BUCKET = "object-errors"
KEY = "acme/run/rosbag/_2025-08-01-08-00-20_0.bag"



def upload(client: storage.Client, key: str, data: bytes) -> int:
    blob = client.bucket(BUCKET).blob(key)
    blob.upload_from_string(data)
    return int(blob.generation)


def download(client: storage.Client, bucket: str, key: str, generation: int) -> bytes:
    chunks: list[bytes] = []
    with storage_errors(bucket, "downloading from", key, generation, client):
        stream_object(client, bucket, key, generation, chunks.append, retry_s=2)
    return b"".join(chunks)


def test_a_missing_object_is_not_a_missing_bucket(client: storage.Client) -> None:
    with pytest.raises(ObjectNotFoundError) as caught:
        download(client, BUCKET, "acme/none.bag", 0)
    assert str(caught.value) == (
        f"The object `acme/none.bag` was not found in the bucket `{BUCKET}` (downloading from)"
    )
    assert (caught.value.bucket, caught.value.key) == (BUCKET, "acme/none.bag")
    assert isinstance(caught.value.__cause__, gexc.NotFound)


def test_a_deleted_generation_is_missing_not_changed(client: storage.Client) -> None:
    key = "acme/deleted.bag"
    generation = upload(client, key, b"soon gone")
    client.bucket(BUCKET).blob(key).delete()
    with pytest.raises(ObjectNotFoundError, match=rf"`{key}` \(generation {generation}\) was not found"):
        download(client, BUCKET, key, generation)


def test_a_missing_bucket_is_named_for_listing_and_for_an_object(client: storage.Client) -> None:
    with pytest.raises(BucketNotFoundError, match="The bucket `no-such-bucket` was not found \\(listing\\)"):
        list(iter_objects(client, "no-such-bucket", retry_s=2))
    with pytest.raises(BucketNotFoundError) as caught:
        download(client, "no-such-bucket", KEY, 0)
    assert str(caught.value) == "The bucket `no-such-bucket` was not found (downloading from)"
    assert (caught.value.bucket, caught.value.key) == ("no-such-bucket", KEY)
    assert not isinstance(caught.value, ObjectNotFoundError)


def test_an_object_replaced_after_listing_is_changed(client: storage.Client) -> None:
    listed = upload(client, KEY, b"the version that was listed")
    live = upload(client, KEY, b"a newer version")
    with pytest.raises(ObjectChangedError) as caught:
        download(client, BUCKET, KEY, listed)
    assert str(caught.value) == (
        f"The object `{KEY}` in the bucket `{BUCKET}` changed (downloading from): generation {listed} was asked "
        f"for, {live} is live now"
    )
    assert (caught.value.generation, caught.value.live) == (listed, live)
    assert download(client, BUCKET, KEY, live) == b"a newer version"


def test_an_upload_over_an_object_created_meanwhile_is_changed(client: storage.Client) -> None:
    key = "acme/created-meanwhile.txt"
    upload(client, key, b"someone else's")
    with pytest.raises(ObjectChangedError, match="where none was expected") as caught, storage_errors(
        BUCKET, "uploading to", key, 0, client
    ):
        client.bucket(BUCKET).blob(key).upload_from_string(b"ours", if_generation_match=0)
    assert isinstance(caught.value.__cause__, gexc.PreconditionFailed)
    assert f"`{key}` in the bucket `{BUCKET}`" in str(caught.value)


# GCS's own answers that the emulator cannot give (no access control; a plain "Not Found" for every 404).


def test_gcs_bucket_message_needs_no_look() -> None:
    exc = gexc.NotFound("The specified bucket does not exist.")
    error = storage_error(exc, "fleet-ml", "reading", "raw/a.txt", 7)
    assert type(error) is BucketNotFoundError and error.key == "raw/a.txt"


def test_without_a_client_an_object_404_is_the_object() -> None:
    error = storage_error(gexc.NotFound("No such object: fleet-ml/raw/a.txt"), "fleet-ml", "reading", "raw/a.txt")
    assert type(error) is ObjectNotFoundError


@pytest.mark.parametrize("raised", [gexc.Forbidden("no storage.objects.get"), gexc.Unauthorized("no credentials")])
def test_refused_access_names_the_object(raised: Exception) -> None:
    error = storage_error(raised, "fleet-ml", "reading", "raw/a.txt")
    assert type(error) is BucketAccessError
    assert str(error).startswith("Access to `raw/a.txt` in the bucket `fleet-ml` was refused (reading)")


def test_a_precondition_without_an_object_is_a_plain_storage_error() -> None:
    error = storage_error(gexc.PreconditionFailed("precondition"), "fleet-ml", "creating")
    assert type(error) is StorageError and "`fleet-ml`" in str(error)
