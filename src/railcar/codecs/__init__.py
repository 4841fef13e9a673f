"""Codecs: batches of messages to bytes and back, one instance per connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from railcar.codecs.base import Buffer, Codec, CodecFactory, FixedSizeCodec
from railcar.codecs.fixed import RECORD_276, Int32Codec, StructCodec
from railcar.codecs.frames import FramesCodec, MsgpackCodec
from railcar.codecs.jsonl import JsonLinesCodec

_FACTORIES: dict[str, Callable[[], Codec[Any]]] = {
    "int32": Int32Codec,
    "struct276": lambda: StructCodec(RECORD_276, "struct276"),
    "jsonl": JsonLinesCodec,
    "msgpack": MsgpackCodec,
    "frames": FramesCodec,
}
CODECS = tuple(_FACTORIES)


def codec_factory(name: str) -> CodecFactory:
    """Return the factory of the codec called ``name``; raises ValueError naming the choices."""
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
