"""an automatic judge's runs and scores, kept apart from the clinicians' annotations;
numbered assignment slots for adaptive (disagreement-driven) campaigns

Revision ID: 0007_judge_adaptive
Revises: 0006_served_by
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007_judge_adaptive"
down_revision: str | None = "0006_served_by"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "judge_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("backend", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("served_by", sa.JSON(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'finished', 'failed', 'cancelled')",
            name=op.f("ck_judge_run_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_judge_run_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_run")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_judge_run_content_hash")),
    )
    with op.batch_alter_table("judge_run") as batch_op:
        batch_op.create_index(batch_op.f("ix_judge_run_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "judge_rating",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("judge_run_id", sa.Integer(), nullable=False),
        sa.Column("rationale_id", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Integer(), nullable=False),
        sa.Column("faithfulness", sa.Integer(), nullable=False),
        sa.Column("expected_accuracy", sa.Float(), nullable=True),
        sa.Column("expected_faithfulness", sa.Float(), nullable=True),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw_output", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "accuracy IS NULL OR (accuracy >= 1 AND accuracy <= 5)",
            name=op.f("ck_judge_rating_accuracy_range"),
        ),
        sa.CheckConstraint(
            "faithfulness IS NULL OR (faithfulness >= 1 AND faithfulness <= 5)",
            name=op.f("ck_judge_rating_faithfulness_range"),
        ),
        sa.ForeignKeyConstraint(
            ["judge_run_id"],
            ["judge_run.id"],
            name=op.f("fk_judge_rating_judge_run_id_judge_run"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rationale_id"], ["rationale.id"], name=op.f("fk_judge_rating_rationale_id_rationale")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_rating")),
        sa.UniqueConstraint(
            "judge_run_id", "rationale_id", name=op.f("uq_judge_rating_judge_run_id_rationale_id")
        ),
    )
    with op.batch_alter_table("judge_rating") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_judge_rating_judge_run_id"), ["judge_run_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_judge_rating_rationale_id"), ["rationale_id"], unique=False
        )


    # A plain column and a unique index: a batch rebuild of `assignment` would cascade
    # into its annotations on SQLite.
    op.add_column("assignment", sa.Column("slot", sa.Integer(), nullable=True))
    op.create_index("uq_assignment_slot", "assignment", ["campaign_id", "rationale_id", "slot"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("uq_assignment_slot", table_name="assignment")
    op.drop_column("assignment", "slot")
    with op.batch_alter_table("judge_rating") as batch_op:
        batch_op.drop_index(batch_op.f("ix_judge_rating_rationale_id"))
        batch_op.drop_index(batch_op.f("ix_judge_rating_judge_run_id"))

    op.drop_table("judge_rating")
    with op.batch_alter_table("judge_run") as batch_op:
        batch_op.drop_index(batch_op.f("ix_judge_run_campaign_id"))

    op.drop_table("judge_run")
