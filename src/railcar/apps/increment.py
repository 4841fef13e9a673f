"""The demo request–response service: integers come back incremented, other records echoed or bumped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from railcar.reqrep import Mode


def _bump_record(record: tuple[Any, ...]) -> tuple[Any, ...]:
    record_id, ts, kind, flags, values, tag = record
    return (record_id, ts, kind, flags + 1, values, tag)


def _bump_records(records: NDArray[Any]) -> NDArray[Any]:
    """Return the records with flags plus one; raises OverflowError if a flags is already the largest."""
    replies = records.copy()
    replies["flags"] = _increment_array(records["flags"])
    return replies


def _increment_array(numbers: NDArray[Any]) -> NDArray[Any]:
    """Return every number plus one; raises OverflowError if one is already its dtype's largest.

    numpy would wrap the largest to the smallest; item mode fails such a request (its reply
    cannot be encoded), so array mode fails it too rather than answer a wrong number.
    """
    largest = np.iinfo(numbers.dtype).max
    if numbers.size and numbers.max() == largest:
        raise OverflowError(f"cannot increment {largest}: the reply would overflow {numbers.dtype.name}")
    bumped: NDArray[Any] = numbers + numbers.dtype.type(1)  # of the same dtype: no promotion
    return bumped


def _increment(number: int) -> int:
    return number + 1


def _echo(item: Any) -> Any:
    return item


def _per_batch(per_item: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    def batch(items: list[Any]) -> list[Any]:
        return [per_item(item) for item in items]

    return batch


def increment_service(codec: str, mode: Mode) -> Callable[..., Any]:
    """Return the demo service for ``codec`` in ``mode``; raises ValueError: array mode on jsonl."""
    per_item: dict[str, Callable[[Any], Any]] = {
        "int32": _increment,
        "struct276": _bump_record,
    }
    arrays: dict[str, Callable[[NDArray[Any]], NDArray[Any]]] = {
        "int32": _increment_array,
        "struct276": _bump_records,
    }
    if mode == "array":
        if codec not in arrays:
            raise ValueError(f"mode 'array' needs a fixed-size codec (int32 or struct276), not {codec!r}")
        return arrays[codec]
    handler = per_item.get(codec, _echo)
    return _per_batch(handler) if mode == "batch" else handler
