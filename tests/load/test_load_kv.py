"""``railcar load --protocol kvbin`` and RESP GET/SET over a key space: every value read is checked."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from railcar.apps.kv import KvHandler
from railcar.apps.kvbin import KvbinHandler
from railcar.engine import create_server
from railcar.proto.kvbin import GET, NOT_FOUND_REPLY, OK_REPLY, RequestParser
from tests.load.servers import serving
from tests.load.test_load_cli import load, railcar


@pytest.fixture(scope="module")
def kvbin_port() -> Iterator[int]:
    handler = KvbinHandler()
    server = create_server(handler, "epoll", port=0)
    server.start()
    yield server.port
    server.stop(deadline=1.0)


@pytest.fixture(scope="module")
def resp_port() -> Iterator[int]:
    handler = KvHandler()
    server = create_server(handler, "epoll", port=0)
    server.start()
    yield server.port
    server.stop(deadline=1.0)
    handler.close()


@pytest.mark.parametrize("pipeline", ["1", "16"])
def test_kvbin_mixed_load_reads_back_every_value_it_wrote(kvbin_port: int, pipeline: str) -> None:
    result = load(
        kvbin_port, "--protocol", "kvbin", "--users", "8", "--procs", "2", "--pipeline", pipeline,
        "--keys", "5", "--value-size", "300",
    )  # fmt: skip
    assert result["received"] == result["sent"] > 0
    assert result["failures"] == 0


def test_resp_ratio_loads_railcar_and_redis_with_every_value_checked(resp_port: int, redis_port: int) -> None:
    for port in (resp_port, redis_port):
        result = load(
            port, "--protocol", "resp", "--ratio", "9:1", "--users", "4", "--procs", "1",
            "--pipeline", "4", "--keys", "3",
        )  # fmt: skip
        assert result["received"] == result["sent"] > 0
        assert result["failures"] == 0


def forgetful_kvbin(conn: socket.socket) -> None:
    """Stores nothing: every SET is OK, every GET not found."""
    parser = RequestParser()
    while data := conn.recv(65536):
        conn.sendall(b"".join(NOT_FOUND_REPLY if r.op == GET else OK_REPLY for r in parser.feed(data)))


def test_a_server_that_loses_values_is_counted_as_wrong_values() -> None:
    with serving(forgetful_kvbin) as port:
        result = load(
            port,
            "--protocol",
            "kvbin",
            "--users",
            "2",
            "--procs",
            "1",
            "--keys",
            "1",
            "--max-failures",
            "100%",
        )
    kinds = result["failure_kinds"]
    assert kinds["wrong_value"] > 0
    assert kinds["mismatch"] == kinds["reset"] == 0  # a wrong value keeps the connection
    assert result["received"] > 0  # the SETs and the first GET (nothing written yet) are right


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--protocol", "echo", "--ratio", "1:1"], "need --protocol resp or kvbin"),
        (["--protocol", "resp", "--keys", "10"], "need --protocol resp or kvbin"),
        (["--protocol", "kvbin", "--ratio", "0:0"], "is not a GET:SET ratio"),
        (["--protocol", "kvbin", "--ratio", "one"], "is not a GET:SET ratio"),
        (["--protocol", "kvbin", "--value-size", "70000"], "value size must be 1 to 65535"),
    ],
)
def test_bad_key_space_arguments_are_one_line(args: list[str], needle: str) -> None:
    done = railcar("load", "--port", "1", *args)
    assert done.returncode == 2
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
