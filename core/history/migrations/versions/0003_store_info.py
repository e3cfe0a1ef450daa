"""Which history this database is: store_info(key, value) holds the database's store id (a random
hex id) and the location it was last opened at.

The image files under the data dir belong to the databases that claim them (refs/<store id>/…,
see core/history/blobs/); the id is created by the store on first open, not here, so that a
database copied elsewhere can be told apart from the original and given an id of its own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("store_info",
                    sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Text(), nullable=False))


def downgrade() -> None:
    op.drop_table("store_info")
