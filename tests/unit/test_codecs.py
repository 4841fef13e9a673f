"""Codecs: round trips, the vectorised array paths, limits, refusals and the factory."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from railcar.codecs import (
    CODECS,
    RECORD_276,
    Codec,
    FixedSizeCodec,
    FramesCodec,
    Int32Codec,
    JsonLinesCodec,
    MsgpackCodec,
    StructCodec,
    codec_factory,
)
from railcar.errors import CodecError, FrameTooLarge


def record(n: int) -> tuple[Any, ...]:
    return (n, -n, n % 7, 2**32 - 1, [n + k / 4 for k in range(30)], b"tag%d" % n)


SAMPLES: dict[str, list[Any]] = {
    "int32": [0, 1, -1, 2**31 - 1, -(2**31), *range(100)],
    "struct276": [record(n) for n in range(20)],
    "jsonl": [{"id": 1, "name": "a\nb", "tags": ["x", "é"]}, [1, 2.5, None], "text", 0, True, {}],
    "msgpack": [{"id": 1, "blob": b"\0\xff"}, [1, 2.5, None], "text", -(2**63), 2**64 - 1, b""],
    "frames": [b"", b"x", b"\0" * 300, bytes(range(256))],
}


def plain(items: list[Any]) -> list[Any]:
    """Records' subarray fields come back as arrays (as ``tolist()`` gives them): compare as lists."""
    return [
        tuple(list(v) if isinstance(v, np.ndarray) else v for v in i) if type(i) is tuple else i
        for i in items
    ]


def encode(codec: Codec[Any], items: list[Any]) -> bytes:
    out = bytearray()
    codec.encode_batch(items, out)
    return bytes(out)


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_round_trip_consumes_everything(name: str, kind: type) -> None:
    codec = codec_factory(name)()
    data = encode(codec, SAMPLES[name])
    items, used = codec.decode_batch(kind(data))
    assert plain(items) == SAMPLES[name]
    assert used == len(data)


@pytest.mark.parametrize("name", CODECS)
def test_encode_appends_and_empty_batches_are_empty(name: str) -> None:
    codec = codec_factory(name)()
    out = bytearray(b"head")
    codec.encode_batch(SAMPLES[name][:1], out)
    assert out.startswith(b"head")
    assert bytes(out[4:]) == encode(codec, SAMPLES[name][:1])
    assert encode(codec, []) == b""
    assert codec.decode_batch(b"") == ([], 0)


@pytest.mark.parametrize("name", CODECS)
def test_an_incomplete_tail_is_left_for_the_caller(name: str) -> None:
    codec = codec_factory(name)()
    first, second = encode(codec, SAMPLES[name][:1]), encode(codec, SAMPLES[name][1:2])
    items, used = codec.decode_batch(first + second[:-1])
    assert plain(items) == SAMPLES[name][:1]
    assert used == len(first)


def test_struct_items_are_what_tolist_gives() -> None:
    codec = codec_factory("struct276")()
    (item,), _ = codec.decode_batch(encode(codec, [record(3)]))
    assert item[:4] == (3, -3, 3, 2**32 - 1)
    assert isinstance(item[4], np.ndarray)
    assert item[4].tolist() == record(3)[4]
    assert item[5] == b"tag3"


def test_struct276_is_the_276_byte_record() -> None:
    assert RECORD_276.itemsize == 276
    codec = codec_factory("struct276")()
    assert isinstance(codec, StructCodec)
    assert (codec.name, codec.itemsize, codec.dtype) == ("struct276", 276, RECORD_276)
    assert len(encode(codec, [record(1)] * 3)) == 3 * 276


def test_fixed_size_codecs_are_recognised_as_such() -> None:
    fixed = [name for name in CODECS if isinstance(codec_factory(name)(), FixedSizeCodec)]
    assert fixed == ["int32", "struct276"]


def test_int32_array_paths_need_no_per_item_code() -> None:
    codec = Int32Codec()
    data = encode(codec, list(range(-500, 500)))
    array = codec.decode_array(data)
    assert array.dtype == np.dtype("<i4")
    assert np.array_equal(array, np.arange(-500, 500))
    assert codec.encode_array(array) == data
    assert codec.encode_array(array + 1) == np.arange(-499, 501, dtype="<i4").tobytes()
    assert codec.decode_array(b"").shape == (0,)


def test_decode_array_shares_memory_with_the_buffer() -> None:
    buf = bytearray(encode(Int32Codec(), [1, 2, 3]))
    array = Int32Codec().decode_array(buf)
    buf[0] = 9
    assert array[0] == 9
    assert not Int32Codec().decode_array(bytes(buf)).flags.writeable


def test_encode_array_casts_only_what_survives() -> None:
    codec = Int32Codec()
    expected = np.arange(5, dtype="<i4").tobytes()
    assert codec.encode_array(np.arange(5, dtype=np.int64)) == expected
    assert codec.encode_array(np.arange(5, dtype=">i4")) == expected
    assert codec.encode_array(np.arange(5, dtype=np.uint8)) == expected
    assert codec.encode_array(np.arange(10, dtype="<i4")[::2]) == np.arange(0, 10, 2, dtype="<i4").tobytes()
    with pytest.raises(CodecError, match="do not fit"):
        codec.encode_array(np.array([2**31], dtype=np.int64))
    with pytest.raises(CodecError, match="cannot encode a float64"):
        codec.encode_array(np.zeros(3))
    with pytest.raises(CodecError, match="one-dimensional"):
        codec.encode_array(np.zeros((2, 2), dtype="<i4"))
    with pytest.raises(CodecError, match="one-dimensional"):
        codec.encode_array([1, 2])  # type: ignore[arg-type]


def test_struct_array_paths() -> None:
    codec = StructCodec(RECORD_276, "struct276")
    data = encode(codec, [record(n) for n in range(10)])
    array = codec.decode_array(data)
    assert array["id"].tolist() == list(range(10))
    assert array["values"].shape == (10, 30)
    assert codec.encode_array(array) == data
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    assert codec.encode_array(big_endian) == data
    with pytest.raises(CodecError, match="not whole 276-byte struct276 records"):
        codec.decode_array(data[:-1])
    with pytest.raises(CodecError):
        codec.encode_array(np.zeros(3, dtype=[("id", "<u8")]))


@pytest.mark.parametrize("name", ["int32", "struct276"])
def test_encode_batch_of_an_array_takes_the_array_path(name: str) -> None:
    codec = codec_factory(name)()
    data = encode(codec, SAMPLES[name])
    array = codec.decode_array(data)  # type: ignore[attr-defined]
    assert encode(codec, array) == data


@pytest.mark.parametrize("length", [1, 3, 5, 7])
def test_decode_array_refuses_partial_records(length: int) -> None:
    with pytest.raises(CodecError, match="not whole 4-byte int32 records"):
        Int32Codec().decode_array(b"\0" * length)


@pytest.mark.parametrize("bad", [[2**31], [-(2**31) - 1], [1.5], ["7"], [None], [0, 2**40]])
def test_int32_refuses_what_it_cannot_represent(bad: list[Any]) -> None:
    out = bytearray(b"kept")
    with pytest.raises(CodecError):
        Int32Codec().encode_batch(bad, out)
    assert out == b"kept"


def test_int32_takes_bools_and_numpy_ints() -> None:
    assert encode(Int32Codec(), [True, np.int64(7), np.int32(-1)]) == struct.pack("<3i", 1, 7, -1)


@pytest.mark.parametrize(
    "bad",
    [
        [5],  # numpy would copy the scalar into every field
        [[1, 2, 3, 4, [0.0] * 30, b"x"]],
        [(1, 2)],
        [(1, 2, 3, 4, [0.0] * 29, b"x")],
        [(-1, 2, 3, 4, [0.0] * 30, b"x")],
        [(1, 2, 3, 4, [0.0] * 30, b"x"), "not a record"],
    ],
)
def test_struct_refuses_items_that_are_not_records(bad: list[Any]) -> None:
    out = bytearray(b"kept")
    with pytest.raises(CodecError):
        StructCodec(RECORD_276, "struct276").encode_batch(bad, out)
    assert out == b"kept"


@pytest.mark.parametrize("field", ["id", "ts", "kind", "flags"])
@pytest.mark.parametrize("edge", ["min", "max"])
def test_struct_refuses_integers_outside_their_field_on_every_path(field: str, edge: str) -> None:
    # numpy casts wrap silently: both paths must refuse a value its field cannot hold instead.
    limits = np.iinfo(RECORD_276.fields[field][0])  # type: ignore[index]
    value = limits.min - 1 if edge == "min" else limits.max + 1
    fields = {"id": 1, "ts": 2, "kind": 3, "flags": 4, field: value}
    codec = StructCodec(RECORD_276, "struct276")
    out = bytearray(b"kept")
    with pytest.raises(CodecError, match=r"out of bounds|too large"):
        codec.encode_batch([(*fields.values(), [0.0] * 30, b"x")], out)
    assert out == b"kept"
    if field in ("kind", "flags"):  # a wider integer dtype can hold the value: a same-kind cast
        wide = np.zeros(
            1, dtype=[(name, "<i8") for name in fields] + [("values", "<f8", (30,)), ("tag", "S12")]
        )
        wide[field] = value
        with pytest.raises(CodecError):
            codec.encode_array(wide)


def test_struct_codec_refuses_dtypes_without_fixed_bytes() -> None:
    with pytest.raises(ValueError, match="fixed-size dtype"):
        StructCodec(np.dtype(object), "objects")
    with pytest.raises(ValueError, match="fixed-size dtype"):
        StructCodec(np.dtype([]), "empty")
    with pytest.raises(ValueError, match="structured dtype"):
        StructCodec(np.dtype(">i4"), "plain")  # it could decode but never encode


def test_struct_and_frames_codecs_take_any_iterable_of_items() -> None:
    structs, frames = bytearray(), bytearray()
    StructCodec(np.dtype([("a", "<i4")]), "one").encode_batch((item for item in [(1,), (2,)]), structs)
    FramesCodec().encode_batch((item for item in [b"a", b"bc"]), frames)
    assert bytes(structs) == struct.pack("<2i", 1, 2)
    assert FramesCodec().decode_batch(frames) == ([b"a", b"bc"], len(frames))


def test_frames_wire_format_and_item_types() -> None:
    out = bytearray()
    ints = np.arange(3, dtype="<i4")
    FramesCodec().encode_batch([b"ab", bytearray(b"c"), memoryview(ints)], out)
    assert out == b"\2\0\0\0ab\1\0\0\0c\x0c\0\0\0" + ints.tobytes()
    items, _ = FramesCodec().decode_batch(memoryview(out))
    assert all(type(item) is bytes for item in items)


def test_frames_large_items_take_the_append_path() -> None:
    items = [bytes([n]) * 5000 for n in range(5)]
    codec = FramesCodec()
    assert codec.decode_batch(encode(codec, items)) == (items, 5 * 5004)


@pytest.mark.parametrize("bad", [["text"], [b"ok", 5], [b"ok", memoryview(b"abcd")[::2]]])
def test_frames_refuses_what_is_not_bytes(bad: list[Any]) -> None:
    out = bytearray(b"kept")
    with pytest.raises(CodecError):
        FramesCodec().encode_batch(bad, out)
    assert out == b"kept"


def test_msgpack_wire_format() -> None:
    assert encode(MsgpackCodec(), [1, "a"]) == b"\1\0\0\0\x01" + b"\2\0\0\0\xa1a"


@pytest.mark.parametrize("bad", [[object()], [1, 2**64], [1, {1j: 2}]])
def test_msgpack_refuses_what_it_cannot_encode(bad: list[Any]) -> None:
    out = bytearray(b"kept")
    with pytest.raises(CodecError, match="cannot encode msgpack"):
        MsgpackCodec().encode_batch(bad, out)
    assert out == b"kept"


@pytest.mark.parametrize("bad", [[object()], [1, {(1, 2): 3}], [float("nan"), b"bytes", 1j]])
def test_jsonl_refuses_what_it_cannot_encode(bad: list[Any]) -> None:
    out = bytearray(b"kept")
    with pytest.raises(CodecError, match="cannot encode jsonl"):
        JsonLinesCodec().encode_batch(bad, out)
    assert out == b"kept"


def test_typed_decoders_validate() -> None:
    assert JsonLinesCodec(type=int).decode_batch(b"1\n2\n") == ([1, 2], 4)
    with pytest.raises(CodecError, match="Expected `int`"):
        JsonLinesCodec(type=int).decode_batch(b'1\n"two"\n')
    with pytest.raises(CodecError, match="Expected `int`"):
        MsgpackCodec(type=int).decode_batch(encode(MsgpackCodec(), ["two"]))


def test_invalid_bytes_raise_codec_error_with_msgspec_message() -> None:
    with pytest.raises(CodecError, match="invalid JSON line"):
        JsonLinesCodec().decode_batch(b'{"a": 1}\n{"a": \n')
    with pytest.raises(CodecError, match="invalid msgpack item"):
        MsgpackCodec().decode_batch(b"\2\0\0\0\xc1\xc1")
    with pytest.raises(CodecError, match="invalid msgpack item"):
        MsgpackCodec().decode_batch(b"\2\0\0\0\x01\x01")  # trailing bytes in the item


def test_invalid_utf8_in_a_key_is_a_codec_error() -> None:
    # msgspec raises UnicodeDecodeError there, which is not one of its DecodeErrors.
    with pytest.raises(CodecError, match="invalid JSON line"):
        JsonLinesCodec().decode_batch(b'{"\xc2 \x80": 1}\n')
    with pytest.raises(CodecError, match="invalid msgpack item"):
        MsgpackCodec().decode_batch(b"\x05\0\0\0\x81\xa2\xc2 \xc0")


def test_deep_nesting_is_a_codec_error_not_a_recursion_error() -> None:
    with pytest.raises(CodecError, match="nested too deeply"):
        JsonLinesCodec().decode_batch(b"[" * 100_000 + b"\n")
    with pytest.raises(CodecError, match="nested too deeply"):
        MsgpackCodec().decode_batch(struct.pack("<I", 100_000) + b"\x91" * 100_000)


def test_jsonl_skips_blank_lines_and_takes_crlf() -> None:
    assert JsonLinesCodec().decode_batch(b"1\n\n 2 \r\n") == ([1, 2], 8)


@pytest.mark.parametrize("codec", [FramesCodec(max_item=10), MsgpackCodec(max_item=10)], ids=str)
def test_length_over_the_limit_raises_before_the_bytes_arrive(codec: Codec[Any]) -> None:
    assert codec.decode_batch(b"\x0a\0\0\0") == ([], 0)  # exactly the limit: wait for it
    with pytest.raises(FrameTooLarge, match="11 bytes exceeds the limit of 10"):
        codec.decode_batch(b"\x0b\0\0\0")
    with pytest.raises(FrameTooLarge):
        codec.decode_batch(b"\xff\xff\xff\xff")
    assert issubclass(FrameTooLarge, CodecError)


def test_encoding_over_the_limit_raises_frame_too_large() -> None:
    out = bytearray(b"kept")
    with pytest.raises(FrameTooLarge):
        FramesCodec(max_item=10).encode_batch([b"ok", b"x" * 11], out)
    with pytest.raises(FrameTooLarge):
        MsgpackCodec(max_item=10).encode_batch([1, b"x" * 11], out)
    with pytest.raises(FrameTooLarge):
        JsonLinesCodec(max_line=10).encode_batch([1, "x" * 11], out)
    assert out == b"kept"


def test_jsonl_line_limits() -> None:
    codec = JsonLinesCodec(max_line=10)
    assert codec.decode_batch(b'"12345678"\n' + b"x" * 10) == (["12345678"], 11)
    with pytest.raises(FrameTooLarge, match="limit of 10"):
        codec.decode_batch(b'{"a": "' + b"x" * 20)  # no newline yet
    with pytest.raises(FrameTooLarge):
        codec.decode_batch(b'1\n"123456789"\n')  # one complete line is 11 bytes
    with pytest.raises(FrameTooLarge):
        codec.decode_batch(b"1\n2\n" + b"3" * 11)  # complete lines, then a tail too long


@pytest.mark.parametrize("kind", [bytes, memoryview])
def test_jsonl_line_limits_in_large_batches(kind: type) -> None:
    codec = JsonLinesCodec(max_line=100)
    lines = b"".join(b'"%s"\n' % (b"x" * (n % 99)) for n in range(3000))
    assert len(codec.decode_batch(kind(lines))[0]) == 3000
    long_line = b'"' + b"y" * 99 + b'"\n'
    with pytest.raises(FrameTooLarge):
        codec.decode_batch(kind(lines + long_line + lines))
    with pytest.raises(FrameTooLarge):
        codec.decode_batch(kind(lines + b"z" * 101))


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (FramesCodec(max_item=4), b"\1\0\0\0a\xff\0\0\0"),
        (MsgpackCodec(max_item=4), b"\1\0\0\0\1\xff\0\0\0"),
        (MsgpackCodec(), b"\1\0\0\0\1\1\0\0\0\xc1"),
        (JsonLinesCodec(), b"1\n[\n"),
        (JsonLinesCodec(max_line=2), b"1\n12345"),
    ],
    ids=str,
)
def test_a_kept_error_does_not_lock_a_bytearray(codec: Codec[Any], data: bytes) -> None:
    buf = bytearray(data)
    with pytest.raises(CodecError) as caught:
        codec.decode_batch(buf)
    # The traceback is alive here; a view left in one of its frames would make this a BufferError.
    assert caught.value.__traceback__ is not None
    del buf[:1]


def test_limits_must_fit_the_length_prefix() -> None:
    with pytest.raises(ValueError, match="max_item"):
        FramesCodec(max_item=2**32)
    with pytest.raises(ValueError, match="max_item"):
        MsgpackCodec(max_item=-1)
    with pytest.raises(ValueError, match="max_line"):
        JsonLinesCodec(max_line=-1)


def test_codec_factory_makes_a_fresh_codec_per_call() -> None:
    assert CODECS == ("int32", "struct276", "jsonl", "msgpack", "frames")
    for name in CODECS:
        factory = codec_factory(name)
        first, second = factory(), factory()
        assert first is not second
        assert first.name == name


def test_unknown_codec_names_the_choices() -> None:
    with pytest.raises(
        ValueError, match="unknown codec 'xml'; choose one of int32, struct276, jsonl, msgpack, frames"
    ):
        codec_factory("xml")


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype([("a", "u1"), ("b", "<i4")], align=True),
        np.dtype({"names": ["a"], "formats": ["<i4"], "offsets": [4], "itemsize": 12}),
        np.dtype([("inner", np.dtype([("a", "u1"), ("b", "<i2")], align=True), (2,))]),
    ],
)
def test_struct_codec_refuses_dtypes_with_padding(dtype: np.dtype[Any]) -> None:
    # numpy leaves padding uninitialised: the codec would send process memory to the peer.
    with pytest.raises(ValueError, match="padding"):
        StructCodec(dtype, "padded")


def test_struct_codec_takes_packed_nested_and_subarray_dtypes() -> None:
    StructCodec(
        np.dtype([("a", "u1"), ("b", "<i4", (3,)), ("c", [("x", "u1"), ("y", "<f8")], (2,))]), "packed"
    )
    assert StructCodec(RECORD_276, "struct276").itemsize == 276
