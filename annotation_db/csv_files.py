"""CSV files that people hand over, read whole: the header and every row with its line.

Such a file can hold bytes that are not UTF-8, a field longer than the csv module's
limit (131,072 characters) or a quote left open. Each becomes a :class:`CsvFileError`
naming the line and the rule, which the reader reports like any other bad line
(``agreement report --ratings-csv``, ``cohort import --format synthea``) instead of
crashing with a traceback.
"""

import csv
from pathlib import Path

from annotation_db.errors import UserError


class CsvFileError(UserError):
    """A CSV file whose text cannot be read; ``line`` says where (0: the whole file)."""

    def __init__(self, line: int, reason: str):
        self.line, self.reason = line, reason
        super().__init__(f"line {line}: {reason}" if line else reason)


def read_csv(path: str | Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and the rows (line number, values by column) of a UTF-8 CSV file.

    A row's number is the line it ends on (the header is line 1). Raises ``OSError``
    when the file cannot be opened and :class:`CsvFileError` for unreadable content.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            header = list(reader.fieldnames or [])
            rows = [(reader.line_num, row) for row in reader]
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:  # DictReader's own line_num lags behind on an error
            raise CsvFileError(reader.reader.line_num, _csv_reason(exc)) from None
    return header, rows


def _not_utf8(path: Path) -> CsvFileError:
    """The first line that is not UTF-8 (a newline byte never occurs inside a UTF-8
    character, so lines can be decoded one by one)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return CsvFileError(number, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                            f"position {exc.start + 1}); save the file as UTF-8")
    return CsvFileError(0, "not UTF-8 text; save the file as UTF-8")


def _csv_reason(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (f"a field is longer than {csv.field_size_limit():,} characters, the most a "
                "CSV field may hold")
    return f"not valid CSV ({exc})"
