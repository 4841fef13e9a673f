"""Create listening and datagram sockets for every engine; one place turns failures into BindError."""

from __future__ import annotations

import errno
import os
import socket
import stat

from railcar.engine.api import DatagramOptions, ServerOptions
from railcar.errors import BindError


def listen(options: ServerOptions) -> socket.socket:
    """Return a listening, non-blocking socket for ``options``, the server's to close; raises BindError."""
    if options.sock is not None:
        # A duplicate, so that stopping the server closes its own descriptor and the
        # caller's socket is there for a restart (O_NONBLOCK is shared by both).
        try:
            sock = options.sock.dup()
        except OSError as exc:
            raise BindError(f"cannot listen on the given socket: {exc.strerror}") from exc
    elif options.unix:
        sock = _listen_unix(options.unix, options.backlog)
    else:
        sock = _listen_tcp(options)
    sock.setblocking(False)
    return sock


def bind_datagram(options: DatagramOptions) -> socket.socket:
    """Return a bound, non-blocking UDP socket for ``options``, the server's to close; raises BindError."""
    if options.sock is not None:
        try:
            sock = options.sock.dup()  # ours to close; the caller's stays for a restart
        except OSError as exc:
            raise BindError(f"cannot bind to the given socket: {exc.strerror}") from exc
        sock.setblocking(False)
        return sock
    where = describe((options.host, options.port))
    try:
        infos = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"cannot bind to {where}: unknown host ({exc.strerror})") from exc
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if options.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot bind to {where}: {reason}") from exc
    sock.setblocking(False)
    return sock


def set_nodelay(sock: socket.socket, enabled: bool) -> None:
    """Set TCP_NODELAY on a TCP socket; a no-op for Unix sockets."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))


def describe(address: tuple[object, ...] | str) -> str:
    """Format a bound address as HOST:PORT ([HOST]:PORT for IPv6) or a Unix path."""
    if isinstance(address, str):
        return address
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_tcp(options: ServerOptions) -> socket.socket:
    where = describe((options.host, options.port))
    try:
        infos = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {where}: unknown host ({exc.strerror})") from exc
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if options.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(options.backlog)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot listen on {where}: {reason}") from exc
    return sock


def _listen_unix(path: str, backlog: int) -> socket.socket:
    _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(path, exc) from exc
    return sock


def _cannot_listen(path: str, exc: OSError) -> BindError:
    """Return the BindError for an OSError met while setting up the Unix socket ``path``."""
    return BindError(f"cannot listen on {path}: {exc.strerror or exc}")


def _remove_stale_unix_socket(path: str) -> None:
    """Unlink a socket file nobody listens on; raises BindError if a server still does (or may)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _cannot_listen(path, exc) from exc
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot listen on {path}: a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # Only a refused connect proves nobody listens: EACCES and the like say nothing
        # about a server behind the file, and unlinking it would steal a live server's path.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _cannot_listen(path, exc) from exc
    except OSError as exc:
        raise _cannot_listen(path, exc) from exc
    else:
        raise BindError(f"cannot listen on {path}: address already in use")
    finally:
        probe.close()
