"""training jobs launched from the app; the researcher role

Revision ID: 0004_jobs_researcher
Revises: 0003_assignment_indexes
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004_jobs_researcher"
down_revision: str | None = "0003_assignment_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ROLES = "role IN ('annotator', 'adjudicator', 'admin')"
NEW_ROLES = "role IN ('annotator', 'adjudicator', 'admin', 'researcher')"


def upgrade() -> None:
    with op.batch_alter_table("app_user") as batch:
        batch.drop_constraint(op.f("ck_app_user_role_valid"), type_="check")
        batch.create_check_constraint("role_valid", NEW_ROLES)
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("log_path", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("resumed_from", sa.Integer(), nullable=True),
        sa.Column("training_run_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'finished', 'failed', 'cancelled')",
                           name=op.f("ck_job_status_valid")),
        sa.CheckConstraint("kind IN ('sft', 'fewshot', 'grid')", name=op.f("ck_job_kind_valid")),
        sa.ForeignKeyConstraint(["created_by"], ["app_user.id"],
                                name=op.f("fk_job_created_by_app_user")),
        sa.ForeignKeyConstraint(["resumed_from"], ["job.id"],
                                name=op.f("fk_job_resumed_from_job")),
        sa.ForeignKeyConstraint(["training_run_id"], ["training_run.id"],
                                name=op.f("fk_job_training_run_id_training_run")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_index(op.f("ix_job_status"), "job", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_status"), table_name="job")
    op.drop_table("job")
    with op.batch_alter_table("app_user") as batch:
        batch.drop_constraint(op.f("ck_app_user_role_valid"), type_="check")
        batch.create_check_constraint("role_valid", OLD_ROLES)
