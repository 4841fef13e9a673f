"""What msgspec raises for bytes it cannot decode, turned into railcar's CodecError."""

from __future__ import annotations

import msgspec

from railcar.errors import CodecError

# msgspec raises UnicodeDecodeError, not DecodeError, for some invalid UTF-8 (in dict keys).
MSGSPEC_INVALID = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


def invalid(what: str, exc: Exception) -> CodecError:
    """Return the CodecError saying why msgspec could not decode ``what``; ``exc`` is one it raised."""
    reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
    error = CodecError(f"invalid {what}: {reason}")
    error.__cause__ = exc
    return error
