"""The conformance suite's echo bodies, unchanged, on every engine x architecture with two workers."""

from __future__ import annotations

from tests.conformance.test_echo import (
    echo_port,
    test_echo_survives_any_chunking,
    test_ipv6_loopback_echo,
    test_multi_megabyte_message_round_trips,
    test_thousand_concurrent_connections,
)

__all__ = [
    "echo_port",
    "test_echo_survives_any_chunking",
    "test_ipv6_loopback_echo",
    "test_multi_megabyte_message_round_trips",
    "test_thousand_concurrent_connections",
]
