"""Sessions on one history database and its error lines: the part of HistoryStore every other
part (writes.py, queries.py, sweep.py, deletions.py) is given.

read(): a read transaction. write(): a write transaction that holds the write lock from its first
line (BEGIN IMMEDIATE / the advisory lock). errors(): database and file errors as one
HistoryError line."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.config import redact
from core.errors import BackdropError, HistoryError
from core.history import db

SCHEMA_ERRORS = ("no such column", "no such table", "has no column named", "does not exist")


class Database:
    """Sessions on `engine` (writes through `writer`, db.write_engine); `files_at` names the image
    store in the error line for a file that cannot be written."""

    def __init__(self, engine: Engine, writer: Engine, files_at: str):
        self.engine = engine
        self.writer = writer
        self.files_at = files_at

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.errors(), Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self.errors(), Session(self.writer, expire_on_commit=False) as session:
            with session.begin():
                # Take the write lock now (BEGIN IMMEDIATE / the advisory lock), not at the first
                # query: callers re-check their files (_ensure) first thing, under the lock.
                session.connection()
                yield session

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except BackdropError:
            raise
        except SQLAlchemyError as e:
            orig = getattr(e, "orig", None) or e
            msg = redact(str(orig).splitlines()[0] if str(orig) else type(orig).__name__)
            if "locked" in msg or "busy" in msg or "lock timeout" in msg:
                raise HistoryError("the history database is busy (locked by another process "
                                   "for too long); try again") from e
            if any(w in msg for w in SCHEMA_ERRORS):
                newer = self.newer_schema()
                if newer is not None:
                    raise HistoryError(
                        f"the history database was upgraded by a newer Backdrop while this process "
                        f"was running (schema {newer!r}; this Backdrop knows up to "
                        f"{db.head_revision()!r}): restart this process, or upgrade Backdrop here "
                        "to the version that upgraded it") from e
            raise HistoryError(f"history database error: {msg}") from e
        except OSError as e:
            raise HistoryError(redact(f"cannot write history files under {self.files_at}: "
                                      f"{e.strerror or e}")) from e

    def newer_schema(self) -> Optional[str]:
        """The database's schema revision when this Backdrop does not know it (a newer one
        migrated the database after this process opened it), else None."""
        try:
            current = db.current_revision(self.engine)
            return current if current is not None and current not in db.known_revisions() else None
        except Exception:
            return None
