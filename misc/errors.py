"""The error every command line turns into one line on stderr (no traceback)."""
from __future__ import annotations

import sys
from typing import Callable


class BadInput(ValueError):
    """Something a person gave (a file, a config key, a flag, an output folder) is wrong; the message
    names it and says what is wrong, in one line."""


def report_bad_input(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main``: a BadInput becomes ``error: <message>`` on stderr and exit status 2."""
    def guarded(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except BadInput as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    guarded.__wrapped__ = main
    guarded.__doc__ = main.__doc__
    return guarded
