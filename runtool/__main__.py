"""The ``runtool`` command's entry point: the installed console script and ``python -m runtool``.

Loading :mod:`runtool.cli` (pandas, google-cloud-storage, Voila, ...) takes about a second, before
:func:`runtool.cli.main` can handle a Ctrl-C. This module imports nothing heavy and loads the CLI inside the
same handling: a Ctrl-C at start-up ends the command as one later does (``runtool: interrupted``, code 130),
and a reader that left ends it quietly (code 141), as cli.main does; never with a traceback.
Only the interpreter's own start-up and the light ``runtool`` package run before it.
"""

from __future__ import annotations

import signal
import sys

TYPE_CHECKING = False  # as in runtool/__init__.py: typing itself takes milliseconds to import
if TYPE_CHECKING:
    from collections.abc import Sequence

INTERRUPTED = 130
"""What a shell reports for a command that SIGINT ended, as ``runtool.cli`` returns on Ctrl-C."""


def main(argv: Sequence[str] | None = None) -> int:
    # A command started in the background by a script inherits SIGINT ignored; runtool still takes SIGINT as
    # "cancel" (as `runtool serve` does), so a Ctrl-C sent on purpose is never lost.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from runtool import cli

        return cli.main(argv)
    except KeyboardInterrupt:
        print("runtool: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # a write before cli.main's own handling starts (argparse ignores its own failures)
        from runtool import cli

        cli.drop_stdout()
        return cli.PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
