"""Engines and schema migrations for the history store.

One engine per (process, URL), created on first use and shared by every thread (sessions are
opened per call by the store). For SQLite a "connect" listener on our engine sets
busy_timeout=30000, journal_mode=WAL, foreign_keys=ON and synchronous=NORMAL, and we emit BEGIN
ourselves: write transactions use BEGIN IMMEDIATE (the write lock is taken up front, so two
writers queue on busy_timeout instead of failing with "database is locked" when a read
transaction tries to become a write transaction), reads use a plain deferred BEGIN.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from core.errors import HistoryError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "backdrop_write"   # execution option that turns BEGIN into BEGIN IMMEDIATE

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
_migrated: set[tuple[int, str]] = set()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def sqlite_memory(url) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or url.query.get("mode") == "memory"


def _on_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None     # sqlite3 must not emit BEGIN itself: we do
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")   # first: WAL switch may wait
        cursor.execute("PRAGMA journal_mode=WAL")                  # ignored for :memory:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _on_begin(conn) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def get_engine(url: str) -> Engine:
    """The process-wide engine for `url` (a new one after fork: pooled connections never cross
    processes)."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create_engine(url)
        return engine


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy.exc.ArgumentError and friends
        raise HistoryError(f"BACKDROP_DATABASE_URL is not a valid SQLAlchemy URL: {url!r}") from e
    try:
        if parsed.get_backend_name() != "sqlite":
            return create_engine(parsed, pool_pre_ping=True)
        kwargs: dict = {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000}}
        if sqlite_memory(parsed):
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"]["check_same_thread"] = False
        else:
            Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
    except HistoryError:
        raise
    except Exception as e:
        raise HistoryError(f"cannot open the history database {parsed!r}: {e}".splitlines()[0]) from e
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def write_engine(engine: Engine) -> Engine:
    """`engine` with write transactions (BEGIN IMMEDIATE on SQLite; the same engine elsewhere)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the schema to `revision` (default: head) inside ONE write transaction, so several
    processes opening a fresh database at once migrate it exactly once. Returns the revision."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    target = script.get_current_head() if revision == "head" else revision
    with write_engine(engine).connect() as conn:
        with conn.begin():
            current = MigrationContext.configure(conn).get_current_revision()
            if current is not None and current not in {r.revision for r in script.walk_revisions()}:
                raise HistoryError(
                    f"the history database has schema revision {current!r}, newer than this "
                    f"Backdrop knows (up to {script.get_current_head()!r}); update Backdrop or set "
                    "BACKDROP_DATABASE_URL to another database")
            if current != target:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    return target


def ensure_schema(engine: Engine) -> None:
    """Migrate to head once per engine per process (cheap check afterwards)."""
    key = (os.getpid(), engine.url.render_as_string(hide_password=False))
    if key in _migrated:
        return
    try:
        upgrade(engine)
    except HistoryError:
        raise
    except Exception as e:
        cause = getattr(e, "orig", None) or e       # the driver's own words, not SQLAlchemy's wrapper
        raise HistoryError(f"could not open the history database: {cause}".splitlines()[0]) from e
    _migrated.add(key)
