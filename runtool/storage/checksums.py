"""Integrity checkers: size, CRC32C and MD5, fed the bytes as they stream and verified at the end.

GCS reports CRC32C and MD5 as base64 of the big-endian digest; the checkers compare in that form.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Protocol

import google_crc32c

from runtool.errors import RuntoolError

__all__ = [
    "ChecksumMismatch",
    "Crc32cChecker",
    "IntegrityChecker",
    "Md5Checker",
    "SizeChecker",
    "checkers_for",
    "file_crc32c",
]

CHUNK = 4 * 1024 * 1024


class ChecksumMismatch(RuntoolError):
    """The bytes received do not match what the object's metadata promises."""


class IntegrityChecker(Protocol):
    def update(self, chunk: bytes) -> None: ...

    def verify(self, what: str) -> None: ...


class SizeChecker:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0

    def update(self, chunk: bytes) -> None:
        self.seen += len(chunk)

    def verify(self, what: str) -> None:
        if self.seen != self.expected:
            raise ChecksumMismatch(f"{what}: received {self.seen:,} bytes, expected {self.expected:,}")


class Crc32cChecker:
    def __init__(self, expected_b64: str) -> None:
        self.expected = expected_b64
        self.checksum = google_crc32c.Checksum()

    def update(self, chunk: bytes) -> None:
        self.checksum.update(chunk)

    @property
    def value(self) -> str:
        return base64.b64encode(self.checksum.digest()).decode("ascii")

    def verify(self, what: str) -> None:
        if self.value != self.expected:
            raise ChecksumMismatch(f"{what}: CRC32C {self.value} does not match the object's {self.expected}")


class Md5Checker:
    def __init__(self, expected_b64: str) -> None:
        self.expected = expected_b64
        self.digest = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.digest.update(chunk)

    def verify(self, what: str) -> None:
        value = base64.b64encode(self.digest.digest()).decode("ascii")
        if value != self.expected:
            raise ChecksumMismatch(f"{what}: MD5 {value} does not match the object's {self.expected}")


def checkers_for(size: int, crc32c: str | None, md5: str | None) -> list[IntegrityChecker]:
    """Size always; CRC32C when the object has one (composite objects lack MD5), else MD5."""
    found: list[IntegrityChecker] = [SizeChecker(size)]
    if crc32c:
        found.append(Crc32cChecker(crc32c))
    elif md5:
        found.append(Md5Checker(md5))
    return found


def file_crc32c(path: Path) -> str:
    """The base64 CRC32C of a local file (as GCS spells it)."""
    checker = Crc32cChecker("")
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            checker.update(chunk)
    return checker.value
