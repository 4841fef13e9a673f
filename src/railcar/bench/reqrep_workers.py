"""The processes of ``railcar bench reqrep``: railcar clients and the peers' servers and clients.

``python -m railcar.bench.reqrep_workers server NAME --port 0`` prints ``listening on HOST:PORT``;
``python -m railcar.bench.reqrep_workers client NAME --port P --seconds S`` prints ``start`` when
its measured window opens, then one JSON object: requests answered, errors, seconds;
``python -m railcar.bench.reqrep_workers prime NAME --port P`` makes one call to the server that
client NAME loads (see ``railcar.bench.prime``).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import uvloop

from railcar.bench.prime import TIMEOUT, Prime, exchange
from railcar.codecs import RECORD_276
from railcar.errors import ConnectionLost, RailcarError
from railcar.reqrep import Client
from railcar.reqrep.sync import SyncClient

FRAME_INTS = 1000  # ints per frame or message for every batched system
IN_FLIGHT = 8  # frames or batches kept in flight by each pipelined client
_LENGTH = struct.Struct("<I")


class Counter:
    """Requests answered so far, and the errors seen."""

    def __init__(self) -> None:
        self.done = 0
        self.errors = 0
        self.stop = False


async def measure(counter: Counter, warmup: float, seconds: float) -> dict[str, float]:
    """Let the load warm up, then count what is answered during ``seconds``."""
    await asyncio.sleep(warmup)
    print("start", flush=True)
    start_done, start_errors, started = counter.done, counter.errors, time.perf_counter()
    await asyncio.sleep(seconds)
    result = {
        "ops": counter.done - start_done,
        "errors": counter.errors - start_errors,
        "elapsed": time.perf_counter() - started,
    }
    counter.stop = True
    return result


# -- railcar clients -----------------------------------------------------------------------


async def _pipelined(counter: Counter, one_batch: Callable[[], Awaitable[int]]) -> None:
    while not counter.stop:
        try:
            answered = await one_batch()  # not `done += await`: that reads done before awaiting
        except ConnectionLost:
            counter.errors += 1
            return
        except Exception:  # noqa: BLE001 - counted, the load goes on
            counter.errors += 1
        else:
            counter.done += answered


def _array_client(codec: str, records: Any) -> Callable[[str, int, Counter], Awaitable[list[Any]]]:
    async def run(host: str, port: int, counter: Counter) -> list[Any]:
        client = await Client.connect(host, port, codec, max_in_flight=IN_FLIGHT * FRAME_INTS)

        async def one_batch() -> int:
            return len(await client.call_array(records))

        return [_pipelined(counter, one_batch) for _ in range(IN_FLIGHT)]

    return run


async def _jsonl_client(host: str, port: int, counter: Counter) -> list[Any]:
    client = await Client.connect(host, port, "jsonl", max_in_flight=IN_FLIGHT * FRAME_INTS)
    documents = [{"id": i, "name": "railcar", "ok": True, "score": i * 0.5} for i in range(FRAME_INTS)]

    async def one_batch() -> int:
        return len(await client.call_many(documents))

    return [_pipelined(counter, one_batch) for _ in range(IN_FLIGHT)]


async def _call_client(host: str, port: int, counter: Counter) -> list[Any]:
    client = await Client.connect(host, port, "int32")

    async def caller(number: int) -> None:
        while not counter.stop:
            try:
                await client.call(number)
                counter.done += 1
            except ConnectionLost:
                counter.errors += 1
                return
            except Exception:  # noqa: BLE001 - counted, the load goes on
                counter.errors += 1

    return [caller(i) for i in range(1000)]


def _sync_client(many: bool) -> Callable[[str, int, Counter], Awaitable[list[Any]]]:
    async def run(host: str, port: int, counter: Counter) -> list[Any]:
        client = SyncClient(host, port, "int32")
        batch = list(range(FRAME_INTS))
        lock = threading.Lock()

        def work() -> None:
            done = 0
            while not counter.stop:
                if many:
                    done += len(client.call_many(batch))
                else:
                    client.call(7)
                    done += 1
                if done >= 100:  # counted often, so a short window sees a slow client
                    with lock:
                        counter.done += done
                    done = 0

        for _ in range(8):
            threading.Thread(target=work, daemon=True).start()
        return []

    return run


# -- the raw uvloop peer: length-prefixed frames of 1000 int32, written by hand -------------


def _increment(number: int) -> int:
    return number + 1


class _RawServer(asyncio.Protocol):
    vectorised = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.pending + data if self.pending else data
        offset, replies = 0, []
        while len(buffer) - offset >= 4:
            (size,) = _LENGTH.unpack_from(buffer, offset)
            if len(buffer) - offset - 4 < size:
                break
            body = buffer[offset + 4 : offset + 4 + size]
            offset += 4 + size
            if self.vectorised:
                reply = (np.frombuffer(body, "<i4") + np.int32(1)).tobytes()
            else:
                reply = array.array("i", map(_increment, array.array("i", body))).tobytes()
            replies.append(_LENGTH.pack(len(reply)))
            replies.append(reply)
        self.pending = buffer[offset:]
        self.transport.writelines(replies)


class _RawNumpyServer(_RawServer):
    vectorised = True


async def _raw_client(host: str, port: int, counter: Counter) -> list[Any]:
    loop = asyncio.get_running_loop()
    frame = _LENGTH.pack(4 * FRAME_INTS) + np.arange(FRAME_INTS, dtype="<i4").tobytes()
    frame_size = len(frame)

    class Pipelined(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.received = 0
            transport.write(frame * IN_FLIGHT)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            self.received += len(data)
            frames, self.received = divmod(self.received, frame_size)
            if frames:
                counter.done += frames * FRAME_INTS
                if not counter.stop:
                    self.transport.write(frame * frames)

    await loop.create_connection(Pipelined, host, port)
    return []


# -- pyzmq DEALER/ROUTER -------------------------------------------------------------------


def _zmq_server(port: int, batched: bool) -> None:
    import zmq  # noqa: PLC0415 - only the zmq peer needs it

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    if port == 0:
        port = router.bind_to_random_port("tcp://127.0.0.1")
    else:
        router.bind(f"tcp://127.0.0.1:{port}")
    print(f"listening on 127.0.0.1:{port}", flush=True)
    while True:
        identity, body = router.recv_multipart(copy=True)
        if batched:
            reply = (np.frombuffer(body, "<i4") + np.int32(1)).tobytes()
        else:
            reply = struct.pack("<i", struct.unpack("<i", body)[0] + 1)
        router.send_multipart((identity, reply))


def _zmq_client(batched: bool) -> Callable[[str, int, Counter], Awaitable[list[Any]]]:
    async def run(host: str, port: int, counter: Counter) -> list[Any]:
        import zmq  # noqa: PLC0415

        body = np.arange(FRAME_INTS, dtype="<i4").tobytes() if batched else struct.pack("<i", 7)
        per_message = FRAME_INTS if batched else 1
        window = IN_FLIGHT if batched else 1000

        def work() -> None:
            dealer: Any = zmq.Context.instance().socket(zmq.DEALER)
            dealer.connect(f"tcp://{host}:{port}")
            for _ in range(window):
                dealer.send(body)
            while not counter.stop:
                dealer.recv()
                counter.done += per_message
                dealer.send(body)

        threading.Thread(target=work, daemon=True).start()
        return []

    return run


# -- grpcio aio unary ------------------------------------------------------------------------


def _grpc_identity(data: bytes) -> bytes:
    return data


async def _grpc_server(port: int) -> None:
    import grpc  # noqa: PLC0415 - only the grpc peer needs it

    async def increment(request: bytes, context: Any) -> bytes:
        return struct.pack("<i", struct.unpack("<i", request)[0] + 1)

    handler = grpc.method_handlers_generic_handler(
        "bench.Reqrep",
        {
            "Increment": grpc.unary_unary_rpc_method_handler(
                increment, request_deserializer=_grpc_identity, response_serializer=_grpc_identity
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


async def _grpc_client(host: str, port: int, counter: Counter) -> list[Any]:
    import grpc  # noqa: PLC0415

    channel = grpc.aio.insecure_channel(f"{host}:{port}")
    call = channel.unary_unary(
        "/bench.Reqrep/Increment", request_serializer=_grpc_identity, response_deserializer=_grpc_identity
    )
    body = struct.pack("<i", 7)

    async def caller() -> None:
        while not counter.stop:
            try:
                await call(body)
                counter.done += 1
            except grpc.aio.AioRpcError:
                counter.errors += 1

    return [caller() for _ in range(100)]


ClientFactory = Callable[[str, int, Counter], Awaitable[list[Any]]]

CLIENTS: dict[str, ClientFactory] = {
    "int32": _array_client("int32", np.arange(FRAME_INTS, dtype="<i4")),
    "int32-vec": _array_client("int32", np.arange(FRAME_INTS, dtype="<i4")),
    "struct276": _array_client("struct276", np.zeros(FRAME_INTS, dtype=RECORD_276)),
    "jsonl": _jsonl_client,
    "call": _call_client,
    "sync": _sync_client(many=False),
    "sync-many": _sync_client(many=True),
    "raw-item": _raw_client,
    "raw-numpy": _raw_client,
    "pyzmq-1": _zmq_client(batched=False),
    "pyzmq-1000": _zmq_client(batched=True),
    "grpc-aio": _grpc_client,
}


# -- primes: one call on a connection of its own before a server is measured --------------


def _prime_railcar(codec: str, request: Any) -> Prime:
    def prime(host: str, port: int) -> None:
        with SyncClient(host, port, codec, reconnect=False) as client:
            client.call(request, timeout=TIMEOUT)

    return prime


def _prime_zmq(host: str, port: int) -> None:
    import zmq  # noqa: PLC0415 - only the zmq peer needs it

    with zmq.Context() as context, context.socket(zmq.DEALER) as dealer:
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
        dealer.connect(f"tcp://{host}:{port}")
        dealer.send(struct.pack("<i", 7))  # one int: a whole request of both zmq peers
        dealer.recv()


def _prime_grpc(host: str, port: int) -> None:
    import grpc  # noqa: PLC0415 - only the grpc peer needs it

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary(
            "/bench.Reqrep/Increment", request_serializer=_grpc_identity, response_deserializer=_grpc_identity
        )
        call(struct.pack("<i", 7), timeout=TIMEOUT)


# Primes that load pyzmq or grpcio, run in a process of their own: their threads would
# otherwise live on in the bench's process, which goes on to fork every later server and load.
_PRIMES_IN_CHILD: dict[str, Prime] = {
    "pyzmq-1": _prime_zmq,
    "pyzmq-1000": _prime_zmq,
    "grpc-aio": _prime_grpc,
}


def _in_child(name: str) -> Prime:
    def prime(host: str, port: int) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "railcar.bench.reqrep_workers",
                "prime",
                name,
                "--host",
                host,
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 3,
            check=False,
        )
        if done.returncode:
            raise RailcarError(done.stderr.strip()[-300:] or f"exit status {done.returncode}")

    return prime


_raw_prime = exchange(_LENGTH.pack(4) + struct.pack("<i", 7), _LENGTH.pack(4) + struct.pack("<i", 8))
_int32_prime = _prime_railcar("int32", 7)

# The prime of the server each client of CLIENTS loads.
PRIMES: dict[str, Prime] = {
    "int32": _int32_prime,
    "int32-vec": _int32_prime,
    "struct276": _prime_railcar("struct276", np.zeros(1, dtype=RECORD_276).tolist()[0]),
    "jsonl": _prime_railcar("jsonl", {"prime": True}),
    "call": _int32_prime,
    "sync": _int32_prime,
    "sync-many": _int32_prime,
    "raw-item": _raw_prime,
    "raw-numpy": _raw_prime,
    **{name: _in_child(name) for name in _PRIMES_IN_CHILD},
}


async def _serve_raw(protocol: type[asyncio.Protocol], port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    await asyncio.Event().wait()


def serve_peer(name: str, port: int) -> None:
    """Run the named peer server until the process is terminated."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if name == "raw-item":
        uvloop.run(_serve_raw(_RawServer, port))
    elif name == "raw-numpy":
        uvloop.run(_serve_raw(_RawNumpyServer, port))
    elif name in ("pyzmq-1", "pyzmq-1000"):
        _zmq_server(port, batched=name == "pyzmq-1000")
    elif name == "grpc-aio":
        asyncio.run(_grpc_server(port))  # grpcio's aio supports the stdlib loop, not uvloop
    else:
        raise SystemExit(f"unknown peer {name!r}")


async def run_client(name: str, host: str, port: int, warmup: float, seconds: float) -> dict[str, float]:
    """Drive the named load and return what was measured."""
    counter = Counter()
    tasks = [asyncio.ensure_future(job) for job in await CLIENTS[name](host, port, counter)]
    result = await measure(counter, warmup, seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return result


def main(argv: list[str] | None = None) -> None:
    """Entry point of the worker processes."""
    parser = argparse.ArgumentParser(prog="railcar.bench.reqrep_workers")
    parser.add_argument("role", choices=("server", "client", "prime"))
    parser.add_argument("name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.role == "server":
        serve_peer(args.name, args.port)
        return
    if args.role == "prime":
        _PRIMES_IN_CHILD[args.name](args.host, args.port)
        return
    runner = asyncio.run if args.name == "grpc-aio" else uvloop.run
    result = runner(run_client(args.name, args.host, args.port, args.warmup, args.seconds))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
