"""Engines and schema migrations for the history store.

One engine per (process, URL), created on first use and shared by every thread (sessions are
opened per call by the store). For SQLite a "connect" listener on our engine sets
busy_timeout=30000, journal_mode=WAL, foreign_keys=ON and synchronous=NORMAL, and we emit BEGIN
ourselves: write transactions use BEGIN IMMEDIATE (the write lock is taken up front, so two
writers queue on busy_timeout instead of failing with "database is locked" when a read
transaction tries to become a write transaction), reads use a plain deferred BEGIN.

PostgreSQL (postgresql+psycopg://…) gets the same one-writer-at-a-time rule: a write transaction
starts with pg_advisory_xact_lock(WRITE_LOCK_KEY) under lock_timeout = 30 s (the lock is per
database and ends with the transaction), so writers queue exactly as on SQLite: source/mask dedupe,
store identity, migrations and the image-claim protocol of core/history/blobs/ all rely on
it. Reads run at READ COMMITTED and never wait. Other servers get pool_pre_ping and no lock.
Connections that die (server restarted) are replaced at checkout by pool_pre_ping; a write cut in
the middle is retried by the store (core/history/writes.py, retry).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from core.config import redact
from core.errors import HistoryError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "backdrop_write"   # execution option that turns BEGIN into BEGIN IMMEDIATE
WRITE_LOCK_KEY = 0x6261636B64726F70   # "backdrop": PostgreSQL advisory lock of write transactions
CONNECT_TIMEOUT_S = 10

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
_migrated: set[tuple[int, str]] = set()


def shown(url) -> str:
    """A database URL as messages and logs show it: the password (and password=… parameters)
    as ***, never the real thing."""
    try:
        text = url.render_as_string(hide_password=True) if hasattr(url, "render_as_string") else str(url)
    except Exception:
        text = str(url)
    return redact(text)


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


def _on_begin_postgres(conn) -> None:
    if conn.get_execution_options().get(WRITE_OPTION, False):
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {BUSY_TIMEOUT_MS}")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


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
    except Exception:  # sqlalchemy.exc.ArgumentError and friends: their text quotes the URL whole
        raise HistoryError(f"BACKDROP_DATABASE_URL is not a valid SQLAlchemy URL: "
                           f"{redact(url)!r} (expected sqlite:///PATH/history.db, or "
                           "postgresql+psycopg:// followed by USER:PASSWORD@HOST:PORT/DB)") from None
    backend = parsed.get_backend_name()
    if parsed.drivername == "postgresql" and not _importable("psycopg2") and _importable("psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")   # plain postgresql:// means psycopg2
    try:
        if backend == "postgresql":
            engine = create_engine(parsed, pool_pre_ping=True,
                                   connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
            event.listen(engine, "begin", _on_begin_postgres)
            return engine
        if backend != "sqlite":
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
    except ModuleNotFoundError as e:
        hint = (" (pip install 'psycopg[binary]' and use postgresql+psycopg://…)"
                if backend == "postgresql" else "")
        raise HistoryError(f"cannot open the history database {shown(parsed)}: the database "
                           f"driver {e.name!r} is not installed{hint}") from None
    except Exception as e:
        raise HistoryError(redact(f"cannot open the history database {shown(parsed)}: {e}"
                                  ).splitlines()[0]) from None
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def write_engine(engine: Engine) -> Engine:
    """`engine` with write transactions (BEGIN IMMEDIATE on SQLite, the advisory write lock on
    PostgreSQL; the same engine elsewhere)."""
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


def known_revisions() -> set[str]:
    """Every schema revision this Backdrop has (a database at another one was migrated by a newer
    Backdrop)."""
    from alembic.script import ScriptDirectory

    return {r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


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
        raise HistoryError(redact(f"could not open the history database {shown(engine.url)}: "
                                  f"{cause}").splitlines()[0]) from e
    _migrated.add(key)


def forget(url: str) -> None:
    """Close this process's engine for `url` (its pooled connections) and forget that it was
    migrated; the next get_engine() makes a new one. For tests and tools that drop databases."""
    with _lock:
        for key in [k for k in _engines if k[1] == url]:
            _engines.pop(key).dispose()
    try:
        rendered = make_url(url).render_as_string(hide_password=False)
    except Exception:
        rendered = url
    _migrated.difference_update({k for k in _migrated if k[1] in (url, rendered)})
