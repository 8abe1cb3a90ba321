"""Flask CLI: ``flask --app rideshare db upgrade`` and ``token create``."""

from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from flask import Flask, current_app
from flask.cli import AppGroup

from rideshare.auth import ROLES, issue_token

MIGRATIONS = Path(__file__).parent / "migrations"

db_cli = AppGroup("db", help="Create or migrate the database schema (Alembic).")
token_cli = AppGroup("token", help="Bearer tokens for development.")


def alembic_config() -> Config:
    """Alembic's config for this app's database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", current_app.config["DATABASE_URL"].replace("%", "%%"))
    return config


def upgrade_database(revision: str = "head") -> None:
    """Migrate the app's database to revision."""
    command.upgrade(alembic_config(), revision)


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the schema to REVISION (default: head)."""
    upgrade_database(revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision", default="-1")
def db_downgrade(revision: str) -> None:
    """Migrate the schema down to REVISION (default: one step)."""
    command.downgrade(alembic_config(), revision)


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
def db_revision(message: str) -> None:
    """Write a new migration from the difference between the models and the database."""
    command.revision(alembic_config(), message=message, autogenerate=True)


@token_cli.command("create")
@click.option("--user", "user_id", required=True, help="The user id the token carries (sub).")
@click.option("--role", type=click.Choice(ROLES), default="user", show_default=True)
@click.option("--ttl", type=int, default=None, help="Seconds until it expires.")
def token_create(user_id: str, role: str, ttl: int | None) -> None:
    """Print a bearer token."""
    click.echo(issue_token(user_id, role, ttl))


def init_app(app: Flask) -> None:
    from rideshare.jobs import schedule_cli  # noqa: F401 - adds the schedule commands to jobs_cli
    from rideshare.jobs.cli import jobs_cli

    app.cli.add_command(db_cli)
    app.cli.add_command(token_cli)
    app.cli.add_command(jobs_cli)
