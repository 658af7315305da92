"""The inventory's listings ask only for the fields they keep, and still get objects, pages and prefixes.

fake-gcs-server ignores ``fields`` (it always sends whole resources), so this checks the requests sent and what the
listings return; the bytes GCS saves are measured by ``benchmarks/listing.py``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.cloud import storage

from runtool.demo.emulator import Emulator
from runtool.storage import ObjectRecord, iter_objects, list_prefixes, make_client
from runtool.storage.gcs import LIST_FIELDS, PAGE_SIZE

BUCKET = "listing-fields"
KEYS = [f"acme/run_{i // 700}/rosbag/_{i:05d}.bag" for i in range(1_400)] + ["acme/stray.txt"]


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> storage.Client:
    client = make_client(emulator_host=emulator.url)
    if not client.bucket(BUCKET).exists():
        bucket = client.create_bucket(BUCKET)
        for key in KEYS:
            bucket.blob(key).upload_from_string(key.encode())
    return client


def listing_queries(client: storage.Client) -> list[dict[str, list[str]]]:
    """The query of every object-listing request the client sends from now on."""
    seen: list[dict[str, list[str]]] = []

    def hook(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        url = urlsplit(response.request.url or "")
        if url.path.endswith(f"/b/{BUCKET}/o"):
            seen.append(parse_qs(url.query))

    client._http.hooks["response"].append(hook)
    return seen


def test_iter_objects_asks_for_the_four_fields_on_every_page(client: storage.Client) -> None:
    queries = listing_queries(client)
    records = list(iter_objects(client, BUCKET, "acme/"))
    assert sorted(r.name for r in records) == sorted(KEYS) and len(queries) == 2 > len(KEYS) // PAGE_SIZE
    assert all(q["fields"] == [LIST_FIELDS] for q in queries)
    blob = client.bucket(BUCKET).get_blob(KEYS[0])
    assert blob is not None
    assert next(r for r in records if r.name == KEYS[0]) == ObjectRecord(
        KEYS[0], len(KEYS[0]), int(blob.generation or 0), str(blob.crc32c)
    )


def test_list_prefixes_asks_for_the_mask_and_gets_its_prefixes(client: storage.Client) -> None:
    queries = listing_queries(client)
    prefixes, stray = list_prefixes(client, BUCKET, "acme/")
    assert prefixes == ["acme/run_0/", "acme/run_1/"] and [r.name for r in stray] == ["acme/stray.txt"]
    assert [q["fields"] for q in queries] == [[LIST_FIELDS]] and queries[0]["delimiter"] == ["/"]
