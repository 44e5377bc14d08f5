"""corrections: a clinician's corrected rationale (stored as a new rationale with its own
claims) proposed for one campaign item and accepted or rejected by an adjudicator;
`draft.claim_verdicts`, claim review's part of an unsent form; and
`judge_rating.claim_verdicts`, the judge's verdict on each claim

The new columns are added in place (no table rebuild on SQLite).

Revision ID: 0014_corrections
Revises: 0013_claims
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0014_corrections"
down_revision: str | None = "0013_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("draft", sa.Column("claim_verdicts", sa.JSON(), nullable=True))
    op.add_column("judge_rating", sa.Column("claim_verdicts", sa.JSON(), nullable=True))
    op.create_table(
        "correction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("source_rationale_id", sa.Integer(), nullable=False),
        sa.Column("rationale_id", sa.Integer(), nullable=False),
        sa.Column("proposed_by", sa.Integer(), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=5000), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=5000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('proposed', 'accepted', 'rejected')",
                           name=op.f("ck_correction_status_valid")),
        sa.CheckConstraint("length(note) <= 5000", name=op.f("ck_correction_note_length")),
        sa.CheckConstraint("length(reason) <= 5000", name=op.f("ck_correction_reason_length")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"],
                                name=op.f("fk_correction_campaign_id_campaign"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_rationale_id"], ["rationale.id"],
                                name=op.f("fk_correction_source_rationale_id_rationale")),
        sa.ForeignKeyConstraint(["rationale_id"], ["rationale.id"],
                                name=op.f("fk_correction_rationale_id_rationale")),
        sa.ForeignKeyConstraint(["proposed_by"], ["app_user.id"],
                                name=op.f("fk_correction_proposed_by_app_user")),
        sa.ForeignKeyConstraint(["decided_by"], ["app_user.id"],
                                name=op.f("fk_correction_decided_by_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_correction")),
        sa.UniqueConstraint("rationale_id", name=op.f("uq_correction_rationale_id")),
    )
    op.create_index(op.f("ix_correction_campaign_id"), "correction", ["campaign_id"],
                    unique=False)
    op.create_index(op.f("ix_correction_source_rationale_id"), "correction",
                    ["source_rationale_id"], unique=False)
    op.create_index(op.f("ix_correction_proposed_by"), "correction", ["proposed_by"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_correction_proposed_by"), table_name="correction")
    op.drop_index(op.f("ix_correction_source_rationale_id"), table_name="correction")
    op.drop_index(op.f("ix_correction_campaign_id"), table_name="correction")
    op.drop_table("correction")
    op.drop_column("judge_rating", "claim_verdicts")
    op.drop_column("draft", "claim_verdicts")  # in place, as 0012 adds it
