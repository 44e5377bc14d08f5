"""where a job runs: the local runner (a process on this host) or a Ray cluster (a Ray job,
found again by its submission id after an app restart)

Revision ID: 0009_job_executor
Revises: 0008_evaluation_scoring
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009_job_executor"
down_revision: str | None = "0008_evaluation_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("executor", sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=False, server_default="local"))
        batch_op.add_column(sa.Column("external_id",
                                      sqlmodel.sql.sqltypes.AutoString(length=200),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("external_id")
        batch_op.drop_column("executor")
