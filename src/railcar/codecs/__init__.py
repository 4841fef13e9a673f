"""Codecs: batches of messages to bytes and back, one instance per connection (pure, no I/O)."""

from __future__ import annotations

import functools

from railcar.codecs.base import Buffer, Codec, CodecFactory, FixedSizeCodec
from railcar.codecs.fixed import RECORD_276, Int32Codec, StructCodec
from railcar.codecs.frames import FramesCodec
from railcar.codecs.jsonl import JsonLinesCodec
from railcar.codecs.msgpack import MsgpackCodec

_FACTORIES: dict[str, CodecFactory] = {
    "int32": Int32Codec,
    "struct276": functools.partial(StructCodec, RECORD_276, "struct276"),
    "jsonl": JsonLinesCodec,
    "msgpack": MsgpackCodec,
    "frames": FramesCodec,
}

#: The names ``codec_factory`` knows, in the order the CLI lists them.
CODECS: tuple[str, ...] = tuple(_FACTORIES)


def codec_factory(name: str) -> CodecFactory:
    """Return the factory of codec ``name`` (a fresh codec per call); raises ValueError naming the choices."""
    try:
        return _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}") from None


__all__ = [
    "CODECS",
    "RECORD_276",
    "Buffer",
    "Codec",
    "CodecFactory",
    "FixedSizeCodec",
    "FramesCodec",
    "Int32Codec",
    "JsonLinesCodec",
    "MsgpackCodec",
    "StructCodec",
    "codec_factory",
]
