"""Pieces of CSV files parsed so that no record is lost: malformed records become rows with a
line and a reason.

`raymlp.data.ranges` cuts a file into byte ranges of whole lines; each is parsed here. Fast path:
pyarrow's reader (when records span lines, a scan finds the line each starts on). When pyarrow
refuses a piece (wrong field count, bad quoting, bytes that are not UTF-8), a second pass with
Python's csv module (strict, UTF-8 with surrogateescape) classifies every record by the line it
starts on, and the good records are parsed again by pyarrow, so their types are what the fast
path would have given. (That pass cannot tell `,,` from `,"",`: Python's csv module reads both
as ''; both become null there, while the fast path keeps "" as the empty string.)
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from raymlp.errors import WorkFailed

SOURCE_COLUMN = "_raymlp_source"
ROW_COLUMN = "_raymlp_row"
REASON_COLUMN = "_raymlp_reason"
TEXT_COLUMN = "_raymlp_text"
RAW_COLUMN = "_raymlp_raw"  # a malformed record's bytes exactly as the file holds them (no line end)


@dataclass
class ParsedCsv:
    """Good records as a typed table, the line each starts on, and the malformed ones."""

    table: pa.Table
    lines: np.ndarray
    malformed: pa.Table | None
    quotes: int = 0  # quote characters in the piece (a cut is inside quotes after an odd count)
    one_record_per_line: bool = False  # pyarrow read every line as one record, as PostgreSQL's COPY reads CSV


def _parse_options(delimiter: str, newlines_in_values: bool):
    from pyarrow import csv as pacsv

    return pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=newlines_in_values)


def _convert_options(
    column_types: dict[str, pa.DataType] | None = None, booleans: tuple[list[str], list[str]] | None = None
):
    """Values read as PostgreSQL's COPY reads CSV: an unquoted empty field is null, "" is '', and
    text such as NA, null or n/a is text (pyarrow's default would make those null)."""
    from pyarrow import csv as pacsv

    spellings = {} if booleans is None else {"true_values": booleans[0], "false_values": booleans[1]}
    return pacsv.ConvertOptions(
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        column_types=column_types or None,
        **spellings,
    )


def read_header(path: str | Path, delimiter: str) -> tuple[list[str], int]:
    """The column names on a CSV file's first line, and the byte offset where its records start."""
    from raymlp.storage import files

    first = b""
    with files.open_input(path) as handle:
        while b"\n" not in first:
            piece = handle.read(1 << 16)
            if not piece:
                break
            first += piece
    first = first[: first.find(b"\n") + 1] if b"\n" in first else first
    if not first.strip():
        raise WorkFailed(f"{path}: the file is empty (a CSV source needs a header line)")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise WorkFailed(f"{path}:1: the header line is not valid UTF-8") from None
    try:
        names = next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter, strict=True))
    except csv.Error as error:
        raise WorkFailed(f"{path}:1: the header line is not valid CSV: {error}") from None
    if len(set(names)) != len(names) or not all(names):
        raise WorkFailed(f"{path}:1: column names must be distinct and not empty: {names}")
    return names, len(first)


def physical_lines(data: bytes) -> int:
    """Lines in a piece of a file (a last line without a newline counts)."""
    newlines = int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")))  # 2x bytes.count
    return newlines + (1 if data and not data.endswith(b"\n") else 0)


def _is_conversion_error(error: Exception) -> bool:
    return "conversion error" in str(error)


def _read(
    data: bytes,
    names: list[str],
    delimiter: str,
    column_types: dict[str, pa.DataType] | None,
    newlines_in_values: bool,
    booleans: tuple[list[str], list[str]] | None = None,
) -> pa.Table:
    """pyarrow's parse of `data`; with no types, inferred over all of it (one block), not the first MB."""
    from pyarrow import csv as pacsv

    read_options = pacsv.ReadOptions(
        column_names=names,
        use_threads=False,
        block_size=min(max(len(data) + 1, 1 << 20), 1 << 30) if column_types is None else 1 << 24,
    )
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=read_options,
        parse_options=_parse_options(delimiter, newlines_in_values),
        convert_options=_convert_options(column_types, booleans),
    )


def _read_typed_else_inferred(
    data: bytes,
    names: list[str],
    delimiter: str,
    column_types: dict[str, pa.DataType] | None,
    newlines_in_values: bool,
    booleans: tuple[list[str], list[str]] | None = None,
) -> pa.Table:
    if column_types:
        try:
            return _read(data, names, delimiter, column_types, newlines_in_values, booleans)
        except pa.ArrowInvalid as error:
            if not _is_conversion_error(error):
                raise
    return _read(data, names, delimiter, None, newlines_in_values, booleans)


def parse_csv_range(
    data: bytes,
    names: list[str],
    delimiter: str,
    source: str,
    column_types: dict[str, pa.DataType] | None = None,
    booleans: tuple[list[str], list[str]] | None = None,
    scan: Scan | None = None,
) -> ParsedCsv:
    """Every record in `data` (whole lines of a CSV file after its header) as good rows or malformed ones.

    Lines are counted from 1 at the start of `data`. `column_types` are tried first; values that
    do not fit them make the types inferred from this piece instead (the caller unifies pieces).
    `scan` is `scan_csv(data, delimiter)` when the caller has made it already.
    """
    if not data.strip(b"\r\n"):  # a header and no records: zero rows, not pyarrow's "Empty CSV file"
        types = column_types or {}
        table = pa.table({name: pa.nulls(0, types.get(name, pa.null())) for name in names})
        return ParsedCsv(table=table, lines=np.arange(1, 1), malformed=None, one_record_per_line=True)
    scan = scan or scan_csv(data, delimiter)
    quotes = scan.quotes
    if scan.stray_quote:
        return replace(_careful_parse(data, names, delimiter, source, column_types), quotes=quotes)
    try:
        table = _read_typed_else_inferred(data, names, delimiter, column_types, quotes != 0, booleans)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return replace(_careful_parse(data, names, delimiter, source, column_types), quotes=quotes)
    if any(pa.types.is_binary(field.type) for field in table.schema):  # pyarrow's guess for bytes that are not UTF-8
        return replace(_careful_parse(data, names, delimiter, source, column_types), quotes=quotes)
    if scan.lines in (table.num_rows, -1):  # one line per record, or not counted (records numbered in order)
        return ParsedCsv(
            table=table,
            lines=np.arange(1, table.num_rows + 1),
            malformed=None,
            quotes=quotes,
            one_record_per_line=scan.lines == table.num_rows,
        )
    try:  # records span lines, or blank lines: find each start
        lines = _record_start_lines(data, delimiter)
    except csv.Error:  # pyarrow took in what strict CSV refuses (a quote never closed, say)
        lines = None
    if lines is not None and len(lines) == table.num_rows:
        return ParsedCsv(table=table, lines=lines, malformed=None, quotes=quotes)
    return replace(_careful_parse(data, names, delimiter, source, column_types), quotes=quotes)


@dataclass(frozen=True)
class Scan:
    """What one pass over a piece of CSV finds: its lines, its quote characters, and whether a
    quote stands between two other characters (`"a"b`, `ab"c`), which pyarrow reads leniently and
    strict CSV refuses or reads differently (so the careful pass decides)."""

    lines: int
    quotes: int
    stray_quote: bool


def scan_csv(data: bytes, delimiter: str) -> Scan:
    """One pass over `data` in 1 MiB blocks (the block stays in the CPU cache while it is examined)."""
    view = np.frombuffer(data, dtype=np.uint8)
    size = len(view)
    edges = np.zeros(256, dtype=bool)  # what may stand beside a quote: a field's edge or another quote
    edges[[ord(delimiter), ord("\n"), ord("\r"), ord('"')]] = True
    lines = quotes = 0
    stray = False
    for start in range(0, size, 1 << 20):
        block = view[start : start + (1 << 20)]
        lines += int(np.count_nonzero(block == ord("\n")))
        positions = np.flatnonzero(block == ord('"'))
        if stray or not len(positions):
            quotes += len(positions)
            continue
        quotes += len(positions)
        positions += start
        opens = edges[view[positions - 1]]  # the byte before (index -1 wraps: the first byte is fixed below)
        opens[0] |= positions[0] == 0
        middle = positions[~opens]
        if len(middle):
            after = middle + 1
            stray = not bool(np.all(edges[view[np.minimum(after, size - 1)]] | (after >= size)))
    return Scan(lines=lines + (1 if data and not data.endswith(b"\n") else 0), quotes=quotes, stray_quote=stray)


def _text(data: bytes) -> io.StringIO:
    return io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")


def _record_start_lines(data: bytes, delimiter: str) -> np.ndarray:
    starts: list[int] = []
    reader = csv.reader(_text(data), delimiter=delimiter, strict=True)
    previous_end = 0
    for record in reader:
        if record:
            starts.append(previous_end + 1)
        previous_end = reader.line_num
    return np.asarray(starts, dtype=np.int64)


def _careful_parse(
    data: bytes, names: list[str], delimiter: str, source: str, column_types: dict[str, pa.DataType] | None
) -> ParsedCsv:
    good_text = io.StringIO()
    writer = csv.writer(good_text, lineterminator="\n")
    lines: list[int] = []
    bad_lines: list[int] = []
    reasons: list[str] = []
    texts: list[str] = []
    raws: list[bytes] = []
    all_lines = _split_lines(data.decode("utf-8", "surrogateescape"))
    width, offset = len(names), 0
    reader = csv.reader(iter(all_lines), delimiter=delimiter, strict=True)
    previous_end = 0
    while True:
        start = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            bad_lines.append(start)
            texts.append(
                all_lines[start - 1].rstrip("\n").encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                if start <= len(all_lines)
                else ""
            )
            spans_lines = offset + reader.line_num > start
            end = start if spans_lines else offset + reader.line_num  # an open quote costs its first line only
            raws.append(_raw(all_lines[start - 1 : end]))
            if spans_lines or "unexpected end of data" in str(error):
                reasons.append("malformed CSV: a quoted field is never closed")
            else:
                reasons.append(f"malformed CSV: {error}")
            if spans_lines:
                # The bad record ran over several lines (an open quote): only its first line is
                # lost; reading resumes on the next one.
                offset = previous_end = start
                reader = csv.reader(iter(all_lines[offset:]), delimiter=delimiter, strict=True)
            else:
                previous_end = offset + reader.line_num
            continue
        previous_end = offset + reader.line_num
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
            raws.append(_raw(all_lines[start - 1 : previous_end]))
            texts.append(
                delimiter.join(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for value in record)
            )
            continue
        writer.writerow(record)
        lines.append(start)
    table = _read_typed_else_inferred(good_text.getvalue().encode("utf-8"), names, ",", column_types, True)
    return ParsedCsv(
        table=table,
        lines=np.asarray(lines, dtype=np.int64),
        malformed=malformed_records(source, bad_lines, reasons, texts, raws),
    )


def _raw(lines: list[str]) -> bytes:
    """A record's lines as the file's bytes, without the line end after the last."""
    data = "".join(lines).encode("utf-8", "surrogateescape")
    return data.removesuffix(b"\n").removesuffix(b"\r") if data.endswith(b"\n") else data


def malformed_records(
    source: str, lines: list[int], reasons: list[str], texts: list[str], raws: list[bytes]
) -> pa.Table | None:
    """Quarantine rows for records that could not be parsed: file, line, reason, the text as read
    (bytes that are not UTF-8 shown as U+FFFD) and the record's bytes exactly."""
    if not lines:
        return None
    return pa.table(
        {
            SOURCE_COLUMN: pa.array([source] * len(lines), pa.string()),
            ROW_COLUMN: pa.array(lines, pa.int64()),
            REASON_COLUMN: pa.array(reasons, pa.string()),
            TEXT_COLUMN: pa.array(texts, pa.string()),
            RAW_COLUMN: pa.array(raws, pa.binary()),
        }
    )


def _split_lines(text: str) -> list[str]:
    """Lines ending in their newline (only \\n ends a line; a \\r stays inside it)."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    return lines + [pieces[-1]] if pieces[-1] else lines


def _has_bad_bytes(value: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in value)
