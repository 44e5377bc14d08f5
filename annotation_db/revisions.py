"""The newest revision of each submitted annotation: the one every reader counts.

A clinician may revise a submitted rating; every revision is kept (audit), and every
reader — agreement, the annotator's history, adaptive assignment, the Admin figures —
uses the newest one. :func:`newest_only` joins a query on ``Annotation`` to it.
"""

from sqlalchemy import func, select

from annotation_db.models import Annotation


def newest_only(query):
    """``query`` (which selects from ``Annotation``) restricted to each assignment's newest
    annotation revision."""
    latest = (select(Annotation.assignment_id, func.max(Annotation.revision).label("rev"))
              .group_by(Annotation.assignment_id).subquery())
    return query.join(latest, (latest.c.assignment_id == Annotation.assignment_id)
                      & (latest.c.rev == Annotation.revision))
