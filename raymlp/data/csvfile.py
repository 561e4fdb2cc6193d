"""CSV files read so that no record is lost: malformed records become rows with a line and a reason.

Fast path: pyarrow's multi-threaded reader (when records span lines, a scan finds the line each
starts on). When pyarrow refuses the file (wrong field count, bad quoting, bytes that are not
UTF-8), a second pass with Python's
csv module (strict, UTF-8 with surrogateescape) classifies every record by the line it starts
on, and the good records are parsed again by pyarrow, so their types are what the fast path
would have given. (That pass cannot tell `,,` from `,"",`: Python's csv module reads both as
''; both become null there, while the fast path keeps "" as the empty string.)
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from raymlp.errors import WorkFailed

SOURCE_COLUMN = "_raymlp_source"
ROW_COLUMN = "_raymlp_row"
REASON_COLUMN = "_raymlp_reason"
TEXT_COLUMN = "_raymlp_text"
_CHUNK = 8 * 1024 * 1024


@dataclass
class ParsedCsv:
    """Good records as a typed table, the line each starts on, and the malformed ones."""

    table: pa.Table
    lines: np.ndarray
    malformed: pa.Table | None


def _parse_options(delimiter: str, newlines_in_values: bool):
    from pyarrow import csv as pacsv

    return pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=newlines_in_values)


def _convert_options():
    """Values read as PostgreSQL's COPY reads CSV: an unquoted empty field is null, "" is ''."""
    from pyarrow import csv as pacsv

    return pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)


def _physical_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def read_csv_file(path: Path, delimiter: str = ",") -> ParsedCsv:
    """Every record of a CSV file with a header line, as good rows or malformed ones."""
    from pyarrow import csv as pacsv

    try:
        table = pacsv.read_csv(path, parse_options=_parse_options(delimiter, True),
                               convert_options=_convert_options())
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return _careful_read(path, delimiter)
    if _physical_lines(path) - 1 == table.num_rows:  # one line per record: row i is on line i + 2
        return ParsedCsv(table=table, lines=np.arange(2, table.num_rows + 2), malformed=None)
    lines = _record_start_lines(path, delimiter)  # records span lines: find where each starts
    if len(lines) == table.num_rows:
        return ParsedCsv(table=table, lines=lines, malformed=None)
    return _careful_read(path, delimiter)


def _record_start_lines(path: Path, delimiter: str) -> np.ndarray:
    starts: list[int] = []
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        previous_end = reader.line_num
        for record in reader:
            if record:
                starts.append(previous_end + 1)
            previous_end = reader.line_num
    return np.asarray(starts, dtype=np.int64)


def _careful_read(path: Path, delimiter: str) -> ParsedCsv:
    from pyarrow import csv as pacsv

    good_text = io.StringIO()
    writer = csv.writer(good_text, lineterminator="\n")
    lines: list[int] = []
    bad_lines: list[int] = []
    reasons: list[str] = []
    texts: list[str] = []
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise WorkFailed(f"{path}: the file is empty (a CSV source needs a header line)") from None
        except csv.Error as error:
            raise WorkFailed(f"{path}:1: the header line is not valid CSV: {error}") from None
        if any(_has_bad_bytes(name) for name in header):
            raise WorkFailed(f"{path}:1: the header line is not valid UTF-8")
        writer.writerow(header)
        width, previous_end = len(header), reader.line_num
        while True:
            start = previous_end + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                previous_end = reader.line_num
                bad_lines.append(start)
                reasons.append(f"malformed CSV: {error}")
                texts.append("")
                continue
            previous_end = reader.line_num
            if not record:  # a blank line holds no record
                continue
            reason = None
            if len(record) != width:
                reason = f"expected {width} fields, found {len(record)}"
            elif any(_has_bad_bytes(value) for value in record):
                reason = "not valid UTF-8"
            if reason:
                bad_lines.append(start)
                reasons.append(reason)
                texts.append(delimiter.join(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                                            for value in record))
                continue
            writer.writerow(record)
            lines.append(start)
    table = pacsv.read_csv(io.BytesIO(good_text.getvalue().encode("utf-8")),
                           parse_options=_parse_options(",", True), convert_options=_convert_options())
    malformed = None
    if bad_lines:
        malformed = pa.table({
            SOURCE_COLUMN: pa.array([str(path)] * len(bad_lines), pa.string()),
            ROW_COLUMN: pa.array(bad_lines, pa.int64()),
            REASON_COLUMN: pa.array(reasons, pa.string()),
            TEXT_COLUMN: pa.array(texts, pa.string()),
        })
    return ParsedCsv(table=table, lines=np.asarray(lines, dtype=np.int64), malformed=malformed)


def _has_bad_bytes(value: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in value)
