"""What a transfer does with a file already at its destination: one meaning of each conflict mode everywhere.

Downloads, uploads and dataset fetches all decide each file with :func:`decide`, so ``skip``, ``verify`` and
``overwrite`` mean the same thing whichever way the bytes move and whichever page or command asks:

- ``skip``: a destination that already holds this file (the same size as the source) is left alone; one whose
  size differs is not this file (a cut-short copy, another version) and is transferred again, replacing it.
- ``verify``: the same, but holding this file also needs the same CRC32C (read only when the sizes match).
- ``overwrite``: every file is transferred again.

A replaced file is replaced the way every transfer writes (temporary file, verified, then renamed; an upload
under the generation precondition), and its plan entry says it is a replacement and why.
:data:`CONFLICT_LABELS` are the words the pages and the command line show for the modes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Literal

__all__ = [
    "CONFLICT_LABELS",
    "CONFLICT_MODES",
    "REPLACED",
    "ConflictDecision",
    "ConflictMode",
    "conflict_help",
    "decide",
    "regular_file_size",
]

ConflictMode = Literal["skip", "overwrite", "verify"]
CONFLICT_MODES: tuple[ConflictMode, ...] = ("skip", "overwrite", "verify")
CONFLICT_LABELS: dict[ConflictMode, tuple[str, str]] = {
    "skip": ("Keep if same size", "Keep a file already there with the same size; replace one whose size differs"),
    "overwrite": ("Replace all", "Transfer every file again, replacing the copy already there"),
    "verify": ("Keep if same checksum",
               "Keep a file already there with the same size and CRC32C; replace one that differs"),
}
"""Mode → (short label, one-line meaning), as every page and the command line's help show them.

A label says what the mode does with a file already there ("Skip existing" hid that one of another size is replaced),
in few enough words to fit the pages' controls whole."""


def conflict_help(modes: tuple[ConflictMode, ...] = CONFLICT_MODES, *, by_name: bool = False) -> str:
    """Each mode's label and meaning on a line of its own (a tooltip), or by mode name, joined by `` · `` (help)."""
    if by_name:
        return " · ".join(f"{mode}: {CONFLICT_LABELS[mode][1][0].lower()}{CONFLICT_LABELS[mode][1][1:]}"
                          for mode in modes)
    return "\n".join(f"{CONFLICT_LABELS[mode][0]}: {CONFLICT_LABELS[mode][1]}" for mode in modes)


REPLACED = "replaced: "
"""How the reason of a file that replaces the one at its destination begins."""


@dataclass(frozen=True)
class ConflictDecision:
    """One file's fate: transfer it or leave the destination alone, and why."""

    action: Literal["transfer", "skip"]
    reason: str
    replaces: bool
    """Whether a transfer replaces a file already at the destination."""


def decide(
    conflict: ConflictMode,
    source_size: int,
    target_size: int | None,
    same_crc32c: Callable[[], bool],
    *,
    upload: bool = False,
    missing: str = "not downloaded",
) -> ConflictDecision:
    """Decide one file under ``conflict`` (see the module's docstring).

    ``target_size`` is the destination's size, None when it holds no file. ``same_crc32c`` compares the
    destination's CRC32C with the source's; it is called only under ``verify`` and only when the sizes match,
    so a file is read only when its checksum decides. ``upload`` says the destination is the cloud object (for
    the wording of the reason); ``missing`` is the reason given when there is nothing at the destination.
    """
    if target_size is None:
        return ConflictDecision("transfer", missing, replaces=False)
    if conflict == "overwrite":
        return ConflictDecision("transfer", f"{REPLACED}as asked (every file again)", replaces=True)
    if target_size != source_size:
        local, cloud = (source_size, target_size) if upload else (target_size, source_size)
        return ConflictDecision(
            "transfer", f"{REPLACED}size differs (local {local:,} B, cloud {cloud:,} B)", replaces=True
        )
    if conflict == "skip":
        where = "in the cloud" if upload else "there"
        return ConflictDecision("skip", f"already {where} with the same size (kept; checksums not compared)",
                                replaces=False)
    if not same_crc32c():
        return ConflictDecision("transfer", f"{REPLACED}CRC32C differs", replaces=True)
    return ConflictDecision("skip", "verified identical (size and CRC32C)", replaces=False)


def regular_file_size(path: Path) -> int | None:
    """The size of the regular file at ``path``, or None if there is none (nothing, or a folder)."""
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_size if S_ISREG(stat.st_mode) else None
