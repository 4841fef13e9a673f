"""Every codec decodes the same items however the stream is cut, and garbage gives only CodecError."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railcar.codecs import CODECS, Codec, FramesCodec, JsonLinesCodec, MsgpackCodec, codec_factory
from railcar.errors import CodecError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
records = st.tuples(
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(allow_nan=False, width=64), min_size=30, max_size=30),
    # numpy drops trailing NULs of an S field when it gives the value back.
    st.binary(max_size=12).map(lambda tag: tag.rstrip(b"\0")),
)
ITEMS: dict[str, st.SearchStrategy[Any]] = {
    "int32": st.integers(-(2**31), 2**31 - 1),
    "struct276": records,
    "jsonl": json_values,
    "msgpack": json_values | st.binary(max_size=50),
    "frames": st.binary(max_size=300),
}


def plain(items: list[Any]) -> list[Any]:
    """Records' subarray fields come back as arrays (as ``tolist()`` gives them): compare as lists."""
    return [
        tuple(v.tolist() if isinstance(v, np.ndarray) else v for v in i) if type(i) is tuple else i
        for i in items
    ]


def decode_in_chunks(codec: Codec[Any], stream: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``stream`` cut at ``cuts`` the way a network reader does: keep the tail, add the next chunk."""
    tail, items = b"", []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buf = tail + stream[start:end]
        decoded, used = codec.decode_batch(memoryview(buf))
        assert 0 <= used <= len(buf)
        items += decoded
        tail = buf[used:]
    assert tail == b""
    return items


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_any_split_decodes_to_the_same_items(name: str, data: st.DataObject) -> None:
    items = data.draw(st.lists(ITEMS[name], max_size=20), label="items")
    stream = bytearray()
    codec_factory(name)().encode_batch(items, stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts"))
    decoded = decode_in_chunks(codec_factory(name)(), bytes(stream), cuts)
    assert plain(decoded) == items


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_batches_concatenate(name: str, data: st.DataObject) -> None:
    """Encoding batch after batch into one buffer is the same stream as encoding them as one batch."""
    batches = data.draw(st.lists(st.lists(ITEMS[name], max_size=5), max_size=4), label="batches")
    codec = codec_factory(name)()
    one, many = bytearray(), bytearray()
    codec.encode_batch([item for batch in batches for item in batch], one)
    for batch in batches:
        codec.encode_batch(batch, many)
    assert one == many


@pytest.mark.parametrize(
    "codec",
    [JsonLinesCodec(max_line=64), MsgpackCodec(max_item=64), FramesCodec(max_item=64)],
    ids=lambda codec: str(codec.name),
)
@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_garbage_raises_only_codec_errors(codec: Codec[Any], garbage: bytes) -> None:
    try:
        _, used = codec.decode_batch(garbage)
    except CodecError:
        return
    assert 0 <= used <= len(garbage)
    assert len(garbage) - used <= 64 + 4  # what is kept is at most one item under the limit


@pytest.mark.parametrize("name", ["jsonl", "msgpack", "frames"])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_valid_stream_with_garbage_inside_raises_only_codec_errors(name: str, data: st.DataObject) -> None:
    items = data.draw(st.lists(ITEMS[name], max_size=5), label="items")
    stream = bytearray()
    codec_factory(name)().encode_batch(items, stream)
    at = data.draw(st.integers(0, len(stream)), label="at")
    stream[at:at] = data.draw(st.binary(min_size=1, max_size=20), label="garbage")
    try:
        codec_factory(name)().decode_batch(bytes(stream))
    except CodecError:
        pass


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_decode_each_agrees_with_decode_batch(name: str, data: st.DataObject) -> None:
    items = data.draw(st.lists(ITEMS[name], max_size=10), label="items")
    stream = bytearray()
    codec_factory(name)().encode_batch(items, stream)
    # An incomplete item is left alone (without a newline: for jsonl that would complete a line).
    stream += data.draw(st.binary(max_size=3), label="tail").replace(b"\n", b"")
    batch, batch_used = codec_factory(name)().decode_batch(memoryview(stream))
    each, each_used = codec_factory(name)().decode_each(memoryview(stream))
    assert (plain(each), each_used) == (plain(batch), batch_used)


@pytest.mark.parametrize(
    ("codec", "bad"),
    [
        (JsonLinesCodec(max_line=400), b"{bad json\n"),
        (MsgpackCodec(max_item=400), b"\x01\x00\x00\x00\xc1"),  # 0xc1 is never valid msgpack
        (FramesCodec(max_item=400), struct.pack("<I", 401) + bytes(401)),  # over the limit
    ],
    ids=["jsonl", "msgpack", "frames"],
)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_decode_each_fails_only_the_bad_item(codec: Codec[Any], bad: bytes, data: st.DataObject) -> None:
    """A bad item between good ones, its framing intact, is one CodecError; the others decode."""
    items = data.draw(st.lists(ITEMS[codec.name], min_size=2, max_size=6), label="items")
    at = data.draw(st.integers(0, len(items)), label="at")
    stream = bytearray()
    codec.encode_batch(items[:at], stream)
    stream += bad
    codec.encode_batch(items[at:], stream)
    each, used = codec.decode_each(bytes(stream))
    assert used == len(stream)
    assert isinstance(each.pop(at), CodecError)
    assert plain(each) == items
