"""a random token written at launch into a local job's row and handed to its process, so that
an app adopts a leftover job only when the process carries this row's token (a pid alone can be
reused, and a copy of the database names the same pids)

Revision ID: 0010_job_token
Revises: 0009_job_executor
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010_job_token"
down_revision: str | None = "0009_job_executor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("token", sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("token")
