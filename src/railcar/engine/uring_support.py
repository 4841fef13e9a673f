"""What the uring engine needs from this build and kernel, found by trying it once per process.

The probe imports the extension, sets up a small ring with its provided buffer
ring, and runs one multishot accept and one multishot receive over loopback: a
container's seccomp profile may forbid io_uring_setup, an old kernel may lack
buffer rings or multishot requests, and only trying tells.  ``missing()`` names the
first thing lacking, in words fit for a one-line error.
"""

from __future__ import annotations

import functools
import importlib
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from railcar.engine._uring import Ring

_INSTALL = "install gcc, python3-dev and liburing-dev (scripts/install-tools) and reinstall railcar"


@dataclass(frozen=True, slots=True)
class UringSupport:
    """The outcome of the probe: each feature found, and the first one missing (None: all there)."""

    extension: bool = False
    ring: bool = False
    buffer_ring: bool = False
    multishot_accept: bool = False
    multishot_recv: bool = False
    defer_taskrun: bool = False
    missing: str | None = None

    def features(self) -> dict[str, bool]:
        """The features by name, for ``railcar engines``."""
        return {
            "extension": self.extension,
            "io_uring_setup": self.ring,
            "provided buffer ring": self.buffer_ring,
            "multishot accept": self.multishot_accept,
            "multishot recv": self.multishot_recv,
            "defer taskrun": self.defer_taskrun,
        }


@functools.cache
def probe() -> UringSupport:
    """Find out once what the uring engine can use here; raises nothing."""
    try:
        uring = importlib.import_module("railcar.engine._uring")  # the probe is what may fail
    except ImportError as exc:
        return UringSupport(missing=f"the railcar.engine._uring extension is not built ({exc}); {_INSTALL}")
    try:
        ring: Ring = uring.Ring(8, 2, 4096)
    except OSError as exc:
        if exc.filename == "IORING_REGISTER_PBUF_RING":
            return UringSupport(
                extension=True, ring=True, missing=f"provided buffer rings (kernel 5.19+): {exc.strerror}"
            )
        return UringSupport(extension=True, missing=f"io_uring_setup is not permitted here: {exc.strerror}")
    try:
        ring.enable()
        defer = bool(ring.features()["defer_taskrun"])
        accept, recv = _try_multishot(ring, uring.KIND_BITS, uring.ACCEPT, uring.RECV)
    except OSError as exc:
        return UringSupport(extension=True, ring=True, buffer_ring=True, missing=f"io_uring failed: {exc}")
    finally:
        ring.close()
    missing = None
    if not accept:
        missing = "multishot accept (kernel 5.19+)"
    elif not recv:
        missing = "multishot receive with provided buffers (kernel 6.0+)"
    return UringSupport(True, True, True, accept, recv, defer, missing)


def _try_multishot(ring: Ring, bits: int, accept: int, recv: int) -> tuple[bool, bool]:
    """Accept one loopback connection and receive one byte with multishot requests."""
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ring.accept(listener.fileno(), 1 << bits | accept)
        client.connect(listener.getsockname())
        accepted = ring.wait(1.0)
        if not accepted or accepted[0][0] != accept or accepted[0][2] < 0:
            return False, False
        _, _, fd, _, accept_more = accepted[0]
        with socket.socket(fileno=fd) as server_side:
            ring.recv(server_side.fileno(), 2 << bits | recv)
            client.send(b"x")
            received = ring.wait(1.0)
            recv_ok = bool(received) and received[0][0] == recv and received[0][2] == 1 and received[0][4]
            ring.cancel(2 << bits | recv)
            ring.cancel(1 << bits | accept)
            ring.wait(0.1)
        return bool(accept_more), recv_ok


def missing() -> str | None:
    """What stops the uring engine from running here, in one phrase (None: nothing); raises nothing."""
    return probe().missing
