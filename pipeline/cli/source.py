"""``readside config`` and ``readside connector``: the source side, checked
against PostgreSQL's catalog and registered with Kafka Connect."""

from __future__ import annotations

import json

import click
import psycopg

from pipeline.cli.base import ReadsideGroup, load_config


@click.group("config", cls=ReadsideGroup)
def config_group() -> None:
    """Validate and explain a configuration file."""


@config_group.command("check")
@click.option(
    "--sql/--no-sql",
    default=True,
    help="also check the tables in the source's catalog and print each "
    "aggregate view's SQL (needs the source)",
)
@click.pass_context
def config_check(ctx: click.Context, sql: bool) -> None:
    """Validate the config and print the resolved plan and the views' SQL."""
    cfg = load_config(ctx)
    from connectors.debezium import secret_risks
    from connectors.postgres import table_problems, toast_risks
    from connectors.registry import reserved_problems
    from pipeline.plan import describe, view_sql

    for warning in secret_risks(cfg):
        click.echo(f"warning: {warning}", err=True)
    if sql:
        from pipeline.roles import superuser_dsns

        for field in superuser_dsns(cfg):
            click.echo(
                f"warning: {field} logs in as a superuser; readside needs far "
                "less (`readside connector roles` prints least-privilege roles)",
                err=True,
            )

    if sql:
        try:
            dsn = cfg.source.dsn.get_secret_value()
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                problems = table_problems(conn, list(cfg.source.tables))
                if not problems:
                    for warning in toast_risks(conn, cfg):
                        click.echo(f"warning: {warning}", err=True)
        except psycopg.OperationalError as exc:
            raise click.ClickException(
                f"cannot read the source's catalog: {exc} (use --no-sql to skip)"
            ) from exc
        if problems:
            raise click.ClickException("\n".join(problems))
        if problems := reserved_problems(cfg):
            raise click.ClickException("\n".join(problems))
    click.echo(describe(cfg))
    if sql and any(v.kind == "aggregate" for v in cfg.views.values()):
        dsn = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
        click.echo("\nSQL of the aggregate views:\n")
        try:
            click.echo(view_sql(cfg, dsn))
        except psycopg.OperationalError as exc:
            raise click.ClickException(
                f"cannot read the source's catalog to print the SQL: {exc} "
                "(use --no-sql to skip)"
            ) from exc


@click.group(cls=ReadsideGroup)
def connector() -> None:
    """Manage the Debezium PostgreSQL connector over the Connect REST API."""


@connector.command("apply")
@click.option("--wait/--no-wait", default=True, help="wait until the task runs")
@click.pass_context
def connector_apply(ctx: click.Context, wait: bool) -> None:
    """Register or update the connector built from the config."""
    from connectors import debezium

    cfg = load_config(ctx)
    debezium.apply(cfg)
    if wait:
        st = debezium.wait_running(cfg)
        click.echo(
            f"connector {st['connector']} {st['state']}; "
            f"slot lag {st.get('slot_lag_bytes')} bytes"
        )
    else:
        click.echo(f"connector {cfg.connect.connector} applied")


@connector.command("roles")
@click.option("--prefix", default="readside", show_default=True, help="role names")
@click.pass_context
def connector_roles(ctx: click.Context, prefix: str) -> None:
    """Print the SQL of least-privilege roles for Debezium (capture), the
    workers' reads (reader) and the API's watermark (watermark)."""
    from pipeline.roles import roles_sql

    click.echo(roles_sql(load_config(ctx), prefix), nl=False)


@connector.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def connector_status(ctx: click.Context, as_json: bool) -> None:
    """Connector and task state, and the replication slot's lag in bytes."""
    from connectors import debezium

    st = debezium.status(load_config(ctx))
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(
        f"{st['connector']}: {st['state']}  slot lag: {st.get('slot_lag_bytes')} bytes"
    )
    for t in st["tasks"]:
        click.echo(f"  task {t['id']}: {t['state']} {t['trace']}")
    for warning in st.get("capture_warnings", []):
        click.echo(f"warning: {warning}")


@connector.command("delete")
@click.option("--drop-slot", is_flag=True, help="also drop the slot and publication")
@click.pass_context
def connector_delete(ctx: click.Context, drop_slot: bool) -> None:
    """Remove the connector (and optionally its replication slot)."""
    from connectors import debezium

    cfg = load_config(ctx)
    found = debezium.delete(cfg)
    click.echo(
        f"connector {cfg.connect.connector} {'deleted' if found else 'was absent'}"
    )
    if drop_slot:
        gone = debezium.drop_slot(cfg)
        click.echo(f"slot {cfg.source.slot} {'dropped' if gone else 'still active'}")
