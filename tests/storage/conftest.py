"""Fixtures of the storage tests."""

from __future__ import annotations

import pytest
from google.cloud import storage

from runtool.demo.emulator import Emulator
from runtool.storage import make_client


@pytest.fixture(scope="module")
def client(emulator: Emulator, request: pytest.FixtureRequest) -> storage.Client:
    """A client of the test emulator, with the test module's ``BUCKET`` made (empty)."""
    client = make_client(emulator_host=emulator.url)
    bucket = request.module.BUCKET
    if not client.bucket(bucket).exists():
        client.create_bucket(bucket)
    return client
