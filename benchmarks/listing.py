"""Listing with and without the field mask: HTTP requests, response bytes per listed object, seconds.

Run: ``.venv/bin/python -m benchmarks.listing [--objects 10000] [--repeats 5]``. One in-memory fake-gcs-server is
seeded with the keys of the synthetic fleet of :func:`benchmarks.common.build_fleet` (real key shapes, in a raw
and an ML bucket; each object's body is its key, so sizes and hashes differ as real ones do); each repeat lists both
buckets once per method, first one method, then the other, alternating, each method with a fresh client:

- **no mask**: ``client.list_blobs(bucket, page_size=1000)``, the library's default (``projection=noAcl``, every
  field of every object);
- **mask**: runtool's :func:`runtool.storage.gcs.iter_objects`, what every inventory shard lists
  (``fields=items(name,size,generation,crc32c),nextPageToken,prefixes``).

Both must find the same objects with the same name, size, generation and CRC32C. A response hook on the client's
session counts the requests and the body bytes each response delivers.

fake-gcs-server ignores ``fields`` (it always sends the whole resource, ACL included), so on the emulator both
methods receive the same bytes. What GCS would send is therefore computed from the pages the emulator sent: the
whole resource without its ``acl`` (GCS leaves it out under ``projection=noAcl``) against the same pages cut to the
mask, both as compact JSON, and both gzip-compressed (GCS compresses JSON responses for clients that accept gzip, as
this one does). The table goes to stdout and ``benchmarks/results/listing.md``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from google.cloud import storage

from benchmarks.common import (
    ML_BUCKET,
    RAW_BUCKET,
    RESULTS_DIR,
    SEED_THREADS,
    build_fleet,
    markdown_table,
    measured_commit,
    median,
    say,
    spread,
)
from runtool.demo.emulator import Emulator
from runtool.storage import ObjectRecord, iter_objects, make_client
from runtool.storage.gcs import LIST_FIELDS, PAGE_SIZE

MEASURED = ("runtool/storage/gcs.py", "benchmarks/listing.py")
"""The code these cases run: the reported commit says whether any of it had uncommitted changes."""
Mask = dict[str, "Mask | None"]


@dataclass
class Method:
    """Repeated listings by one method: seconds, requests and body bytes per repeat, the pages of the first."""

    name: str
    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    other: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    pages: list[bytes] = field(default_factory=list)


class ResponseMeter:
    """Counts the responses a client's session receives (a response hook): listing pages, with the body bytes they
    deliver, and other requests (google-cloud-storage 3.17 looks up each bucket's metadata once per client)."""

    def __init__(self, client: storage.Client, keep: bool) -> None:
        self.requests = self.other = self.bytes = 0
        self.pages: list[bytes] = []

        def hook(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
            if not urlsplit(response.request.url or "").path.endswith("/o"):
                self.other += 1
                return
            self.requests += 1
            self.bytes += len(response.content)
            if keep:
                self.pages.append(response.content)

        client._http.hooks["response"].append(hook)


def list_plain(client: storage.Client, bucket: str) -> list[ObjectRecord]:
    return [
        ObjectRecord(b.name, int(b.size or 0), int(b.generation or 0), b.crc32c or "")
        for b in client.list_blobs(bucket, page_size=PAGE_SIZE)
    ]


def list_masked(client: storage.Client, bucket: str) -> list[ObjectRecord]:
    return list(iter_objects(client, bucket))


def parse_mask(text: str) -> Mask:
    """A partial-response field mask (``a(b,c),d``) as nested dicts; None marks a whole field."""
    tokens = re.findall(r"[A-Za-z0-9_]+|[(),]", text)
    position = 0

    def fields() -> Mask:
        nonlocal position
        out: Mask = {}
        while position < len(tokens):
            name = tokens[position]
            position += 1
            sub: Mask | None = None
            if position < len(tokens) and tokens[position] == "(":
                position += 1
                sub = fields()
                position += 1  # the ")"
            out[name] = sub
            if position < len(tokens) and tokens[position] == ",":
                position += 1
                continue
            break
        return out

    return fields()


def cut(value: Any, mask: Mask | None) -> Any:
    """``value`` as GCS sends it under ``mask``: only the named fields, at every level, lists item by item."""
    if mask is None:
        return value
    if isinstance(value, list):
        return [cut(item, mask) for item in value]
    return {name: cut(value[name], sub) for name, sub in mask.items() if name in value}


def without_acl(page: dict[str, Any]) -> dict[str, Any]:
    return {**page, "items": [{k: v for k, v in item.items() if k != "acl"} for item in page.get("items", [])]}


def compact(page: dict[str, Any]) -> bytes:
    return json.dumps(page, separators=(",", ":")).encode()


def seed(url: str, keys: list[tuple[str, str]]) -> float:
    client = make_client(emulator_host=url)
    client._http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=SEED_THREADS,
                                                                  pool_maxsize=SEED_THREADS))
    buckets = {name: client.create_bucket(name) for name in (RAW_BUCKET, ML_BUCKET)}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
        # The key as the body: every object has its own size, CRC32C and MD5, as real objects do (equal hashes
        # would compress unrealistically well).
        list(pool.map(lambda job: buckets[job[0]].blob(job[1]).upload_from_string(job[1].encode()), keys))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fleet = build_fleet(args.objects)
    keys = [(RAW_BUCKET, key) for key in fleet.raw_keys] + [(ML_BUCKET, key) for key in fleet.ml_keys]
    load_start = os.getloadavg()
    methods = {
        "no mask": (Method("`list_blobs(page_size=1000)`, library default fields (no mask)"), list_plain),
        "mask": (Method(f"runtool `iter_objects`, `fields={LIST_FIELDS}`"), list_masked),
    }
    found: dict[str, list[ObjectRecord]] = {}
    with Emulator() as emulator:
        say(f"seeding {fleet.describe()} …")
        seed_s = seed(emulator.url, keys)
        say(f"  seeded in {seed_s:.1f} s")
        for repeat in range(args.repeats):
            say(f"repeat {repeat + 1}/{args.repeats} …")
            order = list(methods.items())
            for name, (method, lister) in order if repeat % 2 == 0 else order[::-1]:
                client = make_client(emulator_host=emulator.url)
                meter = ResponseMeter(client, keep=repeat == 0)
                started = time.perf_counter()
                records = [record for bucket in (RAW_BUCKET, ML_BUCKET) for record in lister(client, bucket)]
                method.seconds.append(time.perf_counter() - started)
                method.requests.append(meter.requests)
                method.other.append(meter.other)
                method.received.append(meter.bytes)
                if repeat == 0:
                    method.pages = meter.pages
                found.setdefault(name, records)
                if records != found[name] or records != found["no mask"] or len(records) != len(keys):
                    raise SystemExit(f"{name}: the listing differs ({len(records):,} objects, {len(keys):,} seeded)")
    load_end = os.getloadavg()
    objects = len(keys)

    rows = [
        [method.name, f"{objects:,}", f"{int(median([float(n) for n in method.requests])):,} + "
         f"{int(median([float(n) for n in method.other])):,}",
         f"{median([float(b) for b in method.received]) / objects:,.0f}", spread(method.seconds, 3)]
        for method, _ in methods.values()
    ]
    emulator_table = markdown_table(
        ["method (on the emulator)", "objects", "HTTP requests: listing pages + other", "page bytes per object",
         "seconds: median (min–max)"], rows)

    mask = parse_mask(LIST_FIELDS)
    pages = [json.loads(body) for body in methods["no mask"][0].pages]
    whole = [compact(without_acl(page)) for page in pages]
    masked = [compact(cut(page, mask)) for page in pages]
    estimate: list[list[str]] = []
    for label, bodies in (("whole resource (`projection=noAcl`), no mask", whole), ("the mask", masked)):
        plain = sum(map(len, bodies)) / objects
        zipped = sum(len(gzip.compress(body, 6)) for body in bodies) / objects
        estimate.append([label, f"{plain:,.0f}", f"{zipped:,.1f}"])
    ratio = sum(map(len, whole)) / sum(map(len, masked))
    zipped_ratio = sum(len(gzip.compress(b, 6)) for b in whole) / sum(len(gzip.compress(b, 6)) for b in masked)
    estimate_table = markdown_table(
        ["what GCS would send (from the emulator's pages)", "JSON bytes per object", "gzip bytes per object"],
        estimate)
    fields = sorted({k for page in pages for item in page.get("items", []) for k in item if k != "acl"})
    commit = measured_commit(MEASURED)
    header = (
        f"`python -m benchmarks.listing --objects {args.objects} --repeats {args.repeats}`; fake-gcs-server (memory "
        f"backend) on loopback, {fleet.describe()} (seeded in {seed_s:.0f} s); both buckets listed single-stream per "
        f"method and repeat; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, {os.cpu_count()} cores, "
        f"load average (1/5/15 min) {'/'.join(f'{v:.1f}' for v in load_start)} at the start, "
        f"{'/'.join(f'{v:.1f}' for v in load_end)} at the end."
    )
    notes = (
        f"The emulator ignores `fields`: both methods receive the same bytes. The other requests are the client "
        f"library's bucket metadata lookups, one per bucket and client. Cut to the mask, the same pages are "
        f"{ratio:.1f}× smaller as JSON and {zipped_ratio:.1f}× smaller gzip-compressed. The whole resource here has "
        f"{', '.join(fields)}; GCS's carries about the same fields (its `selfLink`/`mediaLink` hosts are longer, "
        f"its `etag` shorter), so the whole-resource figures are estimates, the masked ones exact for these keys."
    )
    report = "\n\n".join([header, emulator_table, estimate_table, notes]) + "\n"
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "listing.md").write_text(report)


if __name__ == "__main__":
    main()
