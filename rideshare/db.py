"""SQLAlchemy 2 engine and session, bound to the Flask app with init_app."""

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import Connection, DateTime, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import TypeDecorator

from rideshare import telemetry

log = logging.getLogger("rideshare.db")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


def make_engine(url: str, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """An engine for url; SQLite gets WAL and a busy timeout so API and workers can share it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, pool_size=pool_size, max_overflow=max_overflow)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # No ping per checkout (a round trip before every statement): a connection the server
    # dropped fails where it is used, as OperationalError, which the jobs retry and the
    # pool then replaces; pool_recycle retires connections before servers or proxies
    # time idle ones out.
    return create_engine(url, pool_recycle=1800, pool_size=pool_size, max_overflow=max_overflow)


class Database:
    """Owns the engine and hands out sessions scoped to one unit of work."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.sessionmaker: sessionmaker[Session] | None = None

    def init_app(self, app: Flask) -> None:
        self.url = app.config["DATABASE_URL"]
        self.max_overflow = app.config.get("DB_MAX_OVERFLOW", 10)
        self.bind(make_engine(self.url, app.config.get("DB_POOL_SIZE", 5), self.max_overflow))
        app.extensions["db"] = self

    def bind(self, engine: Engine) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker(engine, expire_on_commit=False)
        telemetry.trace_engine(engine)  # a rebuilt engine is traced as the first was; nothing while off

    def grow_pool(self, pool_size: int) -> None:
        """Rebuild the engine with at least pool_size connections (before any job runs).

        Only a QueuePool (PostgreSQL, SQLite files) has a size to grow; other pools are left.
        """
        assert self.engine is not None, "Database.init_app was not called"
        pool = self.engine.pool
        if not isinstance(pool, QueuePool) or pool_size <= pool.size():
            return
        self.engine.dispose()
        self.bind(make_engine(self.url, pool_size, self.max_overflow))
        log.info("db.pool_sized", extra={"pool_size": pool_size, "max_overflow": self.max_overflow})

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection in a transaction that commits on success: for plain statements, no ORM."""
        assert self.engine is not None, "Database.init_app was not called"
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        assert self.sessionmaker is not None, "Database.init_app was not called"
        with self.sessionmaker() as session, session.begin():
            yield session


def dialect_insert(bind: Session | Connection):  # type: ignore[no-untyped-def]
    """The dialect's INSERT, which has ON CONFLICT on both SQLite and PostgreSQL."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


MODEL_MODULES = (
    "rideshare.audit",
    "rideshare.analytics.models",
    "rideshare.mail.models",
    "rideshare.payments.models",
    "rideshare.rides.models",
    "rideshare.jobs.outbox",
)


def load_models() -> None:
    """Import every mapped module, so foreign keys between them resolve in any process."""
    for module in MODEL_MODULES:
        importlib.import_module(module)


def get_db() -> Database:
    """The Database bound to the current Flask app."""
    return current_app.extensions["db"]
