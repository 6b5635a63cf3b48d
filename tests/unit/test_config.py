from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from repo_config import repo_config_path, write_config

from pipeline import config
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "readside.yaml").read_text())


def write(tmp_path: Path, data: object) -> Path:
    return write_config(tmp_path, data)


def load_error(tmp_path: Path, data: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, data), env=env or {})
    return str(info.value)


def test_load_demo_config_resolves_views_and_topics() -> None:
    cfg = config.load(repo_config_path(), env={})
    assert set(cfg.views) == {"customers", "products", "orders", "customer_orders"}
    assert cfg.view_topics()["shop.public.orders"] == ["orders", "customer_orders"]
    assert cfg.view_topics()["shop.public.order_items"] == ["customer_orders"]
    assert cfg.source.dsn.get_secret_value().endswith(":15432/shop")


def test_load_unknown_field_names_file_and_field(tmp_path: Path) -> None:
    data = {**GOOD, "kafka": {**GOOD["kafka"], "bootstrap": "x:1"}}
    msg = load_error(tmp_path, data)
    assert "readside.yaml" in msg
    assert "kafka.bootstrap" in msg
    assert "Extra inputs are not permitted" in msg


def test_load_wrong_type_names_field_and_expectation(tmp_path: Path) -> None:
    data = {**GOOD, "kafka": {**GOOD["kafka"], "partitions": "many"}}
    msg = load_error(tmp_path, data)
    assert "kafka.partitions" in msg
    assert "valid integer" in msg
    assert "'many'" in msg


def test_load_unknown_sink_in_view_names_view_and_sink(tmp_path: Path) -> None:
    views = dict(GOOD["views"])
    views["orders"] = {**views["orders"], "sinks": ["cache", "nowhere"]}
    msg = load_error(tmp_path, {**GOOD, "views": views})
    assert "views.orders.sinks" in msg
    assert "'nowhere'" in msg


@pytest.mark.parametrize("bad", ["cache\r\nx-evil: 1", "a\tb", "", " ", "del\x7f"])
def test_load_refuses_a_sink_or_view_name_empty_or_with_control_characters(
    tmp_path: Path, bad: str
) -> None:
    # names reach HTTP headers (x-readside-store), URLs, keys and logs
    sinks = {bad if n == "cache" else n: s for n, s in GOOD["sinks"].items()}
    views = {
        n: {**v, "sinks": [bad if s == "cache" else s for s in v["sinks"]]}
        for n, v in GOOD["views"].items()
    }
    msg = load_error(tmp_path, {**GOOD, "sinks": sinks, "views": views})
    assert f"sinks: the name {bad!r} is empty or holds a control character" in msg
    views = {bad if n == "orders" else n: v for n, v in GOOD["views"].items()}
    msg = load_error(tmp_path, {**GOOD, "views": views})
    assert f"views: the name {bad!r} is empty or holds a control character" in msg


def test_load_missing_env_var_names_variable_and_field(tmp_path: Path) -> None:
    data = {**GOOD, "source": {**GOOD["source"], "dsn": "${SHOP_DSN}"}}
    msg = load_error(tmp_path, data)
    assert "SHOP_DSN" in msg
    assert "source.dsn" in msg


def test_load_env_default_and_value_are_interpolated(tmp_path: Path) -> None:
    data = {
        **GOOD,
        "source": {**GOOD["source"], "dsn": "${SHOP_DSN:-postgresql://d/x}"},
    }
    path = write(tmp_path, data)
    assert config.load(path, env={}).source.dsn.get_secret_value() == "postgresql://d/x"
    got = config.load(path, env={"SHOP_DSN": "postgresql://e/y"})
    assert got.source.dsn.get_secret_value() == "postgresql://e/y"


def test_load_secret_is_not_shown_in_repr(tmp_path: Path) -> None:
    data = {**GOOD, "source": {**GOOD["source"], "dsn": "postgresql://u:hunter2@h/db"}}
    cfg = config.load(write(tmp_path, data), env={})
    assert "hunter2" not in repr(cfg)


def test_load_unqualified_table_is_rejected(tmp_path: Path) -> None:
    data = {**GOOD, "source": {**GOOD["source"], "tables": ["customers"]}}
    assert "schema.table" in load_error(tmp_path, data)


def test_load_view_of_uncaptured_table_is_rejected(tmp_path: Path) -> None:
    views = {"x": {"table": "public.other", "sinks": ["cache"]}}
    msg = load_error(tmp_path, {**GOOD, "views": views})
    assert "views.x.table" in msg


def test_load_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_cli_config_check_good_file_exits_zero_and_prints_plan() -> None:
    # --no-sql: printing the aggregate view's SQL reads the source's catalog.
    proc = run_cli("--config", str(repo_config_path()), "config", "check", "--no-sql")
    assert proc.returncode == 0, proc.stderr
    assert "shop.public.orders" in proc.stdout
    assert "orders: table view of public.orders" in proc.stdout
    assert "customer_orders: aggregate view of public.customers" in proc.stdout


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"kafka": {"bootstrap": "x"}}, "kafka.bootstrap"),
        ({"kafka": {"partitions": "many"}}, "kafka.partitions"),
        ({"views": {"v": {"table": "public.orders", "sinks": ["nope"]}}}, "nope"),
        (
            {"source": {"dsn": "${NOT_SET_ANYWHERE_42}", "tables": ["public.orders"]}},
            "NOT_SET_ANYWHERE_42",
        ),
    ],
)
def test_cli_config_check_bad_file_exits_nonzero_with_reason(
    tmp_path: Path, change: dict[str, object], needle: str
) -> None:
    data = dict(GOOD)
    data.update(change)
    path = write(tmp_path, data)
    proc = run_cli("--config", str(path), "config", "check")
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_load_view_field_error_names_path_without_union_tag(tmp_path: Path) -> None:
    views = {"x": {"table": "public.orders", "sinks": ["cache"], "fields": 3}}
    msg = load_error(tmp_path, {**GOOD, "views": views})
    assert "views.x.fields: Input should be a valid list" in msg
    assert "views.x.table.fields" not in msg


def test_stack_default_ports_are_below_the_ephemeral_range() -> None:
    # A port in 32768-60999 can be the local end of any client connection
    # when a service restarts; it then cannot bind it.
    ports = {
        name: value
        for name, value in config.StackConfig().model_dump().items()
        if name.endswith("_port")
    }
    assert len(ports) >= 8
    assert {n: p for n, p in ports.items() if p >= 32768} == {}
