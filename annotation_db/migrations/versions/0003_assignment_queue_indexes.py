"""indexes for a rater's queue and for reclaiming abandoned assignments

Revision ID: 0003_assignment_indexes
Revises: 0002_patient_outcome
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_assignment_indexes"
down_revision: str | None = "0002_patient_outcome"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_assignment_queue", "assignment",
                    ["campaign_id", "user_id", "status", "position"])
    op.create_index("ix_assignment_open", "assignment", ["campaign_id", "status", "opened_at"])


def downgrade() -> None:
    op.drop_index("ix_assignment_open", table_name="assignment")
    op.drop_index("ix_assignment_queue", table_name="assignment")
