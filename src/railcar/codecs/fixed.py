"""Fixed-size codecs: little-endian int32 and numpy structured records, with vectorised array paths."""

from __future__ import annotations

import array
import functools
import itertools
import struct
import sys
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

from railcar.codecs.base import Buffer
from railcar.errors import CodecError

T = TypeVar("T")

# array("i") decodes a little faster than numpy, but only where it is the wire format.
_NATIVE_INT32 = sys.byteorder == "little" and array.array("i").itemsize == 4

#: The 276-byte benchmark record: u64 id, i64 ts, u32 kind, u32 flags, 30 × f64 values, 12-byte tag.
RECORD_276: np.dtype[Any] = np.dtype(
    [
        ("id", "<u8"),
        ("ts", "<i8"),
        ("kind", "<u4"),
        ("flags", "<u4"),
        ("values", "<f8", (30,)),
        ("tag", "S12"),
    ]
)


@functools.lru_cache(maxsize=256)
def _int32s(count: int) -> struct.Struct:
    # Compiling the format costs about as much as packing 100 ints; batch sizes repeat.
    return struct.Struct(f"<{count}i")


def _unused_bytes(dtype: np.dtype[Any]) -> int:
    """Return how many bytes of a ``dtype`` item belong to no field (alignment padding, holes)."""
    covered = bytearray(dtype.itemsize)

    def mark(dt: np.dtype[Any], offset: int) -> None:
        if dt.names is not None:
            for name in dt.names:
                field, field_offset = dt.fields[name][:2]  # type: ignore[index]
                mark(field, offset + field_offset)
        elif dt.subdtype is not None and dt.subdtype[0].names is not None:
            base, shape = dt.subdtype
            for k in range(int(np.prod(shape))):
                mark(base, offset + k * base.itemsize)
        else:
            covered[offset : offset + dt.itemsize] = b"\x01" * dt.itemsize

    mark(dtype, 0)
    return covered.count(0)


class _FixedSize(Generic[T]):
    """Shared decoding and array paths of the fixed-size codecs."""

    def __init__(self, dtype: DTypeLike, name: str) -> None:
        """Describe records of ``dtype``; raises ValueError for a dtype that is not plain fixed-size data."""
        self.dtype: np.dtype[Any] = np.dtype(dtype)
        if self.dtype.hasobject or self.dtype.itemsize == 0:
            raise ValueError(f"codec {name!r} needs a fixed-size dtype without objects, not {self.dtype}")
        unused = _unused_bytes(self.dtype)
        if unused:
            # numpy leaves such bytes uninitialised when it builds or casts records, so they
            # would carry whatever was in the process's memory onto the wire.
            raise ValueError(
                f"codec {name!r} needs a dtype without padding: {unused} of its {self.dtype.itemsize} "
                f"bytes belong to no field (build it with align=False and no gaps between offsets)"
            )
        self.itemsize = self.dtype.itemsize
        self.name = name

    def decode_batch(self, buf: Buffer) -> tuple[list[T], int]:
        """Return the whole records at the start of ``buf`` and the bytes they used."""
        count = len(buf) // self.itemsize
        items: list[T] = np.frombuffer(buf, dtype=self.dtype, count=count).tolist()
        return items, count * self.itemsize

    def decode_each(self, buf: Buffer) -> tuple[list[T | CodecError], int]:
        """Return the whole records at the start of ``buf`` and the bytes they used; raises nothing.

        Every whole record decodes, so none is an error.
        """
        items, used = self.decode_batch(buf)
        each: list[T | CodecError] = list(items)
        return each, used

    def decode_array(self, buf: Buffer) -> NDArray[Any]:
        """Return ``buf``'s records as an array sharing its memory; raises CodecError unless whole records.

        The array is read-only for ``bytes`` and keeps a ``bytearray`` from being resized while it lives.
        """
        if len(buf) % self.itemsize:
            raise CodecError(f"{len(buf)} bytes are not whole {self.itemsize}-byte {self.name} records")
        return np.frombuffer(buf, dtype=self.dtype)

    def encode_array(self, array: NDArray[Any]) -> bytes:
        """Encode a one-dimensional array of records in one call; raises CodecError for wrong dtype/shape.

        Safe casts (e.g. int16 or big-endian int32 for int32) are made; a same-kind cast
        (e.g. int64 for int32) only when every value survives it.
        """
        if not isinstance(array, np.ndarray) or array.ndim != 1:
            shape = getattr(array, "shape", type(array).__name__)
            raise CodecError(f"expected a one-dimensional array of {self.name} records, got {shape}")
        if array.dtype != self.dtype:
            array = self._cast(array)
        return array.tobytes()

    def _cast(self, array: NDArray[Any]) -> NDArray[Any]:
        if np.can_cast(array.dtype, self.dtype, "safe"):
            return array.astype(self.dtype)
        if np.can_cast(array.dtype, self.dtype, "same_kind"):
            converted = array.astype(self.dtype)
            try:
                # Compares values, not bytes: int64 5 equals int32 5; lossy conversions differ.
                survived = bool(np.array_equal(converted, array))
            except (TypeError, ValueError):
                survived = False
            if survived:
                return converted
            raise CodecError(f"values of the {array.dtype} array do not fit {self.name} ({self.dtype})")
        raise CodecError(f"cannot encode a {array.dtype} array as {self.name} ({self.dtype})")


class StructCodec(_FixedSize[tuple[Any, ...]]):
    """Fixed-size records described by a numpy dtype; items are the tuples ``ndarray.tolist()`` gives."""

    def __init__(self, dtype: DTypeLike, name: str) -> None:
        """Check the dtype; raises ValueError unless structured (named fields), packed and without objects."""
        super().__init__(dtype, name)
        if self.dtype.names is None:
            raise ValueError(f"codec {name!r} needs a structured dtype with named fields, not {self.dtype}")

    def encode_batch(self, items: Sequence[tuple[Any, ...]], out: bytearray) -> None:
        """Append the records to ``out``; raises CodecError for an item that is not a tuple fitting the dtype.

        numpy converts leniently within a field (a long ``S`` tag is cut, a float id truncated).
        """
        if isinstance(items, np.ndarray):
            out += self.encode_array(items)
            return
        if not isinstance(items, list | tuple):
            items = list(items)  # read twice below: a generator would be empty the second time
        # numpy would copy a bare scalar into every field of a record rather than refuse it.
        if not all(map(isinstance, items, itertools.repeat(tuple))):
            raise CodecError(f"{self.name} items must be tuples with one value per field")
        try:
            records = np.array(items, dtype=self.dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode {self.name} items: {exc}") from exc
        if records.shape != (len(items),):
            raise CodecError(f"cannot encode {self.name} items: they make an array of shape {records.shape}")
        # .data: `bytearray += ndarray` would be numpy's element-wise addition.
        out += records.data


class Int32Codec(_FixedSize[int]):
    """4-byte little-endian signed integers; items are Python ints."""

    def __init__(self) -> None:
        super().__init__("<i4", "int32")

    def encode_batch(self, items: Sequence[int], out: bytearray) -> None:
        """Append the integers to ``out``; raises CodecError for a non-integer or a value outside int32."""
        if isinstance(items, np.ndarray):
            out += self.encode_array(items)
            return
        try:
            # One struct call is about twice as fast as array("i") or numpy for a list of ints,
            # and, like them, refuses floats and out-of-range values instead of wrapping.
            out += _int32s(len(items)).pack(*items)
        except (struct.error, TypeError) as exc:
            raise CodecError(f"cannot encode int32 items: {exc}") from exc

    def decode_batch(self, buf: Buffer) -> tuple[list[int], int]:
        """Return the whole integers at the start of ``buf`` and the bytes they used."""
        used = len(buf) - len(buf) % 4
        if not _NATIVE_INT32:
            return np.frombuffer(buf, dtype="<i4", count=used // 4).tolist(), used
        ints = array.array("i")
        ints.frombytes(buf if used == len(buf) else memoryview(buf)[:used])
        return ints.tolist(), used
