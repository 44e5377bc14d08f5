"""Render a patient record for people (chronological text) and for prompts (compact, budgeted).

Both renderings keep every shown item's evidence id, so a rationale's citations can
be traced back to the record:

    [E7] 2014-03-02 · Diagnosis · Essential (primary) hypertension (I10)
    E7 2014-03-02 Dx I10 Essential (primary) hypertension
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from annotation_db.errors import UserError
from annotation_db.records import KIND_LABEL

COMPACT_KIND = {
    "demographic": "Demo", "genotype": "Gene", "family_history": "FamHx", "diagnosis": "Dx",
    "medication": "Rx", "measurement": "Obs", "lifestyle": "Life", "symptom": "Sx",
}
# Dropped first when a compact rendering is over budget (oldest first within a kind).
DROP_ORDER = ("measurement", "medication", "lifestyle", "symptom", "diagnosis")


def _iso(value) -> str:
    return value if isinstance(value, str) else value.isoformat()


def _code_suffix(item: dict) -> str:
    code, system = item.get("code"), item.get("code_system")
    if not code or system in ("LOINC", "genotype"):
        return ""
    return f" ({code})" if system in ("ICD-10", None) else f" ({system} {code})"


def item_line(item: dict) -> str:
    """One clinician-readable line: ``[E7] 2014-03-02 · Diagnosis · Text (CODE)``."""
    date = f"{_iso(item['date'])} · " if item.get("date") else ""
    return f"[{item['id']}] {date}{KIND_LABEL[item['kind']]} · {item['description']}" + (
        _code_suffix(item)
    )


def header(record: dict) -> str:
    sex = {"F": "female", "M": "male"}[record["sex"]]
    return (f"Patient {record['external_id']} · {sex} · index date {_iso(record['index_date'])}")


def render_text(record: dict) -> str:
    """The full history, oldest first, one evidence item per line."""
    return "\n".join([header(record), *(item_line(item) for item in record["items"])])


def compact_line(item: dict) -> str:
    date = f" {_iso(item['date'])}" if item.get("date") else ""
    code = f" {item['code']}" if item.get("code") and item.get("code_system") not in (
        "LOINC", "genotype") else ""
    return f"{item['id']}{date} {COMPACT_KIND[item['kind']]}{code} {item['description']}"


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 3.5 characters per token for this kind of text).

    For display only (``cohort show``); prompts count with the model's tokenizer
    (:func:`tokenizer_counter`)."""
    return max(1, round(len(text) / 3.5))


def tokenizer_counter(tokenizer) -> Callable[[str], int]:
    """Count tokens as ``tokenizer`` encodes the text (no special tokens)."""
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


class HistoryBudgetError(UserError):
    """A history budget below what the rendering always keeps; the message names the floor."""


KEPT_KINDS = frozenset({"demographic", "genotype", "family_history"})
_DATED_LINE = re.compile(r"^E\d+ (\d{4}-\d{2}-\d{2}) (\w+)")
_OMITTED_LINE = re.compile(r"^\((\d+) older items omitted\)$")
_DROPPABLE_TAGS = frozenset(COMPACT_KIND[k] for k in COMPACT_KIND if k not in KEPT_KINDS)


@dataclass(frozen=True)
class CompactHistory:
    text: str
    shown_ids: list[str]
    omitted_ids: list[str]
    tokens: int


def render_compact(
    record: dict,
    budget_tokens: int | None = None,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> CompactHistory:
    """The history as short lines that fit ``budget_tokens``, keeping evidence ids.

    Over budget, the oldest measurements go first, then the oldest medications,
    lifestyle items, symptoms and diagnoses; a closing line says how many were left out.
    Genotype, family history and demographics are always kept, so a budget below
    what they (and the header) need is a :class:`HistoryBudgetError` naming that floor.
    """
    items = list(record["items"])
    lines = {item["id"]: compact_line(item) for item in items}
    head = f"{record['sex']}, index date {_iso(record['index_date'])}"
    kept = [item["id"] for item in items]
    omitted: list[str] = []

    def assemble() -> str:
        body = [head, *(lines[i] for i in kept)]
        if omitted:
            body.append(f"({len(omitted)} older items omitted)")
        return "\n".join(body)

    text = assemble()
    if budget_tokens is None or count_tokens(text) <= budget_tokens:
        return CompactHistory(text, kept, omitted, count_tokens(text))
    droppable = [item for kind in DROP_ORDER for item in items if item["kind"] == kind]
    # Sum line sizes instead of re-counting the whole text after every drop.
    total = count_tokens(text)
    for item in droppable:
        if total <= budget_tokens:
            break
        kept.remove(item["id"])
        omitted.append(item["id"])
        total -= count_tokens(lines[item["id"]] + "\n")
    text = assemble()
    while count_tokens(text) > budget_tokens and droppable[len(omitted):]:
        item = droppable[len(omitted)]
        kept.remove(item["id"])
        omitted.append(item["id"])
        text = assemble()
    tokens = count_tokens(text)
    if tokens > budget_tokens:
        raise HistoryBudgetError(
            f"history budget {budget_tokens} is below the rendering's floor of {tokens} tokens "
            f"for patient {record.get('external_id', '?')} (header, demographics, genotype and "
            "family history are always shown); raise the budget to at least that")
    return CompactHistory(text, kept, sorted(omitted, key=lambda i: int(i[1:])), tokens)


def drop_oldest_lines(history: str, fits: Callable[[str], bool]) -> tuple[str, int]:
    """``history`` (a compact rendering) with whole dated lines removed until ``fits``.

    The oldest dated item goes first (ties: the lower evidence id); the header and
    the demographic, genotype and family-history lines are never removed, and the
    "(N older items omitted)" line is kept up to date. Returns the text and the
    number of lines removed; a :class:`HistoryBudgetError` if nothing removable is left.
    """
    if fits(history):
        return history, 0
    lines = history.split("\n")
    already = 0
    if lines and (m := _OMITTED_LINE.match(lines[-1])):
        already = int(m.group(1))
        lines = lines[:-1]
    order = []
    for index, line in enumerate(lines[1:], start=1):  # line 0 is the header
        m = _DATED_LINE.match(line)
        if m and m.group(2) in _DROPPABLE_TAGS:
            order.append((m.group(1), int(line[1:line.index(" ")]), index))
    order.sort()
    removed: set[int] = set()

    def assemble() -> str:
        body = [line for i, line in enumerate(lines) if i not in removed]
        total = already + len(removed)
        return "\n".join(body + ([f"({total} older items omitted)"] if total else []))

    for _, _, index in order:
        removed.add(index)
        text = assemble()
        if fits(text):
            return text, len(removed)
    raise HistoryBudgetError("the prompt does not fit even with every dated history line "
                             "removed; raise max_length or shorten the fixed prompt")
