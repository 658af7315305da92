"""The one place that maps client errors to runtool's: each names the bucket and says what to do.

fake-gcs-server has no access control, so a refused access cannot come from the emulator; these are unit
tests of the pure mapping with the client library's own exception types.
"""

from __future__ import annotations

import pytest
import requests
import urllib3
from google.api_core import exceptions as gexc

from runtool.storage import (
    BucketAccessError,
    BucketNotFoundError,
    StorageError,
    StorageUnavailableError,
    storage_errors,
)


@pytest.mark.parametrize(
    ("raised", "expected", "words"),
    [
        (gexc.Forbidden("caller does not have storage.objects.list access"), BucketAccessError, "refused"),
        (gexc.Unauthorized("no credentials"), BucketAccessError, "refused"),
        (gexc.NotFound("no such bucket"), BucketNotFoundError, "was not found"),
        (requests.ConnectionError("connection refused"), StorageUnavailableError, "could not be reached"),
        (urllib3.exceptions.ProtocolError("body cut short"), StorageUnavailableError, "could not be reached"),
        (gexc.InternalServerError("boom"), StorageError, "failed"),
    ],
)
def test_errors_name_the_bucket(raised: Exception, expected: type[StorageError], words: str) -> None:
    with pytest.raises(expected) as caught, storage_errors("fleet-raw", "listing"):
        raise raised
    assert "`fleet-raw`" in str(caught.value) and words in str(caught.value)
    assert caught.value.bucket == "fleet-raw" and caught.value.__cause__ is raised
