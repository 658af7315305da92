"""Integrity checkers: size, CRC32C and MD5, fed the bytes as they stream and verified at the end.

GCS reports CRC32C and MD5 as base64 of the big-endian digest; the checkers compare in that form.
:func:`crc32c_combine` joins the CRC32C of parts read apart (a sliced download's ranges) into the whole's.
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
    "crc32c_combine",
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


_CRC32C_POLY = 0x82F63B78  # Castagnoli, bit-reversed as the CRC is computed


def _multmodp(a: int, b: int) -> int:
    """a·b modulo the CRC32C polynomial, in the bit-reversed representation (zlib's multmodp)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC32C_POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    table, p = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return tuple(table)


_X2N = _x2n_table()  # x^(2^n) modulo the polynomial


def crc32c_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC32C of ``A + B`` from the CRC32C of A, that of B and B's length (zlib's crc32_combine).

    Multiplies ``crc1`` by x^(8·length2) modulo the polynomial: ~32 carry-less multiplications whatever the length,
    so combining the slices of a 1 GiB object costs microseconds, where reading it again costs a pass over it.
    """
    p, n, k = 1 << 31, length2, 3  # x^0; a byte is x^8 = x^(2^3)
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2
