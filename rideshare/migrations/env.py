"""Alembic environment: the app's models, the URL given by rideshare.cli."""

from alembic import context

from rideshare import audit as _audit  # noqa: F401  (register tables)
from rideshare.analytics import models as _analytics  # noqa: F401
from rideshare.db import Base, make_engine
from rideshare.jobs import outbox as _outbox  # noqa: F401
from rideshare.mail import models as _mail  # noqa: F401
from rideshare.payments import models as _payments  # noqa: F401
from rideshare.rides import models as _rides  # noqa: F401

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            # Batch mode lets later ALTERs work on SQLite too.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
