"""Each balance policy over 1,000 connections: the distribution its documentation promises."""

from __future__ import annotations

import collections
import random

import pytest

from railcar.workers.balance import LeastConnections, RoundRobin, SourceIpHash, policy

CONNECTIONS = 1000


def test_round_robin_gives_each_worker_its_turn() -> None:
    rr = RoundRobin()
    loads: list[int | None] = [0, 0, 0, 0]
    chosen = [rr.choose("10.0.0.1", loads) for _ in range(CONNECTIONS)]
    assert chosen[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert collections.Counter(chosen) == {0: 250, 1: 250, 2: 250, 3: 250}


def test_round_robin_skips_workers_that_are_down() -> None:
    rr = RoundRobin()
    chosen = [rr.choose("10.0.0.1", [0, None, 0, None]) for _ in range(CONNECTIONS)]
    assert collections.Counter(chosen) == {0: 500, 2: 500}


def test_least_connections_evens_out_a_skewed_start() -> None:
    lc = LeastConnections()
    loads: list[int | None] = [300, 0, 0, 0]  # worker 0 already holds 300 long connections
    for _ in range(CONNECTIONS):
        loads[lc.choose("10.0.0.1", loads)] += 1  # type: ignore[operator]
    assert loads == [325, 325, 325, 325]


def test_least_connections_always_picks_a_least_loaded_worker_as_connections_close() -> None:
    lc, rng = LeastConnections(), random.Random(7)
    loads: list[int | None] = [0, 0, 0]
    for _ in range(CONNECTIONS):
        index = lc.choose("10.0.0.1", loads)
        assert loads[index] == min(load for load in loads if load is not None)
        loads[index] += 1  # type: ignore[operator]
        closing = rng.randrange(3)
        if rng.random() < 0.5 and loads[closing]:
            loads[closing] -= 1  # type: ignore[operator]
    assert max(loads) - min(loads) <= 1  # type: ignore[type-var, operator]


def test_least_connections_breaks_ties_round_robin() -> None:
    lc = LeastConnections()
    assert [lc.choose("c", [0, 0, 0]) for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_source_ip_hash_keeps_each_client_on_one_worker_and_spreads_clients() -> None:
    ih = SourceIpHash()
    loads: list[int | None] = [0, 0, 0, 0]
    clients = [f"192.0.2.{i}" for i in range(100)] + [f"2001:db8::{i:x}" for i in range(100)]
    homes: dict[str, set[int]] = collections.defaultdict(set)
    for k in range(CONNECTIONS):
        client = clients[k % len(clients)]
        homes[client].add(ih.choose(client, loads))
    assert all(len(workers) == 1 for workers in homes.values())
    per_worker = collections.Counter(next(iter(workers)) for workers in homes.values())
    assert set(per_worker) == {0, 1, 2, 3}
    assert min(per_worker.values()) >= 25  # 200 clients: no worker left nearly idle


def test_source_ip_hash_moves_a_down_workers_clients_and_gives_them_back() -> None:
    ih = SourceIpHash()
    client = next(f"198.51.100.{i}" for i in range(256) if ih.choose(f"198.51.100.{i}", [0, 0, 0]) == 1)
    assert ih.choose(client, [0, None, 0]) == 2
    assert ih.choose(client, [0, 0, 0]) == 1


@pytest.mark.parametrize("name", ["round-robin", "least-connections", "source-ip-hash"])
def test_no_worker_up_raises_lookup_error(name: str) -> None:
    with pytest.raises(LookupError):
        policy(name).choose("10.0.0.1", [None, None])


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown balance 'random'"):
        policy("random")
