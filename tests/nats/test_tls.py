"""NATS over TLS against a real nats-server that requires it (a certificate made for the test)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import railcar.nats as rn
from tests.nats.server import NatsServer

StartNats = Callable[..., NatsServer]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is missing: apt-get install -y openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def run(coro: object, timeout: float = 20.0) -> object:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def test_a_server_that_requires_tls_is_spoken_to_over_tls(start_nats: StartNats, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = start_nats(f'tls {{ cert_file: "{cert}", key_file: "{key}" }}')
    trusted = ssl.create_default_context(cafile=str(cert))

    async def body() -> None:
        async with await rn.connect(server.url, tls=trusted) as nc:
            sub = await nc.subscribe("tls.echo")
            await nc.publish("tls.echo", b"secret")
            assert (await sub.next_msg(5)).data == b"secret"
        # The INFO says TLS is required: a nats:// URL without a context is upgraded too, and the
        # system's default context refuses the self-signed certificate, saying so.
        with pytest.raises(ConnectionError, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed.*certificate"):
            await rn.connect(server.url, reconnect=False, connect_timeout=5)

    run(body())


def test_a_tls_url_refuses_a_server_that_does_not_speak_tls(nats_server: NatsServer) -> None:
    async def body() -> None:
        url = nats_server.url.replace("nats://", "tls://")
        with pytest.raises(ConnectionError, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed"):
            await rn.connect(url, reconnect=False, connect_timeout=3)

    run(body())
