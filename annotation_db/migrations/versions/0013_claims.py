"""claims: each rationale's statements (steps, or sentences of free text) with the record
items each cites, judged one by one in claim review; written once, never updated (triggers
refuse UPDATE on SQLite and PostgreSQL). Existing rationales get their claims here. And
claim_verdict: a rater's verdict on each claim, part of an annotation revision.

Revision ID: 0013_claims
Revises: 0012_drafts
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_claims"
down_revision: str | None = "0012_drafts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSAL = "claims are immutable: a corrected rationale is a new rationale with its own claims"


def upgrade() -> None:
    claim = op.create_table(
        "claim",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rationale_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("cited_ids", sa.JSON(), nullable=False),
        sa.Column("char_start", sa.Integer(), nullable=True),
        sa.Column("char_end", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('step', 'sentence')", name=op.f("ck_claim_source_valid")),
        sa.ForeignKeyConstraint(["rationale_id"], ["rationale.id"],
                                name=op.f("fk_claim_rationale_id_rationale"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claim")),
        sa.UniqueConstraint("rationale_id", "position",
                            name=op.f("uq_claim_rationale_id_position")),
    )
    op.create_index(op.f("ix_claim_rationale_id"), "claim", ["rationale_id"], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE TRIGGER claim_no_update BEFORE UPDATE ON claim "
                   f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")
    else:
        op.execute("CREATE FUNCTION claim_refuse_update() RETURNS trigger LANGUAGE plpgsql "
                   f"AS $$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$")
        op.execute("CREATE TRIGGER claim_immutable BEFORE UPDATE ON claim "
                   "FOR EACH ROW EXECUTE FUNCTION claim_refuse_update()")
    _claims_for_existing_rationales(claim)
    op.create_table(
        "claim_verdict",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=False),
        sa.Column("should_cite", sa.JSON(), nullable=False),
        sa.CheckConstraint("verdict IN ('supported', 'partly_supported', 'not_in_record', "
                           "'contradicted', 'general_knowledge')",
                           name=op.f("ck_claim_verdict_verdict_valid")),
        sa.ForeignKeyConstraint(["annotation_id"], ["annotation.id"],
                                name=op.f("fk_claim_verdict_annotation_id_annotation"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["claim_id"], ["claim.id"],
                                name=op.f("fk_claim_verdict_claim_id_claim")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claim_verdict")),
        sa.UniqueConstraint("annotation_id", "claim_id",
                            name=op.f("uq_claim_verdict_annotation_id_claim_id")),
    )
    op.create_index(op.f("ix_claim_verdict_annotation_id"), "claim_verdict",
                    ["annotation_id"], unique=False)
    op.create_index(op.f("ix_claim_verdict_claim_id"), "claim_verdict", ["claim_id"],
                    unique=False)


def _claims_for_existing_rationales(claim: sa.Table) -> None:
    import datetime as dt

    from annotation_db.claims import split

    rationale = sa.table("rationale", sa.column("id", sa.Integer), sa.column("format", sa.String),
                         sa.column("text", sa.Text), sa.column("steps", sa.JSON))
    bind, after, now = op.get_bind(), 0, dt.datetime.now(dt.UTC)
    while True:
        rows = bind.execute(sa.select(rationale).where(rationale.c.id > after)
                            .order_by(rationale.c.id).limit(2000)).all()
        claims = [{"rationale_id": r.id, "created_at": now, **c}
                  for r in rows for c in split(r.format, r.text or "", r.steps)]
        if claims:
            bind.execute(claim.insert(), claims)
        if len(rows) < 2000:
            return
        after = rows[-1].id


def downgrade() -> None:
    op.drop_index(op.f("ix_claim_verdict_claim_id"), table_name="claim_verdict")
    op.drop_index(op.f("ix_claim_verdict_annotation_id"), table_name="claim_verdict")
    op.drop_table("claim_verdict")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER claim_no_update")
    else:
        op.execute("DROP TRIGGER claim_immutable ON claim")
        op.execute("DROP FUNCTION claim_refuse_update()")
    op.drop_index(op.f("ix_claim_rationale_id"), table_name="claim")
    op.drop_table("claim")
