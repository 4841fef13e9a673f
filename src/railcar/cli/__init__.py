"""The ``railcar`` command line's entry point.

It imports nothing until it can handle a Ctrl-C: the commands' imports take about
0.1 s, and a Ctrl-C meanwhile printed a KeyboardInterrupt traceback.
"""

import sys
from typing import NoReturn

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; a Ctrl-C that no command handles prints one line and exits with status 130."""
    try:
        from railcar.cli.commands import run  # noqa: PLC0415 - after the Ctrl-C handling is in place

        run(argv)
    except KeyboardInterrupt:
        print("railcar: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
