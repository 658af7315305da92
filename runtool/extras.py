"""Optional parts of runtool, installed as pip extras, and the error that names the extra to install.

The base install serves the pages and writes reports. The Docker backend (``[docker]``), the Dask executor
(``[dask]``), the GCS emulator behind ``runtool emulator`` and ``runtool demo`` (``[demo]``) and JupyterLab
(``[lab]``) are extras, so their modules are imported only where they are used, through
:func:`require_extra`: a missing one then tells the user the exact command that fixes it instead of
showing a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from runtool.errors import RuntoolError

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(RuntoolError):
    """An optional module is not installed; the message names the ``pip install`` that adds it."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"The optional package {module!r} is not installed; this part of runtool needs it: "
            f"pip install 'runtool[{extra}]'"
        )
        self.module = module
        self.extra = extra


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module``, which the extra ``extra`` installs.

    Raises:
        MissingExtraError: ``module`` (or a module it needs) cannot be imported; installing the extra
            installs both.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc
