"""Every codec: round trip, any split of the stream, garbage gives only CodecError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railcar.codecs import CODECS, RECORD_276, Codec, FramesCodec, JsonLinesCodec, MsgpackCodec, codec_factory
from railcar.errors import CodecError, FrameTooLarge

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
records = st.tuples(
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(finite, min_size=30, max_size=30),
    st.binary(max_size=12).map(lambda b: b.rstrip(b"\0")),
)
ITEMS: dict[str, st.SearchStrategy[Any]] = {
    "int32": st.integers(-(2**31), 2**31 - 1),
    "struct276": records,
    "jsonl": json_values,
    "msgpack": json_values | st.binary(max_size=50),
    "frames": st.binary(max_size=300),
}


def normalise(codec: str, items: list[Any]) -> list[Any]:
    """Compare records as tuples of plain values (numpy gives lists for the values field)."""
    if codec == "struct276":
        return [(*r[:4], list(r[4]), r[5]) for r in items]
    return items


def decode_in_chunks(codec: Codec[Any], stream: bytes, cuts: list[int]) -> list[Any]:
    tail, items = b"", []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        tail += stream[start:end]
        decoded, used = codec.decode_batch(memoryview(tail))
        items += decoded
        tail = tail[used:]
    assert tail == b""
    return items


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_split_decodes_to_the_same_items(name: str, data: st.DataObject) -> None:
    items = data.draw(st.lists(ITEMS[name], max_size=25))
    codec = codec_factory(name)()
    out = bytearray()
    codec.encode_batch(items, out)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(out)), max_size=8)))
    decoded = decode_in_chunks(codec_factory(name)(), bytes(out), cuts)
    assert normalise(name, decoded) == normalise(name, items)


@pytest.mark.parametrize(
    "codec", [JsonLinesCodec(max_line=64), MsgpackCodec(max_item=64), FramesCodec(max_item=64)], ids=str
)
@given(garbage=st.binary(max_size=200))
def test_garbage_raises_only_codec_errors(codec: Codec[Any], garbage: bytes) -> None:
    try:
        codec.decode_batch(garbage)
    except CodecError:
        pass


def test_vectorised_paths_have_no_per_item_surprises() -> None:
    int32 = codec_factory("int32")()
    out = bytearray()
    int32.encode_batch(list(range(-500, 500)), out)
    array = int32.decode_array(out)  # type: ignore[attr-defined]
    assert np.array_equal(array, np.arange(-500, 500))
    assert int32.encode_array(array + 1) == np.arange(-499, 501, dtype="<i4").tobytes()  # type: ignore[attr-defined]
    with pytest.raises(CodecError, match="not whole 4-byte"):
        int32.decode_array(b"\0" * 6)  # type: ignore[attr-defined]
    with pytest.raises(CodecError, match="one-dimensional"):
        int32.encode_array(np.zeros((2, 2), dtype="<i4"))  # type: ignore[attr-defined]
    assert RECORD_276.itemsize == 276


@pytest.mark.parametrize("bad", [[2**31], [-(2**31) - 1], [1.5], ["7"]])
def test_int32_refuses_what_it_cannot_represent(bad: list[Any]) -> None:
    out = bytearray(b"kept")
    with pytest.raises(CodecError):
        codec_factory("int32")().encode_batch(bad, out)
    assert out == b"kept"


def test_limits_raise_frame_too_large_before_waiting() -> None:
    with pytest.raises(FrameTooLarge):
        FramesCodec(max_item=10).decode_batch(b"\xff\xff\x00\x00")
    with pytest.raises(FrameTooLarge):
        MsgpackCodec(max_item=10).decode_batch(b"\x00\x01\x00\x00")
    with pytest.raises(FrameTooLarge):
        JsonLinesCodec(max_line=10).decode_batch(b'{"a": "' + b"x" * 20)
    with pytest.raises(FrameTooLarge):
        JsonLinesCodec(max_line=10).decode_batch(b'"' + b"x" * 20 + b'"\n')


def test_unknown_codec_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of int32, struct276, jsonl, msgpack, frames"):
        codec_factory("xml")
    assert codec_factory("int32")() is not codec_factory("int32")()
