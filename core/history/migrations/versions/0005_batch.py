"""Batches: runs.batch, the name of the batch a run was part of (`python -m core batch`), indexed
for the History page's batch filter; NULL for a run of one photo.

Batch runs have always been recorded with source_name = "<batch name>/<file name>" (a file name has
no "/"), so existing rows are filled from their source name: the part before its last "/". Nothing
else changes; downgrade() drops the column (the source names still hold the batch names).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def batch_name(source_name: str | None) -> str | None:
    """Kept here (not imported from the store) so this revision never changes behaviour."""
    head, sep, _ = (source_name or "").replace("\x00", "").rpartition("/")
    return head if sep and head else None


def upgrade() -> None:
    op.add_column("runs", sa.Column("batch", sa.Text(), nullable=True))
    runs = sa.table("runs", sa.column("id", sa.Integer()), sa.column("source_name", sa.Text()),
                    sa.column("batch", sa.Text()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(runs.c.id, runs.c.source_name)
                        .where(runs.c.source_name.like("%/%"))).all()
    values = [{"run_id": r.id, "name": batch_name(r.source_name)} for r in rows]
    values = [v for v in values if v["name"] is not None]
    if values:
        bind.execute(runs.update().where(runs.c.id == sa.bindparam("run_id"))
                     .values(batch=sa.bindparam("name")), values)
    op.create_index("ix_runs_batch", "runs", ["batch"])


def downgrade() -> None:
    op.drop_index("ix_runs_batch", "runs")
    op.drop_column("runs", "batch")
