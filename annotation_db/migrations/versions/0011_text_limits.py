"""text that people write is bounded: an annotation's comment and an adjudicator's reason
become VARCHAR(5000) with a CHECK on their length (SQLite does not enforce VARCHAR lengths)

Rows already over a limit are never cut: the upgrade first looks for them and, if there
are any, refuses with a message naming them, changing nothing. (A CHECK on new writes
only is not an option: on SQLite the batch rebuild copies every row under the new
constraint.) The limits are written out here, as they stood at this revision; the
models take them from annotation_db.models.

Revision ID: 0011_text_limits
Revises: 0010_job_token
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from annotation_db.migrate import MigrationRefused

revision: str = "0011_text_limits"
down_revision: str | None = "0010_job_token"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, limit in characters)
LIMITS = (("annotation", "comment", 5000), ("adjudication", "comment", 5000))
SHOWN = 10


def _over_long() -> list[str]:
    """Every row over its limit, as 'table id (N characters)'."""
    found = []
    for table, column, limit in LIMITS:
        rows = op.get_bind().execute(sa.text(
            f"SELECT id, length({column}) FROM {table} WHERE length({column}) > :limit "
            "ORDER BY id"), {"limit": limit}).all()
        found += [f"{table} {row_id} ({chars:,} characters)" for row_id, chars in rows]
    return found


def upgrade() -> None:
    found = _over_long()
    if found:
        limits = ", ".join(f"{t}.{c} {n:,}" for t, c, n in LIMITS)
        more = f", … and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        raise MigrationRefused(
            f"cannot upgrade to 0011_text_limits: {len(found)} row(s) hold text over the new "
            f"limits ({limits} characters): {', '.join(found[:SHOWN])}{more}; text is never "
            "cut, so shorten these rows, then run `rationale-audit db upgrade` again")
    for table, column, limit in LIMITS:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(column, existing_type=sa.Text(),
                                  type_=sqlmodel.sql.sqltypes.AutoString(length=limit),
                                  existing_nullable=False)
            batch_op.create_check_constraint(batch_op.f(f"ck_{table}_{column}_length"),
                                             f"length({column}) <= {limit}")


def downgrade() -> None:
    for table, column, limit in reversed(LIMITS):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(batch_op.f(f"ck_{table}_{column}_length"), type_="check")
            batch_op.alter_column(column, existing_type=sqlmodel.sql.sqltypes.AutoString(
                                  length=limit), type_=sa.Text(), existing_nullable=False)
