"""The bench format helpers and sections: Markdown replaced in place, tables line up, ratios labelled."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from railcar.bench import reqrep
from railcar.report import counted, document, scenario_option, si, table, update_markdown


def test_update_markdown_replaces_only_its_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    update_markdown(path, "echo", "first")
    update_markdown(path, "idle", "memory")
    update_markdown(path, "echo", "second")
    text = path.read_text()
    assert "first" not in text
    assert text.count("<!-- bench:echo -->") == 1
    assert text.index("second") < text.index("memory")


def test_table_and_si() -> None:
    rendered = table(["a", "bb"], [["1", "2"], ["333", "4"]]).splitlines()
    assert len({len(line) for line in rendered}) == 1
    assert si(1_234_567) == "1.2M"
    assert si(12_345) == "12.3k"
    assert si(12) == "12"


def test_document_has_the_shared_shape() -> None:
    doc = document([{"scenario": "echo", "system": "railcar", "ops_per_s": 1.0, "errors": 0}], 2.0)
    assert {"tool", "version", "command", "seconds", "machine", "results"} <= set(doc)
    assert {"cpus", "python", "kernel"} <= set(doc["machine"])


def test_a_scenario_named_twice_runs_once() -> None:
    @click.command()
    @scenario_option(["a", "b"])
    def command(scenarios: tuple[str, ...]) -> None:
        click.echo(",".join(scenarios))

    result = CliRunner().invoke(command, ["--scenario", "b", "--scenario", "a", "--scenario", "b"])
    assert result.output == "b,a\n"


def test_counted_says_one_round_and_two_processes() -> None:
    assert [counted(1, "round"), counted(3, "round"), counted(1, "process", "processes")] == [
        "1 round",
        "3 rounds",
        "1 process",
    ]
    assert counted(2, "process", "processes") == "2 processes"


def _reqrep_result(scenario: str, system: str, ratios: dict[str, float] | None = None) -> dict[str, object]:
    result: dict[str, object] = {
        "scenario": scenario,
        "system": system,
        "ops_per_s": 1e6,
        "errors": 0,
        "server_cpu": 1.0,
        "load_cpu": 0.5,
    }
    if ratios:
        result["ratios"] = ratios
    return result


def test_reqrep_section_marks_unbatched_peers_and_leads_with_the_batched_one() -> None:
    results = [
        _reqrep_result("int32", "railcar", {"raw-item": 0.9, "pyzmq-1": 150.0}),
        _reqrep_result("int32", "raw-item"),
        _reqrep_result("int32", "pyzmq-1"),
        _reqrep_result("int32-vec", "railcar", {"pyzmq-1000": 1.7, "raw-numpy": 0.5}),
        _reqrep_result("int32-vec", "raw-numpy"),
        _reqrep_result("int32-vec", "pyzmq-1000"),
        _reqrep_result("call", "railcar", {"grpc-aio": 77.5}),
        _reqrep_result("call", "grpc-aio"),
    ]
    markdown = reqrep._markdown(document(results, 2.0, rounds=1, warmup=0.5))
    assert "0.90× raw-item, 150.00× pyzmq-1 (unbatched)" in markdown
    assert "**1.70× pyzmq-1000**, 0.50× raw-numpy" in markdown
    assert "77.50× grpc-aio (unbatched)" in markdown
    assert "upper bound" not in markdown
    assert "minimal hand-written uvloop" in markdown
    assert "median of 1 round of 2.0 s" in markdown
    assert "0.5 s unmeasured" in markdown
    for system in ("railcar", "raw-*", "pyzmq-*", "grpc-aio"):
        assert f"- **{system}**: " in markdown
