"""Search and listing: runs.search_text (casefolded prompt + negative, filled for existing rows),
an index on (created, id) for newest-first keyset pages, an index on outputs.favorite.

SQLite's LIKE and lower() fold ASCII only; Python's str.casefold() in a stored column makes
"Ünïcode" prompts searchable without an extension.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def search_text(prompt: str | None, negative: str | None) -> str:
    """Kept here (not imported from the store) so this revision never changes behaviour."""
    return f"{prompt or ''}\n{negative or ''}".casefold()


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
    runs = sa.table("runs", sa.column("id", sa.Integer()), sa.column("prompt", sa.Text()),
                    sa.column("negative", sa.Text()), sa.column("search_text", sa.Text()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(runs.c.id, runs.c.prompt, runs.c.negative)).all()
    if rows:
        bind.execute(runs.update().where(runs.c.id == sa.bindparam("run_id"))
                     .values(search_text=sa.bindparam("text")),
                     [{"run_id": r.id, "text": search_text(r.prompt, r.negative)} for r in rows])
    op.create_index("ix_runs_created_id", "runs", ["created", "id"])
    op.create_index("ix_outputs_favorite", "outputs", ["favorite"])


def downgrade() -> None:
    op.drop_index("ix_outputs_favorite", "outputs")
    op.drop_index("ix_runs_created_id", "runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("search_text")
