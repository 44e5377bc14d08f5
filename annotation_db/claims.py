"""A rationale as claims: the statements a clinician judges one by one.

A step-by-step rationale gives one claim per step, citing the step's own evidence list
and any ``[E#]`` in its text. A free-form rationale gives one claim per sentence (pySBD,
a rule-based sentence boundary detector that keeps "e.g." and "Dr." inside a sentence),
citing the ids written inline in that sentence. What the generator listed as evidence
without tying it to a sentence stays at the rationale's level
(:func:`rationale_level_ids`): nothing attributes it to a claim it may not support.

Claims are written when a rationale is stored, in the same transaction (an
``after_flush`` hook on every session, registered by importing this module, which
:mod:`annotation_db.session` does), and never changed afterwards. Rationales written
with a bulk ``INSERT`` that skips the ORM get theirs from :func:`backfill`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session

from annotation_db.models import Claim, Rationale, utcnow

CITATION = re.compile(r"\[(E\d+)\]")


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def cited(text: str) -> list[str]:
    """The evidence ids cited inline in ``text`` (``[E12]``), first occurrence order."""
    return list(dict.fromkeys(CITATION.findall(text)))


def split(format: str, text: str, steps: list | None) -> list[dict]:
    """The claims of one rationale, in order: ``position``, ``source``, ``text``,
    ``cited_ids`` and, for a sentence, where it lies in ``text`` (``char_start``,
    ``char_end``)."""
    out: list[dict] = []
    if steps:
        for step in steps:
            words = str(step.get("step", "")).strip()
            if words:
                ids = list(dict.fromkeys([*step.get("evidence", []), *cited(words)]))
                out.append({"source": "step", "text": words, "cited_ids": ids,
                            "char_start": None, "char_end": None})
    elif text.strip():
        for span in _segmenter().segment(text):
            sentence = span.sent.strip()
            if not sentence:
                continue
            start = span.start + (len(span.sent) - len(span.sent.lstrip()))
            out.append({"source": "sentence", "text": sentence, "cited_ids": cited(sentence),
                        "char_start": start, "char_end": start + len(sentence)})
    return [{"position": k, **claim} for k, claim in enumerate(out, start=1)]


def rationale_level_ids(rationale: Rationale, claims: Iterable[Claim]) -> list[str]:
    """The rationale's evidence that no claim cites (shown for the rationale as a whole)."""
    taken = {e for c in claims for e in c.cited_ids}
    return [e for e in rationale.cited_evidence_ids or [] if e not in taken]


def claims_of(session: Session, rationale_id: int) -> list[Claim]:
    return list(session.execute(select(Claim).where(Claim.rationale_id == rationale_id)
                                .order_by(Claim.position)).scalars())


def _rows(rationale_id: int, format: str, text: str, steps: list | None) -> list[dict]:
    now = utcnow()
    return [{"rationale_id": rationale_id, "created_at": now, **claim}
            for claim in split(format, text or "", steps)]


@event.listens_for(Session, "after_flush")
def _claims_for_new_rationales(session: Session, _context) -> None:
    """Every rationale flushed for the first time gets its claims in the same
    transaction."""
    rows = [row for obj in session.new if isinstance(obj, Rationale) and obj.id is not None
            for row in _rows(obj.id, obj.format, obj.text, obj.steps)]
    if rows:
        session.connection().execute(insert(Claim.__table__), rows)


def backfill(session: Session, batch: int = 2000) -> int:
    """Claims for every rationale that has none (bulk inserts, databases from before
    claims); committed. Returns how many rationales got claims."""
    done, after = 0, 0
    while True:
        missing = session.execute(
            select(Rationale.id, Rationale.format, Rationale.text, Rationale.steps)
            .where(Rationale.id > after,
                   ~select(Claim.id).where(Claim.rationale_id == Rationale.id).exists())
            .order_by(Rationale.id).limit(batch)).all()
        rows = [row for r in missing for row in _rows(r.id, r.format, r.text, r.steps)]
        if rows:
            session.execute(insert(Claim.__table__), rows)
        session.commit()
        done += len({row["rationale_id"] for row in rows})
        if len(missing) < batch:
            return done
        after = missing[-1].id
