"""a run's results keyed by scoring variant too (direct, generate, sampled), so one run
can be scored several ways without one result replacing another

Revision ID: 0008_evaluation_scoring
Revises: 0007_judge_adaptive
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008_evaluation_scoring"
down_revision: str | None = "0007_judge_adaptive"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluation_result") as batch_op:
        batch_op.add_column(sa.Column("scoring", sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=False, server_default="auto"))
        batch_op.drop_constraint("uq_evaluation_result_training_run_id_split", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_evaluation_result_training_run_id_split_scoring"),
            ["training_run_id", "split", "scoring"])


def downgrade() -> None:
    # a run scored several ways keeps its own scoring's result only
    op.execute("DELETE FROM evaluation_result WHERE scoring <> 'auto'")
    with op.batch_alter_table("evaluation_result") as batch_op:
        batch_op.drop_constraint("uq_evaluation_result_training_run_id_split_scoring",
                                 type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_evaluation_result_training_run_id_split"),
            ["training_run_id", "split"])
        batch_op.drop_column("scoring")
