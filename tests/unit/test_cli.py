"""The ``readside`` command line: where ``--config`` may go, and the text it
prints for a person (LSNs, columns, snapshot progress)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from repo_config import repo_config_path
from rich.console import Console
from rich.table import Table

from pipeline.cli import main
from pipeline.config import StackConfig
from pipeline.events import format_lsn
from pipeline.snapshot.progress import records_ahead
from pipeline.stack import runner
from pipeline.status import render
from pipeline.textout import PipeConsole, columns, plain_table
from query.lsn import parse as parse_lsn

REPO = Path(__file__).resolve().parents[2]
GOOD = str(repo_config_path())


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env or {})


@pytest.fixture
def missing(tmp_path: Path) -> str:
    return str(tmp_path / "absent.yaml")


def test_cli_config_after_the_subcommand_is_used() -> None:
    done = invoke("config", "check", "--no-sql", "--config", GOOD)
    assert done.exit_code == 0, done.output
    assert "configuration OK" in done.output


def test_cli_config_before_the_subcommand_still_works() -> None:
    done = invoke("--config", GOOD, "config", "check", "--no-sql")
    assert done.exit_code == 0, done.output


def test_cli_config_after_the_subcommand_wins_over_before(missing: str) -> None:
    good = invoke("--config", missing, "config", "check", "--no-sql", "--config", GOOD)
    assert good.exit_code == 0, good.output
    bad = invoke("--config", GOOD, "config", "check", "--no-sql", "--config", missing)
    assert bad.exit_code == 2
    assert f"{missing}: cannot read configuration" in bad.output


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["worker"],
        ["serve"],
        ["verify"],
        ["snapshot", "customers"],
        ["focus", "list"],
        ["dlq", "list"],
        ["dlq", "replay"],
        ["connector", "status"],
        ["config", "check"],
    ],
)
def test_cli_env_config_is_read_by_every_command(
    command: list[str], missing: str
) -> None:
    """``$READSIDE_CONFIG`` names the file each command loads (an absent one
    here, so the command stops at loading it, before touching any service)."""
    done = invoke(*command, env={"READSIDE_CONFIG": missing})
    assert done.exit_code == 2, done.output
    assert f"{missing}: cannot read configuration" in done.output


@pytest.mark.parametrize("where", ["before", "between", "after", "env"])
def test_cli_stack_config_in_every_position_is_read(where: str, tmp_path: Path) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump({"stack": {"data_dir": str(tmp_path / "st")}}))
    args = {
        "before": ["--config", str(path), "stack", "logs", "kafka"],
        "between": ["stack", "--config", str(path), "logs", "kafka"],
        "after": ["stack", "logs", "kafka", "--config", str(path)],
        "env": ["stack", "logs", "kafka"],
    }[where]
    env = {"READSIDE_CONFIG": str(path)} if where == "env" else {}
    done = invoke(*args, env=env)
    assert done.exit_code == 1
    log = runner.log_path(StackConfig(data_dir=str(tmp_path / "st")), "kafka")
    assert f"no log for kafka at {log}" in done.output


def test_cli_help_of_a_subcommand_lists_config() -> None:
    assert "--config FILE" in invoke("status", "--help").output


@pytest.mark.parametrize(
    ("number", "text"),
    [(0, "0/0"), (0x16B374D848, "16/B374D848"), (0x1_0000_0000, "1/0")],
)
def test_lsn_text_form_both_ways(number: int, text: str) -> None:
    assert format_lsn(number) == text
    assert parse_lsn(text) == number
    assert parse_lsn(str(number)) == number


def _view_row(view: str, sink: str, lsn: int | None) -> dict[str, object]:
    return {
        "view": view,
        "sink": sink,
        "consumer_lag": 12,
        "time_lag_ms": 1500,
        "applied_lsn": lsn,
    }


def test_status_render_shows_lsn_as_postgres_prints_it() -> None:
    st = {
        "views": [_view_row("orders", "cache", 316850224), _view_row("o", "x", None)],
        "slot_lag_bytes": 0,
        "dead_letters": 0,
    }
    text = render(st)
    assert "0/12E2C030" in text
    assert "316850224" not in text
    assert text.splitlines()[2].endswith("-")


def test_status_render_long_names_are_whole_and_aligned() -> None:
    view, sink = "customer_orders_by_country_and_year", "elasticsearch_archive"
    st = {
        "views": [_view_row(view, sink, 1), _view_row("orders", "cache", 2)],
        "slot_lag_bytes": 0,
        "dead_letters": 0,
    }
    head, long, short = render(st).splitlines()[:3]
    assert long.startswith(f"{view}  {sink}")
    assert head.index("applied lsn") == long.index("0/1") == short.index("0/2")


def test_columns_size_each_column_to_its_widest_cell() -> None:
    text = columns(["name", "n"], [["a", 1], ["a-much-longer-name", 1234]], right={1})
    assert text.splitlines() == [
        "name                   n",
        "a                      1",
        "a-much-longer-name  1234",
    ]


def _counts_table() -> Table:
    table = Table(title="documents per store vs the source")
    table.add_column("view")
    table.add_column("elasticsearch (search)", justify="right")
    table.add_column("match")
    table.add_row("customer_orders_by_country", "2,002", "[green]yes")
    return table


def test_pipe_console_prints_tables_as_plain_columns_when_piped() -> None:
    out = io.StringIO()
    PipeConsole(file=out, width=40).print(_counts_table())
    assert out.getvalue().splitlines() == [
        "documents per store vs the source",
        "view                        elasticsearch (search)  match",
        "customer_orders_by_country                   2,002  yes",
    ]
    assert plain_table(_counts_table()) + "\n" == out.getvalue()


def test_pipe_console_keeps_rich_tables_on_a_terminal() -> None:
    out = io.StringIO()
    PipeConsole(file=out, width=200, force_terminal=True).print(_counts_table())
    assert "┃" in out.getvalue()
    narrow = io.StringIO()
    Console(file=narrow, width=40).print(_counts_table())
    assert "customer_orders_by_country" not in narrow.getvalue()  # what rich cuts


def test_records_ahead_counts_to_each_end_and_nothing_past_it() -> None:
    ends = {("t", 0): 100, ("t", 1): 50}
    assert records_ahead({("t", 0): 40, ("t", 1): 50}, ends) == 60
    # a batch read past the sampled end (records that arrived meanwhile)
    assert records_ahead({("t", 0): 130, ("t", 1): 70}, ends) == 0
    assert records_ahead({("u", 0): 0}, ends) == 0
