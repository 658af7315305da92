"""``python -m runtool.extract``: extract one run's bags into a folder, reporting progress as JSON lines.

This is what the Docker backend runs inside its container, so it stays small and its interface fixed::

    python -m runtool.extract --bags-dir DIR --out DIR --timestamp TS [--topics-json JSON] [--max-chunk-bytes N]

Every progress event is one JSON object on its own stdout line (the fields of
:class:`~runtool.extract.outputs.ExtractionProgress`); errors also go to stderr as a sentence.
Exit codes: 0 the run was extracted (even if some bags failed, see ``metadata.yaml``), 1 nothing could be
extracted (no bags, every bag failed, or the output could not be written), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from runtool.config import DEFAULT_MAX_CHUNK_BYTES, DEFAULT_TOPICS
from runtool.extract.outputs import ExtractionProgress, ExtractionStage, OutputError, extract_bags
from runtool.extract.reader import TOPIC_KINDS, find_bags
from runtool.models import CoordinateError, parse_timestamp

__all__ = ["main"]


def _emit(event: ExtractionProgress) -> None:
    sys.stdout.write(json.dumps(event.to_dict()) + "\n")
    sys.stdout.flush()


def _fail(message: str, bags_total: int = 0) -> int:
    _emit(ExtractionProgress(None, bags_total, bags_total, 0, ExtractionStage.ERROR, error=message))
    sys.stderr.write(message + "\n")
    return 1


def _topics(parser: argparse.ArgumentParser, text: str | None) -> dict[str, str]:
    """The configured topics over the defaults; a bad document is a usage error (exit 2)."""
    if text is None:
        return dict(DEFAULT_TOPICS)
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"--topics-json is not valid JSON: {exc}")
    if not isinstance(given, dict) or not all(isinstance(v, str) and v for v in given.values()):
        parser.error('--topics-json must be an object of topic names, e.g. {"image": "/camera/compressed"}')
    unknown = sorted(set(given) - set(TOPIC_KINDS))
    if unknown:
        parser.error(f"--topics-json has unknown keys {unknown}; expected some of {list(TOPIC_KINDS)}")
    return {**DEFAULT_TOPICS, **given}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtool.extract",
        description="Extract a run's bags (ROS1 .bag, .mcap, ROS2 bag folders) into CSV, Parquet and metadata.yaml.",
    )
    parser.add_argument("--bags-dir", type=Path, required=True, help="folder holding the run's bags")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("--timestamp", required=True, help="the run timestamp, e.g. 2025_08_25T08:59:38Z")
    parser.add_argument("--topics-json", help='topic names by purpose: {"image": …, "detections": …, "tracks": …}')
    parser.add_argument("--max-chunk-bytes", type=int, default=DEFAULT_MAX_CHUNK_BYTES,
                        help="refuse a bag with a ROS1 chunk declaring more bytes than this uncompressed "
                             "(the max_chunk_bytes setting; default %(default)s)")
    args = parser.parse_args(argv)

    topics = _topics(parser, args.topics_json)
    if args.max_chunk_bytes < 1:
        parser.error(f"--max-chunk-bytes must be a positive number of bytes, not {args.max_chunk_bytes}")
    try:
        parse_timestamp(args.timestamp)
    except CoordinateError as exc:
        parser.error(str(exc))
    if not args.bags_dir.is_dir():
        parser.error(f"--bags-dir {args.bags_dir} is not a folder")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out {args.out} must be an empty folder or not exist yet")

    bags = find_bags(args.bags_dir)
    if not bags:
        return _fail(f"No bags in {args.bags_dir}: nothing to extract.")
    try:
        metadata = extract_bags(bags, args.out, args.timestamp, topics, progress=_emit,
                                max_chunk_bytes=args.max_chunk_bytes)
    except OutputError as exc:
        return _fail(str(exc), len(bags))
    if not metadata.bags_ok:
        return _fail(f"None of the {len(bags)} bags could be read; see {args.out / 'metadata.yaml'}.", len(bags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
