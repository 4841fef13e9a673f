"""The Codec interface: a batch of items to one buffer, a buffer to a batch of items."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview


class Codec(Protocol[T]):
    """Encodes batches of items into bytes and decodes bytes into batches; one instance per connection."""

    name: str

    def encode_batch(self, items: Sequence[T], out: bytearray) -> None:
        """Append the encoding of every item to ``out``; raises CodecError for an item it cannot encode."""
        ...

    def decode_batch(self, buf: Buffer) -> tuple[list[T], int]:
        """Return the complete items at the start of ``buf`` and the bytes they used; raises CodecError."""
        ...


@runtime_checkable
class FixedSizeCodec(Protocol):
    """A codec of fixed-size records that also converts whole buffers to and from numpy arrays."""

    name: str
    itemsize: int
    dtype: np.dtype[Any]

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append the encoding of every item to ``out``; raises CodecError."""
        ...

    def decode_batch(self, buf: Buffer) -> tuple[list[Any], int]:
        """Return the complete records at the start of ``buf`` and the bytes they used."""
        ...

    def decode_array(self, buf: Buffer) -> NDArray[Any]:
        """View ``buf`` as an array of records; raises CodecError if it is not whole records."""
        ...

    def encode_array(self, array: NDArray[Any]) -> bytes:
        """Encode an array of records in one call; raises CodecError for an incompatible array."""
        ...


CodecFactory = Callable[[], Codec[Any]]
