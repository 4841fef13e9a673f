"""The Codec interface: a batch of items to one buffer, a buffer to a batch of items."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from railcar.errors import CodecError

T = TypeVar("T")

#: What decoders accept; a memoryview must have the byte format ("B"), as socket reads give.
Buffer = bytes | bytearray | memoryview


class Codec(Protocol[T]):
    """Encodes batches of items into bytes and decodes bytes into batches; one instance per connection.

    Codecs are pure byte transformations (no I/O), so a network reader keeps the
    unconsumed tail itself: ``items, used = codec.decode_batch(buf)``, then keep ``buf[used:]``.
    """

    name: str

    def encode_batch(self, items: Sequence[T], out: bytearray) -> None:
        """Append the encoding of every item to ``out``; raises CodecError, leaving ``out`` unchanged."""
        ...

    def decode_batch(self, buf: Buffer) -> tuple[list[T], int]:
        """Return the complete items at the start of ``buf`` and the bytes they used.

        An incomplete item at the end is left for the caller to keep. Raises CodecError
        for invalid bytes and FrameTooLarge for an item (complete or not) over the limit.
        """
        ...

    def decode_each(self, buf: Buffer) -> tuple[list[T | CodecError], int]:
        """Decode the complete items at the start of ``buf`` one by one; raises nothing.

        Returns the items, with the CodecError of each item that cannot be decoded in its
        place, and the bytes they used. Slower than ``decode_batch``: it is for telling the
        bad items of a batch that ``decode_batch`` refused from the good ones.
        """
        ...


# Runtime-checkable because the request-response layer picks the array path with isinstance.
@runtime_checkable
class FixedSizeCodec(Codec[T], Protocol):
    """A codec of fixed-size records that also converts whole buffers to and from numpy arrays."""

    itemsize: int
    dtype: np.dtype[Any]

    def decode_array(self, buf: Buffer) -> NDArray[Any]:
        """Return ``buf``'s records as an array sharing its memory; raises CodecError unless whole records."""
        ...

    def encode_array(self, array: NDArray[Any]) -> bytes:
        """Encode a one-dimensional array of records in one call; raises CodecError for wrong dtype/shape."""
        ...


CodecFactory = Callable[[], Codec[Any]]
