"""what served a generation run (the served model's id and root, the server, its length)

Revision ID: 0006_served_by
Revises: 0005_audit_sessions
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_served_by"
down_revision: str | None = "0005_audit_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE: a batch rebuild would drop a table that rationales reference.
    op.add_column("generation_run", sa.Column("served_by", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("generation_run", "served_by")
