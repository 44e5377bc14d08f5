"""faithfulness: evidence-ablation runs (a scorer reading each rationale's patient with
the cited evidence removed, kept alone, and random uncited evidence removed) and their
per-rationale scores

Revision ID: 0015_faithfulness
Revises: 0014_corrections
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015_faithfulness"
down_revision: str | None = "0014_corrections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "faithfulness_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation_run_id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("scorer", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'finished', 'failed', 'cancelled')",
                           name=op.f("ck_faithfulness_run_status_valid")),
        sa.ForeignKeyConstraint(["generation_run_id"], ["generation_run.id"],
                                name=op.f("fk_faithfulness_run_generation_run_id_generation_run")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faithfulness_run")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_faithfulness_run_content_hash")),
    )
    op.create_index(op.f("ix_faithfulness_run_generation_run_id"), "faithfulness_run",
                    ["generation_run_id"], unique=False)
    op.create_table(
        "faithfulness_score",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("faithfulness_run_id", sa.Integer(), nullable=False),
        sa.Column("rationale_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.Integer(), nullable=False),
        sa.Column("shown_items", sa.Integer(), nullable=False),
        sa.Column("cited_shown", sa.Integer(), nullable=False),
        sa.Column("cited_missing", sa.Integer(), nullable=False),
        sa.Column("p_full", sa.Float(), nullable=False),
        sa.Column("p_without_cited", sa.Float(), nullable=True),
        sa.Column("p_only_cited", sa.Float(), nullable=True),
        sa.Column("p_random", sa.JSON(), nullable=False),
        sa.Column("comprehensiveness", sa.Float(), nullable=True),
        sa.Column("sufficiency", sa.Float(), nullable=True),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["faithfulness_run_id"], ["faithfulness_run.id"],
            name=op.f("fk_faithfulness_score_faithfulness_run_id_faithfulness_run"),
            ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rationale_id"], ["rationale.id"],
                                name=op.f("fk_faithfulness_score_rationale_id_rationale")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faithfulness_score")),
        sa.UniqueConstraint("faithfulness_run_id", "rationale_id",
                            name=op.f("uq_faithfulness_score_faithfulness_run_id_rationale_id")),
    )
    op.create_index(op.f("ix_faithfulness_score_faithfulness_run_id"), "faithfulness_score",
                    ["faithfulness_run_id"], unique=False)
    op.create_index(op.f("ix_faithfulness_score_rationale_id"), "faithfulness_score",
                    ["rationale_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_faithfulness_score_rationale_id"), table_name="faithfulness_score")
    op.drop_index(op.f("ix_faithfulness_score_faithfulness_run_id"),
                  table_name="faithfulness_score")
    op.drop_table("faithfulness_score")
    op.drop_index(op.f("ix_faithfulness_run_generation_run_id"), table_name="faithfulness_run")
    op.drop_table("faithfulness_run")
