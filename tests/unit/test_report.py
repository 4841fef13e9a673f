"""The bench format helpers: Markdown sections are replaced in place, tables line up."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from railcar.report import document, scenario_option, si, table, update_markdown


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
