"""The one bench format: JSON results, a text table, and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

Result = dict[str, Any]


def machine() -> dict[str, Any]:
    """Describe the machine a benchmark runs on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                "",
            )
    except OSError:
        model = platform.processor()
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def document(results: list[Result], seconds: float, **extra: Any) -> dict[str, Any]:
    """Wrap results in the shared bench JSON shape (tool, version, command, machine)."""
    return {
        "tool": "railcar",
        "version": importlib.metadata.version("railcar"),
        "command": shlex.join(["railcar", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": seconds,
        "machine": machine(),
        **extra,
        "results": results,
    }


def print_json(doc: dict[str, Any]) -> None:
    """Print the document as one JSON object on stdout."""
    print(json.dumps(doc), flush=True)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Render rows as a Markdown table (readable as plain text too)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def header(doc: dict[str, Any]) -> str:
    """One paragraph saying when, where and with which command figures were measured."""
    m = doc["machine"]
    return (
        f"Measured {doc['date']} with `{doc['command']}` "
        f"(railcar {doc['version']}) on {m['cpus']} CPUs ({m['cpu_model'] or 'unknown CPU'}), "
        f"Python {m['python']}, Linux {m['kernel']}."
    )


def update_markdown(path: Path, key: str, body: str) -> None:
    """Replace (or append) the section of ``path`` between the markers named ``key``."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    section = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# railcar benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def counted(count: int, noun: str, plural: str = "") -> str:
    """``1 round``, ``3 rounds``, ``2 processes`` (``plural`` when adding an s will not do)."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def si(value: float) -> str:
    """Format a rate compactly (e.g. 123.4k)."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and inf (which pass its comparisons)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Convert and range-check ``value``, then refuse a value that is not finite."""
        result = super().convert(value, param, ctx)
        if not math.isfinite(result):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return result


def writable_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback: refuse an output file that cannot be written before a run spends minutes measuring."""
    if value is None:
        return None
    folder = value.parent
    if not folder.is_dir():
        raise click.BadParameter(f"directory '{folder}' does not exist.", ctx, param)
    if not os.access(value if value.exists() else folder, os.W_OK):
        raise click.BadParameter(f"'{value}' is not writable.", ctx, param)
    return value


no_peers_option = click.option("--no-peers", is_flag=True, help="Measure railcar only.")
rounds_option = click.option(
    "--rounds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Runs per system; the median is reported.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
md_option = click.option(
    "--md",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable_file,
    help="Also write the figures into this Markdown file (e.g. BENCHMARKS.md).",
)


def emit(doc: dict[str, Any], markdown: str, key: str, as_json: bool, md: Path | None) -> None:
    """Print the results (JSON or Markdown) and write the Markdown section ``key`` of ``md``."""
    if as_json:
        print_json(doc)
    else:
        click.echo(markdown)
    if md is not None:
        try:
            update_markdown(md, key, markdown)
        except OSError as exc:
            raise click.ClickException(f"cannot write {md}: {exc.strerror or exc}") from exc


def scenario_option(names: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--scenario NAME`` (repeatable) among ``names``, passed as the tuple ``scenarios``."""
    return click.option(
        "--scenario",
        "scenarios",
        multiple=True,
        type=click.Choice(names),
        callback=lambda _ctx, _param, chosen: tuple(dict.fromkeys(chosen)),  # each named once runs once
        help="Scenario to run (repeatable); all by default.",
    )
