"""Row-level data errors: every bad cell is named by row, column and file; none is dropped silently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional


@dataclass(frozen=True)
class RowError:
    row: int  # position in the manifest (0-based data row)
    column: str
    reason: str
    file: Optional[str] = None

    def __str__(self) -> str:
        where = f"row {self.row}, column '{self.column}'"
        if self.file:
            where += f", file '{self.file}'"
        return f"{where}: {self.reason}"


TRAIN_HINT = ("Fix them, or set data.on_error: skip to skip these rows (on the command line: data.on_error=skip), "
              "or missing to keep rows whose image or audio file cannot be read with that modality absent "
              "(either way they are listed in skipped.csv).")
PREDICT_HINT = ("Fix them, or predict with --on-error skip (on_error='skip' in Python) to leave these rows out, "
                "or missing to keep rows whose image or audio file cannot be read with that modality absent "
                "(either way they are listed beside the predictions). File paths resolve against the "
                "manifest's folder, or the folder --root names.")


class DataError(ValueError):
    """Raised when the data has bad rows and `data.on_error` is `raise`; `hint` says how to go on."""

    def __init__(self, errors: list[RowError], source: str = "manifest", hint: str = TRAIN_HINT):
        self.errors, self.source, self.hint = errors, source, hint
        shown = "\n  ".join(str(e) for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} bad value(s) in {source} (data rows counted from 0, as "
                         f"pandas counts them: a CSV's row 0 is the line after its header):\n  {shown}{more}\n{hint}")

    def __reduce__(self):  # pickled whole (a Ray worker's error reaches the driver as itself)
        return type(self), (self.errors, self.source, self.hint)


class ErrorLog:
    """Collects RowErrors; `resolve` raises or returns the rows to skip, by policy: `raise`, `skip`
    (a row with any bad value is left out), or `missing` (a bad cell of a column in `absent_ok`, the
    file columns, leaves only that modality absent for the row; other bad values skip the row)."""

    def __init__(self, policy: str, source: str = "manifest", absent_ok: Iterable[str] = (), hint: str = TRAIN_HINT):
        if policy not in ("raise", "skip", "missing"):
            raise ValueError(f"on_error must be raise, skip or missing, not {policy!r}")
        self.policy = policy
        self.source = source
        self.hint = hint
        self.absent_ok = set(absent_ok) if policy == "missing" else set()
        self.errors: list[RowError] = []

    def add(self, row: int, column: str, reason: str, file: Optional[str] = None) -> None:
        self.errors.append(RowError(int(row), column, reason, file))

    def extend(self, errors: Iterable[RowError]) -> None:
        self.errors.extend(errors)

    def bad_rows(self) -> set[int]:
        """Rows that are left out: every row with an error, but a cell `missing` keeps absent."""
        return {e.row for e in self.errors if e.column not in self.absent_ok}

    def cells_absent(self) -> int:
        """Bad cells whose rows were kept with the modality absent (data.on_error: missing)."""
        bad = self.bad_rows()
        return sum(e.row not in bad for e in self.errors)

    def shifted(self, offset: int, n: int) -> "ShiftedLog":
        """This log as a chunk of `n` rows starting at manifest row `offset` sees it."""
        return ShiftedLog(self, offset, n)

    def resolve(self) -> set[int]:
        """Raise on errors under `raise`; under `skip` return the rows to drop."""
        if self.errors and self.policy == "raise":
            raise DataError(sorted(self.errors, key=lambda e: (e.row, e.column)), self.source, self.hint)
        return self.bad_rows()

    def table(self) -> list[list]:
        """One line per bad value (a row may have several), with a header line; `action` says whether
        its row was skipped or kept with the modality absent (data.on_error: missing)."""
        bad = self.bad_rows()
        return [["row", "column", "file", "reason", "action"]] + [
            [e.row, e.column, e.file or "", e.reason, "row skipped" if e.row in bad else "modality absent"]
            for e in sorted(self.errors, key=lambda e: (e.row, e.column))]

    def csv(self) -> str:
        """`table` as CSV text (a run's skipped.csv; the listing beside `mmfit predict`'s output)."""
        import csv
        import io

        buf = io.StringIO()
        csv.writer(buf).writerows(self.table())
        return buf.getvalue()


class ShiftedLog:
    """Chunk-local row numbers in, manifest row numbers recorded (see ErrorLog.shifted)."""

    def __init__(self, log: ErrorLog, offset: int, n: int):
        self.log, self.offset, self.n = log, offset, n

    def add(self, row: int, column: str, reason: str, file: Optional[str] = None) -> None:
        self.log.add(int(row) + self.offset, column, reason, file)

    def bad_rows(self) -> set[int]:
        return {r - self.offset for r in self.log.bad_rows() if self.offset <= r < self.offset + self.n}

