"""drafts: a rater's unsent form per assignment (scores, flags, comment), saved as it changes
and deleted on submit; and `assignment.returned_at`, set when a skipped item that nobody else
could rate comes back to its rater (once: a second skip is final)

Nothing reads drafts but the Annotate screen; agreement, exports, adjudication and the judge
read annotations. The new column is added in place (no table rebuild on SQLite, which would
cascade into the annotations).

Revision ID: 0012_drafts
Revises: 0011_text_limits
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012_drafts"
down_revision: str | None = "0011_text_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "draft",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Integer(), nullable=True),
        sa.Column("faithfulness", sa.Integer(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("comment", sqlmodel.sql.sqltypes.AutoString(length=5000), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "accuracy IS NULL OR (accuracy >= 1 AND accuracy <= 5)",
            name=op.f("ck_draft_accuracy_range"),
        ),
        sa.CheckConstraint(
            "faithfulness IS NULL OR (faithfulness >= 1 AND faithfulness <= 5)",
            name=op.f("ck_draft_faithfulness_range"),
        ),
        sa.CheckConstraint("length(comment) <= 5000", name=op.f("ck_draft_comment_length")),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["assignment.id"],
            name=op.f("fk_draft_assignment_id_assignment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_draft")),
        sa.UniqueConstraint("assignment_id", name=op.f("uq_draft_assignment_id")),
    )
    op.add_column("assignment", sa.Column("returned_at", sa.DateTime(timezone=True),
                                          nullable=True))


def downgrade() -> None:
    op.drop_column("assignment", "returned_at")  # in place, as 0007 drops `slot`
    op.drop_table("draft")
