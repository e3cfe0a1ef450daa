"""Alembic environment for the history store.

The store runs migrations in code (core.history.db.upgrade) and hands its own connection, already
inside a write transaction, through `config.attributes["connection"]`; nothing here reads an
alembic.ini. `sqlalchemy.url` in the config is only used when no connection is given.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from core.history.models import Base

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as connection:
            _run(connection)
        engine.dispose()
