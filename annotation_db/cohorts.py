"""CRUD for cohorts, patients and evidence items.

Storing a cohort is one transaction: either every patient and item is written, or
nothing is (a duplicate name, a bad row or an interrupted import leave no trace).
Rows are inserted in bulk through SQLAlchemy Core: 100k patients with 2.6M items
take seconds, where the ORM's unit of work would take minutes.
"""

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.errors import UserError
from annotation_db.models import Cohort, EvidenceItem, Patient

BATCH = 5_000


class CohortError(UserError):
    """A cohort that cannot be stored or found; the message is one line."""


def _iso(value):
    return value.isoformat() if isinstance(value, dt.date) else value


def _age(birth, day) -> int:
    birth, day = (dt.date.fromisoformat(v) if isinstance(v, str) else v for v in (birth, day))
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def history_json(record: dict) -> dict:
    """Patient-level facts of a record. Its dated items are stored once, as evidence_item
    rows (the source of truth that citations point at), and joined back by
    :func:`iter_records` and :func:`patient_record`."""
    return {
        "external_id": record["external_id"],
        "sex": record["sex"],
        "birth_date": _iso(record["birth_date"]),
        "index_date": _iso(record["index_date"]),
        "item_count": len(record["items"]),
    }


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_or_null(value) -> str | None:
    return None if value is None else _dumps(value)


# A batch of rows in database form: (patient rows, evidence item rows).
RowBatch = tuple[list[tuple], list[tuple]]


def prepare_rows(
    records: list[dict],
    *,
    cohort_id: int,
    first_patient_id: int,
    render: Callable[[dict], str],
) -> RowBatch:
    """Turn records into insert-ready tuples (ISO dates, JSON text).

    Pure and picklable, so worker processes can prepare batches while the parent writes.
    """
    patient_rows, item_rows = [], []
    for offset, r in enumerate(records):
        patient_id = first_patient_id + offset
        patient_rows.append((
            patient_id, cohort_id, r["external_id"], r.get("split") or "train",
            bool(r["label"]), _iso(r["index_date"]), r["sex"], _iso(r["birth_date"]),
            _age(r["birth_date"], r["index_date"]), float(r.get("weight", 1.0)),
            _dumps(history_json(r)), render(r), _json_or_null(r.get("outcome")),
        ))
        item_rows.extend(
            (patient_id, item["id"], item["kind"], item.get("code"), item.get("code_system"),
             item["description"], _iso(item.get("date")), item.get("value"), item.get("unit"),
             item.get("role", "context"))
            for item in r["items"]
        )
    return patient_rows, item_rows


def in_memory_batches(records: list[dict], render: Callable[[dict], str], size: int = BATCH):
    """A ``batches`` callback for :func:`store_cohort` over records already in memory."""

    def batches(cohort_id: int, first_patient_id: int) -> Iterator[RowBatch]:
        for start in range(0, len(records), size):
            yield prepare_rows(records[start:start + size], cohort_id=cohort_id,
                               first_patient_id=first_patient_id + start, render=render)

    return batches


def store_cohort(
    engine: Engine,
    *,
    name: str,
    source: str,
    seed: int | None,
    config: dict,
    sampling: dict | None,
    batches: Callable[[int, int], Iterable[RowBatch]],
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write a cohort and all its patients in one transaction; return the cohort id.

    ``batches(cohort_id, first_patient_id)`` yields row batches whose patient ids run
    consecutively from ``first_patient_id``. Ids are allocated here, inside the
    transaction that holds the write lock (SQLite serialises writers; on PostgreSQL
    the patient table is locked), so no one else can take them meanwhile.
    """
    with engine.begin() as conn:
        if conn.execute(select(Cohort.id).where(Cohort.name == name)).first():
            raise CohortError(f"a cohort named {name!r} already exists; choose another --name")
        cohort_id = conn.execute(
            insert(Cohort.__table__).values(
                name=name, source=source, seed=seed, config=config, sampling=sampling,
                created_at=dt.datetime.now(dt.UTC),
            )
        ).inserted_primary_key[0]
        writer = _BulkWriter(conn)
        next_id = (conn.execute(select(func.max(Patient.id))).scalar() or 0) + 1
        for patient_rows, item_rows in batches(cohort_id, next_id):
            writer.write("patient", PATIENT_COLUMNS, patient_rows)
            writer.write("evidence_item", ITEM_COLUMNS, item_rows)
            if on_progress:
                on_progress(len(patient_rows))
        writer.finish()
    return cohort_id


PATIENT_COLUMNS = (
    "id", "cohort_id", "external_id", "split", "label", "index_date", "sex", "birth_date",
    "age_at_index", "weight", "history", "rendered_text", "outcome",
)
ITEM_COLUMNS = (
    "patient_id", "evidence_id", "kind", "code", "code_system", "description", "date",
    "value", "unit", "role",
)


class _BulkWriter:
    """Insert plain tuples with the driver's fastest path: executemany on SQLite, COPY on
    PostgreSQL. Values are already in database form (ISO dates, JSON text)."""

    def __init__(self, conn):
        self.conn = conn
        self.dialect = conn.dialect.name
        self.cursor = conn.connection.driver_connection.cursor()
        if self.dialect == "postgresql":
            # Ids are allocated as max + 1: keep concurrent writers out until commit.
            self.cursor.execute("LOCK TABLE patient IN EXCLUSIVE MODE")
        else:
            # A large page cache keeps index maintenance in memory during bulk inserts.
            self.cursor.execute("PRAGMA cache_size = -262144")  # KiB: 256 MiB

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            with self.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            self.cursor.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )

    def finish(self) -> None:
        if self.dialect == "postgresql":
            # Explicit ids were written; move the sequence past them.
            self.cursor.execute(
                "SELECT setval(pg_get_serial_sequence('patient', 'id'), "
                "(SELECT COALESCE(MAX(id), 1) FROM patient))"
            )
        self.cursor.close()


def get_cohort(session: Session, name: str) -> Cohort:
    cohort = session.execute(select(Cohort).where(Cohort.name == name)).scalars().first()
    if cohort is None:
        known = session.execute(select(Cohort.name).order_by(Cohort.id)).scalars().all()
        hint = f"; known cohorts: {', '.join(known)}" if known else "; none exist yet"
        raise CohortError(f"no cohort named {name!r}{hint}")
    return cohort


def latest_cohort(session: Session) -> Cohort:
    cohort = session.execute(select(Cohort).order_by(Cohort.id.desc())).scalars().first()
    if cohort is None:
        raise CohortError("the database has no cohort yet; run rationale-audit cohort generate")
    return cohort


def cohort_summary(session: Session, cohort_id: int) -> dict:
    rows = session.execute(
        select(Patient.split, Patient.label, func.count())
        .where(Patient.cohort_id == cohort_id)
        .group_by(Patient.split, Patient.label)
    ).all()
    summary: dict = {}
    for split, label, count in rows:
        summary.setdefault(split, {"patients": 0, "cases": 0})
        summary[split]["patients"] += count
        summary[split]["cases"] += count if label else 0
    return summary


def get_patient(session: Session, cohort_id: int, external_id: str) -> Patient:
    patient = session.execute(
        select(Patient).where(Patient.cohort_id == cohort_id, Patient.external_id == external_id)
    ).scalars().first()
    if patient is None:
        raise CohortError(f"no patient {external_id!r} in this cohort")
    return patient


ITEM_FIELDS = ("id", "kind", "date", "code", "code_system", "description", "value", "unit",
               "role")


def _item(row: EvidenceItem) -> dict:
    return {
        "id": row.evidence_id, "kind": row.kind, "date": _iso(row.date), "code": row.code,
        "code_system": row.code_system, "description": row.description, "value": row.value,
        "unit": row.unit, "role": row.role,
    }


def _record(patient: Patient, items: list[dict]) -> dict:
    history = patient.history
    return {
        "external_id": patient.external_id,
        "sex": patient.sex,
        "birth_date": history["birth_date"],
        "index_date": history["index_date"],
        "label": patient.label,
        "split": patient.split,
        "weight": patient.weight,
        "items": items,
        "outcome": patient.outcome,
    }


def patient_record(session: Session, patient: Patient) -> dict:
    """Rebuild the documented record format of a stored patient."""
    rows = session.execute(
        select(EvidenceItem).where(EvidenceItem.patient_id == patient.id).order_by(EvidenceItem.id)
    ).scalars().all()
    return _record(patient, [_item(row) for row in rows])


def iter_records(engine: Engine, cohort_id: int, batch: int = 2_000) -> Iterator[dict]:
    """Every patient of a cohort as a record, in insertion order."""
    last = 0
    while True:
        with Session(engine) as session:
            patients = session.execute(
                select(Patient).where(Patient.cohort_id == cohort_id, Patient.id > last)
                .order_by(Patient.id).limit(batch)
            ).scalars().all()
            if not patients:
                return
            last = patients[-1].id
            items: dict[int, list[dict]] = {p.id: [] for p in patients}
            rows = session.execute(
                select(EvidenceItem)
                .where(EvidenceItem.patient_id.between(patients[0].id, patients[-1].id))
                .order_by(EvidenceItem.id)
            ).scalars()
            for row in rows:
                if row.patient_id in items:
                    items[row.patient_id].append(_item(row))
            records = [_record(p, items[p.id]) for p in patients]
        yield from records
