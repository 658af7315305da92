"""The legacy (v1) cloud discovery, re-implemented as the baseline runtool's inventory replaces.

Faithful to legacy-dashboard.md §8.1 and §1.3-1.5: each bucket is walked level by level with the ``/``
delimiter, one listing per node and per level, serially; then one recursive listing per run timestamp
(raw: ``.bag`` objects under ``<timestamp>/rosbag/``) or per bag dir (ML: ``.jpg`` objects under
``frames/``). The result is the nested ``discovered_data`` dict the legacy cached in ``gcs_data.json``.
Its cost is what the benchmark shows: the number of requests grows with the number of runs and bags.
"""

from __future__ import annotations

import re
from typing import Any

from google.cloud import storage

__all__ = ["discover", "discover_ml", "discover_raw", "totals"]

# v1 accepted a timestamp folder only if it matched this rule; other folders at that level were ignored.
TIMESTAMP = re.compile(r"^\d{4}[_-]\d{2}[_-]\d{2}T\d{2}:\d{2}:\d{2}Z$")
LEVELS = 5  # cid, regionid, fieldid, twid, lbid above the timestamp
ML_ROOT = "raw/"

Tree = dict[str, Any]


def _folders(client: storage.Client, bucket: str, prefix: str) -> list[str]:
    """The immediate sub-folder names under ``prefix``: one delimiter listing, like the legacy."""
    blobs = client.list_blobs(bucket, prefix=prefix or None, delimiter="/")
    # ``prefixes`` is filled only while the pages are read.
    for _ in blobs:
        pass
    return sorted(folder[len(prefix) :].rstrip("/") for folder in blobs.prefixes)


def _count(client: storage.Client, bucket: str, prefix: str, suffix: str) -> int:
    """Objects under ``prefix`` (recursive listing) whose name ends in ``suffix``."""
    return sum(1 for blob in client.list_blobs(bucket, prefix=prefix) if blob.name.endswith(suffix))


def _walk_levels(client: storage.Client, bucket: str, root: str) -> tuple[Tree, list[tuple[Tree, str, str]]]:
    """Build the cid → … → lbid nesting; also return (lbid node, timestamp, its prefix) per run folder."""
    tree: Tree = {}
    level: list[tuple[Tree, str]] = [(tree, root)]
    for _ in range(LEVELS):
        below: list[tuple[Tree, str]] = []
        for node, prefix in level:
            for name in _folders(client, bucket, prefix):
                node[name] = {}
                below.append((node[name], f"{prefix}{name}/"))
        level = below
    runs = [
        (node, name, f"{prefix}{name}/")
        for node, prefix in level
        for name in _folders(client, bucket, prefix)
        if TIMESTAMP.match(name)
    ]
    return tree, runs


def discover_raw(client: storage.Client, bucket: str) -> Tree:
    """``cid → regionid → fieldid → twid → lbid → timestamp → {bag_count}``; runs without bags are left out."""
    tree, runs = _walk_levels(client, bucket, "")
    for node, timestamp, prefix in runs:
        bags = _count(client, bucket, f"{prefix}rosbag/", ".bag")
        if bags:
            node[timestamp] = {"bag_count": bags}
    return tree


def discover_ml(client: storage.Client, bucket: str) -> Tree:
    """Same nesting under the ``raw/`` folder, ending in ``{bag_samples: {bag_dir: jpg_count}}``."""
    tree, runs = _walk_levels(client, bucket, ML_ROOT)
    for node, timestamp, prefix in runs:
        bag_dirs = [name for name in _folders(client, bucket, f"{prefix}rosbag/") if name.startswith("_")]
        samples = {name: _count(client, bucket, f"{prefix}rosbag/{name}/frames/", ".jpg") for name in bag_dirs}
        if samples:
            node[timestamp] = {"bag_samples": samples}
    return tree


def discover(client: storage.Client, raw_bucket: str, ml_bucket: str) -> Tree:
    """The legacy ``discovered_data``: both buckets, one after the other."""
    return {"raw": discover_raw(client, raw_bucket), "ml": discover_ml(client, ml_bucket)}


def totals(discovered: Tree) -> dict[str, int]:
    """Runs and bags found in the raw tree, runs and frames in the ML tree (to check against runtool)."""
    counts = {"raw_runs": 0, "raw_bags": 0, "ml_runs": 0, "ml_frames": 0}

    def leaves(node: Tree, depth: int) -> list[Tree]:
        if depth == LEVELS + 1:
            return [node]
        return [leaf for child in node.values() for leaf in leaves(child, depth + 1)]

    for leaf in leaves(discovered["raw"], 0):
        counts["raw_runs"] += 1
        counts["raw_bags"] += leaf["bag_count"]
    for leaf in leaves(discovered["ml"], 0):
        counts["ml_runs"] += 1
        counts["ml_frames"] += sum(leaf["bag_samples"].values())
    return counts
