"""Where connections come from, on every engine: restarts, shared ports, pre-bound listeners, adoption."""

from __future__ import annotations

import socket

import pytest

from railcar import Server, create_server
from tests.conftest import ServerFactory
from tests.helpers import Recorder, connect, recv_exactly, recv_until_eof, wait_until


class StartCounter(Recorder):
    """A Recorder that also counts on_start calls and remembers the loop each one saw."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0
        self.had_loop: list[bool] = []

    def on_start(self, server: object) -> None:
        assert isinstance(server, Server)
        with self.lock:
            self.starts += 1
            self.had_loop.append(server.loop is not None)
        super().on_start(server)


def echo_once(port: int, payload: bytes = b"ping") -> None:
    """Open a connection to ``port``, check one echo, close it."""
    with connect(port) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload


def test_a_stopped_server_starts_again_and_serves(engine: str) -> None:
    counter = StartCounter()
    server = create_server(counter, engine)
    for run in range(1, 4):
        server.start()
        assert server.running
        assert wait_until(lambda run=run: counter.starts == run)  # type: ignore[misc]
        held = connect(server.port)  # open at stop: the stop closes it
        echo_once(server.port)
        held.sendall(b"held")
        assert recv_exactly(held, 4) == b"held"
        server.stop(deadline=1.0)
        assert not server.running
        assert server.active_connections == 0
        with held:
            assert held.recv(10) == b""
    assert counter.had_loop == [type(server).has_loop] * 3
    assert counter.closed == [None] * 6
    assert server.loop is None


def test_start_while_running_raises_and_stop_when_stopped_does_nothing(serve: ServerFactory) -> None:
    server = serve(Recorder())
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    echo_once(server.port)
    server.stop(deadline=1.0)
    server.stop(deadline=1.0)
    assert not server.running


def test_two_servers_with_reuse_port_both_accept(serve: ServerFactory) -> None:
    first, second = Recorder(), Recorder()
    server = serve(first, reuse_port=True)
    serve(second, port=server.port, reuse_port=True)
    # The kernel spreads connections by a hash of their addresses: a few dozen reach both.
    for _ in range(200):
        echo_once(server.port)
        if first.opened and second.opened:
            break
    assert first.opened > 0
    assert second.opened > 0


def test_server_started_on_a_pre_bound_socket_serves_on_it_and_leaves_it_open(engine: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        counter = StartCounter()
        server = create_server(counter, engine, sock=listener)
        for _ in range(2):  # the caller's socket outlives a stop, so a restart serves on it again
            server.start()
            assert server.port == listener.getsockname()[1]
            echo_once(server.port)
            server.stop(deadline=1.0)
        assert listener.fileno() >= 0
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    assert counter.opened == 2
    assert counter.closed == [None, None]


def test_adopted_socketpair_is_served_like_an_accepted_connection(serve: ServerFactory) -> None:
    recorder = Recorder()
    server = serve(recorder)
    ours, theirs = socket.socketpair()
    server.adopt(theirs)
    with ours:
        ours.settimeout(10)
        ours.sendall(b"adopted ")
        ours.sendall(b"and echoed")
        ours.shutdown(socket.SHUT_WR)
        assert recv_until_eof(ours) == b"adopted and echoed"
    assert wait_until(lambda: recorder.closed == [None])
    assert recorder.opened == 1
    assert server.active_connections == 0
    assert theirs.fileno() == -1  # the server owned it, and closed it


def test_socket_passed_over_scm_rights_is_adopted_with_its_peer(serve: ServerFactory) -> None:
    recorder = Recorder()
    server = serve(recorder)
    with socket.create_server(("127.0.0.1", 0)) as listener, connect(listener.getsockname()[1]) as client:
        accepted, _ = listener.accept()
        sender, receiver = socket.socketpair()
        with sender, receiver, accepted:
            socket.send_fds(sender, [b"fd"], [accepted.fileno()])
            _, fds, _, _ = socket.recv_fds(receiver, 2, 1)
        server.adopt(socket.socket(fileno=fds[0]))
        client.sendall(b"passed")
        assert recv_exactly(client, 6) == b"passed"
        assert recorder.conns[0].peer[:2] == client.getsockname()[:2]
    assert wait_until(lambda: recorder.closed == [None])


def test_adopt_refuses_unless_running_and_leaves_the_socket_to_the_caller(engine: str) -> None:
    server = create_server(Recorder(), engine)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with pytest.raises(RuntimeError, match="not running"):
            server.adopt(theirs)
        server.start()
        server.stop(deadline=1.0)
        with pytest.raises(RuntimeError, match="not running"):
            server.adopt(theirs)
        theirs.sendall(b"still mine")
        assert recv_exactly(ours, 10) == b"still mine"


def test_adopt_refuses_sockets_that_are_not_connected_streams(serve: ServerFactory) -> None:
    server = serve(Recorder())
    with socket.socket() as unconnected, socket.socket(type=socket.SOCK_DGRAM) as datagram:
        with pytest.raises(ValueError, match="connected"):
            server.adopt(unconnected)
        with pytest.raises(ValueError, match="stream"):
            server.adopt(datagram)
