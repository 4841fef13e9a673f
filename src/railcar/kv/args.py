"""Argument parsing shared by the commands, with Redis's rules for numbers."""

from __future__ import annotations

from typing import Final

import numpy as np

from railcar.proto.resp import string_to_int

_MAX_FLOAT_CHARS: Final = 5 * 1024  # Redis's MAX_LONG_DOUBLE_CHARS
_SPACES: Final = b" \t\n\v\f\r"

parse_int = string_to_int


def parse_long_double(arg: bytes) -> np.longdouble | None:
    """Redis's ``string2ld`` (strtold, whole string, no leading space, no NaN), else None."""
    if not arg or len(arg) >= _MAX_FLOAT_CHARS or arg[0] in _SPACES or arg[-1] in _SPACES:
        return None
    try:
        value = np.longdouble(arg.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    if np.isnan(value):
        return None
    return value


def format_long_double(value: np.longdouble) -> bytes:
    """A long double as INCRBYFLOAT prints it: ``%.17Lf`` without trailing zeros."""
    text = np.format_float_positional(value, precision=17, unique=False, fractional=True, trim="k")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.encode()


def parse_float(arg: bytes) -> float | None:
    """Redis's ``string2d`` for doubles (strtod, whole string, no leading space, no NaN), else None."""
    value = parse_long_double(arg)
    return None if value is None else float(value)


def parse_cursor(arg: bytes) -> int | None:
    """A SCAN cursor as Redis reads it (``strtoul``: sign allowed, empty is 0, no spaces), else None."""
    if not arg:
        return 0
    if arg[0] in _SPACES:
        return None
    sign, digits = (arg[:1], arg[1:]) if arg[:1] in (b"+", b"-") else (b"", arg)
    if not digits or not digits.isdigit():
        return None
    value = int(digits)
    if value >= 2**64:
        return None
    return (2**64 - value) % 2**64 if sign == b"-" else value
