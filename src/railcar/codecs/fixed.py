"""Fixed-size codecs: little-endian int32 and numpy structured records, with vectorised paths."""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from railcar.codecs.base import Buffer
from railcar.errors import CodecError

_NATIVE_INT32 = sys.byteorder == "little" and array.array("i").itemsize == 4

#: The 276-byte benchmark record: u64 id, i64 ts, u32 kind, u32 flags, 30 × f64 values, 12-byte tag.
RECORD_276 = np.dtype(
    [
        ("id", "<u8"),
        ("ts", "<i8"),
        ("kind", "<u4"),
        ("flags", "<u4"),
        ("values", "<f8", (30,)),
        ("tag", "S12"),
    ]
)


class StructCodec:
    """Fixed-size records described by a numpy dtype; items are the tuples ``ndarray.tolist()`` gives."""

    def __init__(self, dtype: np.dtype[Any], name: str) -> None:
        self.dtype = dtype
        self.itemsize = dtype.itemsize
        self.name = name

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append the records to ``out``; raises CodecError for a value that does not fit the dtype."""
        try:
            array = np.array(items, dtype=self.dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode {self.name} items: {exc}") from exc
        if array.shape != (len(items),):
            raise CodecError(f"cannot encode {self.name} items: shape {array.shape}")
        out += array.tobytes()

    def decode_batch(self, buf: Buffer) -> tuple[list[Any], int]:
        """Return the whole records at the start of ``buf`` and the bytes they used."""
        count = len(buf) // self.itemsize
        used = count * self.itemsize
        return np.frombuffer(buf, dtype=self.dtype, count=count).tolist(), used

    def decode_array(self, buf: Buffer) -> NDArray[Any]:
        """View ``buf`` as a read-only array of records; raises CodecError if it is not whole records."""
        if len(buf) % self.itemsize:
            raise CodecError(f"{len(buf)} bytes are not whole {self.itemsize}-byte {self.name} records")
        return np.frombuffer(buf, dtype=self.dtype)

    def encode_array(self, array: NDArray[Any]) -> bytes:
        """Encode an array of records in one call; raises CodecError for another dtype or shape."""
        if array.ndim != 1:
            raise CodecError(
                f"expected a one-dimensional array of {self.name} records, got shape {array.shape}"
            )
        try:
            return array.astype(self.dtype, copy=False, casting="same_kind").tobytes()
        except TypeError as exc:
            raise CodecError(f"cannot encode {array.dtype} as {self.name}: {exc}") from exc


class Int32Codec(StructCodec):
    """4-byte little-endian signed integers; items are Python ints."""

    def __init__(self) -> None:
        super().__init__(np.dtype("<i4"), "int32")

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append the integers to ``out``; raises CodecError for a non-integer or a value outside int32."""
        try:
            # array("i") is the fastest exact conversion: it refuses floats and out-of-range values.
            if _NATIVE_INT32:
                out += array.array("i", items)
            else:
                out += np.array(items, dtype="<i4").tobytes()
        except (TypeError, OverflowError) as exc:
            raise CodecError(f"cannot encode int32 items: {exc}") from exc
